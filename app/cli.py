"""The ``workerwire`` command.

``workerwire master -c FILE``
    run a master from a config file (see :mod:`workerwire_app.config`).
``workerwire worker --backend NAME --master ADDRESS --name N --password-file F --basedir DIR``
    run a worker that dials a master.
``workerwire exec [--backend NAME] [--json] -- CMD ...``
    run CMD through a master and a worker on loopback; exit with its status.
``workerwire status -c FILE [--json]``
    a running master's workers (through its control socket).
``workerwire run -c FILE --worker NAME [--builder B] [--timeout S] [--json] -- CMD ...``
    run CMD on a connected worker of a running master; exit with its status.
``workerwire disconnect|shutdown -c FILE NAME``
    close a worker's connection / tell it to shut down.
``workerwire backends``
    list the installed backends, each with a load check.
``workerwire conformance NAME [-- PYTEST ARGS]``
    run the conformance suite against an installed backend.

Exit status 2 means a usage or config mistake; the message says which.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import signal
import sys
from typing import Any, Sequence

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from workerwire import LinkOptions, backend_names, list_backends, load_backend
from workerwire.errors import AddressError, BackendLoadFailed, BackendNotFound
from workerwire.tls import add_client_options

from . import __version__
from .config import ConfigErrors, load_config
from .control import MAX_RUN_STDIN
from .control_client import run_command, status_command, worker_command
from .daemon import LOG_LEVELS, on_signal, run, setup_logging
from .events import EventLog
from .exec import DEFAULT_BACKEND, MAX_STDIN, ExecOptions, run_exec
from .master import Master
from .stdin import StdinTooLong, read_stdin, should_read
from .worker_daemon import PasswordSource, WorkerDaemon
from .worker_runtime import DEFAULT_LOST_LINK_GRACE, WorkerRuntime

__all__ = ["main", "build_parser"]

_log = Logger()

USAGE_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workerwire",
        description="A pluggable link between a CI master and its workers.",
    )
    parser.add_argument("--version", action="version", version=f"workerwire {__version__}")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    def logging_option(p: argparse.ArgumentParser, default: str) -> None:
        p.add_argument("--log-level", choices=list(LOG_LEVELS), default=default,
                       help=f"log to stderr at this level and above (default: {default})")

    m = sub.add_parser("master", help="run a master from a config file",
                       description="Run a master: listen on the configured protocols and accept the configured "
                                   "workers.  SIGHUP reloads the config; SIGTERM or SIGINT stops it.")
    m.add_argument("-c", "--config", required=True, metavar="FILE", help="the TOML config file")
    m.add_argument("--events", metavar="FILE",
                   help="append machine-readable events (JSON lines: connected, disconnected, job_finished, ...)")
    m.add_argument("--check", action="store_true",
                   help="only check the config file, then exit (0 if it is valid); password_env variables need "
                        "not be set (their names are checked) unless --check-secrets")
    m.add_argument("--check-secrets", action="store_true",
                   help="with --check: also check that every password_env variable is set and not empty")
    logging_option(m, "info")

    w = sub.add_parser("worker", help="run a worker that dials a master",
                       description="Run a worker: dial the master, log in, run the commands it sends.  "
                                   "Reconnects after any loss.  SIGTERM or SIGINT stops it.")
    w.add_argument("--backend", required=True, metavar="NAME", help="the backend the master listens with")
    w.add_argument("--master", required=True, metavar="ADDRESS",
                   help="the master's address for that backend, e.g. tcp:host=ci.example.org:port=9989")
    w.add_argument("--name", required=True, help="this worker's name, as in the master's config")
    pw = w.add_mutually_exclusive_group(required=True)
    pw.add_argument("--password", help="the password (visible to other local users; prefer --password-file)")
    pw.add_argument("--password-file", metavar="FILE",
                    help="a file holding the password; read again when a login is refused or the link drops")
    pw.add_argument("--password-env", metavar="VARIABLE",
                    help="an environment variable holding the password (removed from the environment once read)")
    w.add_argument("--basedir", required=True, metavar="DIR", help="the worker's base directory (created if missing)")
    w.add_argument("--keepalive-interval", type=_interval, metavar="S",
                   help=f"seconds between keepalives (default {LinkOptions().keepalive_interval:g}); false (or 0) "
                        "disables keepalive, as keepalive_interval = false does in the master's config")
    w.add_argument("--keepalive-timeout", type=_seconds, metavar="S",
                   help=f"seconds a silent master has before it is dead (default {LinkOptions().keepalive_timeout:g})")
    w.add_argument("--allow-absolute-paths", action="store_true",
                   help="let commands use paths outside the base directory")
    w.add_argument("--lost-link-grace", type=_seconds, default=DEFAULT_LOST_LINK_GRACE, metavar="S",
                   help="seconds commands keep running after the link is lost before they are interrupted "
                        f"(default {DEFAULT_LOST_LINK_GRACE:g})")
    tls = w.add_argument_group("TLS (with a tls:host=H:port=N master address; see docs/tls.md)")
    tls.add_argument("--ca-file", metavar="FILE",
                     help="PEM CA certificate(s) the master's certificate must be signed by "
                          "(default: the CAs this system trusts)")
    tls.add_argument("--client-cert", metavar="FILE", help="PEM client certificate, for a master that requires one")
    tls.add_argument("--client-key", metavar="FILE", help="PEM private key of --client-cert (unencrypted)")
    tls.add_argument("--insecure-no-verify", action="store_true",
                     help="do not verify the master's certificate or host name (anyone on the path can pose as "
                          "the master; logged as a warning on every connection)")
    logging_option(w, "info")

    e = sub.add_parser("exec", help="run one command through a loopback master and worker",
                       description="Start a master and a worker in this process, connected over the backend on "
                                   "loopback, run CMD on the worker in the current directory, stream its output, "
                                   "and exit with its exit status.")
    e.add_argument("--backend", default=DEFAULT_BACKEND, metavar="NAME",
                   help=f"the backend to carry the link (default: {DEFAULT_BACKEND})")
    e.add_argument("--json", action="store_true", help="print every update as a JSON line instead of the output")
    e.add_argument("--timeout", type=_seconds, metavar="S", help="kill the command after S seconds without output")
    e.add_argument("-n", "--no-stdin", action="store_true",
                   help="do not read stdin (by default, unless it is a terminal, stdin is read to its end, at most "
                        f"{MAX_STDIN // (1024 * 1024)} MiB, and given to the command)")
    logging_option(e, "warn")
    e.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD", help="the command and its arguments")

    st = sub.add_parser("status", help="show a running master's workers",
                        description="Ask a running master (through its control socket) for every configured "
                                    "worker: connected or not, backend, peer, TLS, since when, keepalive round "
                                    "trip, running commands.")
    st.add_argument("-c", "--config", required=True, metavar="FILE", help="the master's TOML config file")
    st.add_argument("--json", action="store_true", help="print the status as JSON")

    r = sub.add_parser("run", help="run a command on a connected worker of a running master",
                       description="Run CMD now on a worker connected to a running master, stream its output "
                                   "and exit with its exit status (the rules of `workerwire exec`).")
    r.add_argument("-c", "--config", required=True, metavar="FILE", help="the master's TOML config file")
    r.add_argument("--worker", required=True, metavar="NAME", help="the connected worker to run CMD on")
    r.add_argument("--builder", metavar="B", help="the worker's builder to run in (default: its first builder)")
    r.add_argument("--workdir", metavar="DIR", help="directory relative to the builder's (default: build)")
    r.add_argument("--timeout", type=_seconds, metavar="S", help="kill the command after S seconds without output")
    r.add_argument("--json", action="store_true", help="print every update as a JSON line instead of the output")
    r.add_argument("-n", "--no-stdin", action="store_true",
                   help="do not read stdin (by default, unless it is a terminal, stdin is read to its end, at most "
                        f"{MAX_RUN_STDIN // (1024 * 1024)} MiB, and given to the command)")
    r.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD", help="the command and its arguments")

    for what, text in (("disconnect", "close a worker's connection (it reconnects by itself)"),
                       ("shutdown", "tell a worker to shut down (it stops and does not reconnect)")):
        x = sub.add_parser(what, help=text, description=f"Ask a running master to {text}.")
        x.add_argument("-c", "--config", required=True, metavar="FILE", help="the master's TOML config file")
        x.add_argument("worker", metavar="NAME")

    b = sub.add_parser("backends", help="list the installed backends",
                       description="List every installed backend with its distribution and version, and check "
                                   "that it loads.")
    b.add_argument("--json", action="store_true", help="print a JSON array")

    c = sub.add_parser("conformance", help="run the conformance suite against a backend",
                       description="Run workerwire's conformance suite against an installed backend.")
    c.add_argument("backend", metavar="NAME")
    c.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="PYTEST_ARGS",
                   help="after --: arguments for pytest (e.g. -x -k keepalive)")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be >= 0")
    return value


def _interval(text: str) -> float:
    """Seconds, or ``false``/``0`` for none (0.0)."""
    if text.strip().lower() in ("false", "off", "no", "none"):
        return 0.0
    return _seconds(text)


def _strip_dashdash(args: list[str]) -> list[str]:
    return args[1:] if args and args[0] == "--" else args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``workerwire`` command; return its exit status."""
    args = build_parser().parse_args(argv)
    handler = {"master": cmd_master, "worker": cmd_worker, "exec": cmd_exec, "backends": cmd_backends,
               "conformance": cmd_conformance, "status": cmd_status, "run": cmd_run, "disconnect": cmd_worker_op,
               "shutdown": cmd_worker_op}[args.cmd]
    try:
        status = handler(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # Whoever read our output went away (`workerwire status --json | head`): stop
        # quietly, as a command killed by SIGPIPE would, instead of a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return status


# -- master ----------------------------------------------------------------------


def cmd_master(args: argparse.Namespace) -> int:
    if args.check_secrets and not args.check:
        print("workerwire master: --check-secrets goes with --check", file=sys.stderr)
        return USAGE_ERROR
    try:
        config = load_config(args.config, check_secrets=not args.check or args.check_secrets)
    except ConfigErrors as e:
        print(str(e), file=sys.stderr)
        return USAGE_ERROR
    if args.check:
        print(f"{args.config}: ok: {len(config.protocols)} protocol(s), {len(config.workers)} worker(s), "
              f"{len(config.jobs)} job(s)")
        return 0
    try:
        events = EventLog(args.events)
    except OSError as e:
        print(f"workerwire master: --events: cannot open {args.events!r}: {e.strerror or e}; valid: a file in an "
              "existing directory this user may write", file=sys.stderr)
        return USAGE_ERROR
    setup_logging(args.log_level)

    async def main(reactor: Any) -> int:
        master = Master(config, reactor, events)
        stop: Deferred[str] = Deferred()
        def stop_on(signum: int) -> None:
            if not stop.called:
                stop.callback(signal.Signals(signum).name)

        for signum in (signal.SIGTERM, signal.SIGINT):
            on_signal(reactor, signum, functools.partial(stop_on, signum))
        on_signal(reactor, signal.SIGHUP, lambda: ensureDeferred(master.reload()))
        try:
            await master.start()
        except ConfigErrors as e:
            print(str(e), file=sys.stderr)
            events.emit("start_failed", errors=[str(err) for err in e.errors])
            events.close()
            return USAGE_ERROR
        _log.info("master running (pid {pid}); SIGHUP reloads {path}", pid=os.getpid(), path=config.path)
        why = await stop
        _log.info("{why}: stopping", why=why)
        await master.stop()
        events.close()
        return 0

    return run(main)


# -- worker ------------------------------------------------------------------------


def _in_process(name: str) -> bool:
    try:
        return bool(load_backend(name).in_process)
    except (BackendNotFound, BackendLoadFailed):
        return True


def cmd_worker(args: argparse.Namespace) -> int:
    try:
        backend = load_backend(args.backend)
    except (BackendNotFound, BackendLoadFailed) as e:
        print(f"workerwire worker: --backend: {e}", file=sys.stderr)
        return USAGE_ERROR
    if backend.in_process:
        others = [n for n in backend_names() if n != backend.name and not _in_process(n)]
        print(f"workerwire worker: --backend: {backend.name!r} is an in-process backend and cannot reach a master "
              f"in another process; valid: a network backend ({', '.join(others) or 'none installed'})",
              file=sys.stderr)
        return USAGE_ERROR
    if args.insecure_no_verify and args.ca_file:
        print("workerwire worker: --insecure-no-verify and --ca-file contradict each other", file=sys.stderr)
        return USAGE_ERROR
    try:
        address = add_client_options(args.master, ca_file=args.ca_file, certificate=args.client_cert,
                                     private_key=args.client_key, verify=False if args.insecure_no_verify else None)
    except AddressError as e:
        print(f"workerwire worker: --master: {e}", file=sys.stderr)
        return USAGE_ERROR
    source = PasswordSource(args.password, args.password_file, args.password_env)
    try:
        secret = source.read()
    except ValueError as e:
        print(f"workerwire worker: {e}", file=sys.stderr)
        return USAGE_ERROR
    if args.password_env:
        # Commands and the worker info sent to the master see this environment: keep the password out of it.
        os.environ.pop(args.password_env, None)
        source = PasswordSource(value=secret)
    changes: dict[str, Any] = {}
    if args.keepalive_interval is not None:
        changes["keepalive_interval"] = args.keepalive_interval or None
    if args.keepalive_timeout is not None:
        if not args.keepalive_timeout:
            print("workerwire worker: --keepalive-timeout: must be > 0", file=sys.stderr)
            return USAGE_ERROR
        changes["keepalive_timeout"] = args.keepalive_timeout
    options = LinkOptions().with_(**changes)
    setup_logging(args.log_level)

    async def main(reactor: Any) -> int:
        stop: Deferred[str] = Deferred()

        def request_stop(why: str) -> None:
            if not stop.called:
                stop.callback(why)

        runtime = WorkerRuntime(args.basedir, reactor, args.allow_absolute_paths, args.lost_link_grace,
                                on_shutdown=lambda: request_stop("the master asked this worker to shut down"))
        try:
            daemon = WorkerDaemon(backend, address, args.name, source, runtime, options, reactor)
        except AddressError as e:
            print(f"workerwire worker: --master: {e}", file=sys.stderr)
            return USAGE_ERROR
        for signum in (signal.SIGTERM, signal.SIGINT):
            on_signal(reactor, signum, functools.partial(request_stop, signal.Signals(signum).name))
        daemon.start()
        why = await stop
        _log.info("{why}: stopping", why=why)
        await daemon.stop(f"the worker is stopping ({why})")
        return 0

    return run(main)


# -- exec ----------------------------------------------------------------------------


def cmd_exec(args: argparse.Namespace) -> int:
    command = _strip_dashdash(args.command)
    if not command:
        print("workerwire exec: no command given; usage: workerwire exec [--backend NAME] [--json] -- CMD ...",
              file=sys.stderr)
        return USAGE_ERROR
    setup_logging(args.log_level)
    opts = ExecOptions(command=command, backend=args.backend, json=args.json, timeout=args.timeout)
    wants_stdin = should_read(args.no_stdin)

    async def main(reactor: Any) -> int:
        if wants_stdin:
            try:
                opts.stdin = await read_stdin("workerwire exec", MAX_STDIN)
            except StdinTooLong as e:
                print(str(e), file=sys.stderr)
                return USAGE_ERROR
        return await run_exec(reactor, opts)

    return run(main)


# -- status / run / disconnect / shutdown (the control channel) --------------------------


def _control_socket(args: argparse.Namespace) -> str | None:
    """The control socket of the master configured in ``-c``; None after printing why not."""
    try:
        config = load_config(args.config, check_secrets=False)
    except ConfigErrors as e:
        print(str(e), file=sys.stderr)
        return None
    if config.settings.control_socket is None:
        print(f"workerwire {args.cmd}: {args.config}: master.control_socket is false: this master has no control "
              "channel; valid: remove the key (default: control.sock in the state directory) or give a path",
              file=sys.stderr)
        return None
    return config.settings.control_socket


def cmd_status(args: argparse.Namespace) -> int:
    path = _control_socket(args)
    if path is None:
        return USAGE_ERROR
    return run(lambda reactor: status_command(reactor, path, args.json))


def cmd_worker_op(args: argparse.Namespace) -> int:
    path = _control_socket(args)
    if path is None:
        return USAGE_ERROR
    return run(lambda reactor: worker_command(reactor, path, args.cmd, args.worker))


def cmd_run(args: argparse.Namespace) -> int:
    command = _strip_dashdash(args.command)
    if not command:
        print("workerwire run: no command given; usage: workerwire run -c FILE --worker NAME [--builder B] -- CMD ...",
              file=sys.stderr)
        return USAGE_ERROR
    path = _control_socket(args)
    if path is None:
        return USAGE_ERROR
    req: dict[str, Any] = {"request": "run", "worker": args.worker, "builder": args.builder,
                           "workdir": args.workdir, "timeout": args.timeout, "command": command}
    wants_stdin = should_read(args.no_stdin)

    async def main(reactor: Any) -> int:
        if wants_stdin:
            try:
                data = await read_stdin("workerwire run", MAX_RUN_STDIN)
            except StdinTooLong as e:
                print(str(e), file=sys.stderr)
                return USAGE_ERROR
            if data:
                req["stdin"] = base64.b64encode(data).decode("ascii")
        return await run_command(reactor, path, req, args.json)

    return run(main)


# -- backends -------------------------------------------------------------------------


def cmd_backends(args: argparse.Namespace) -> int:
    infos = list_backends()
    if args.json:
        print(json.dumps([info.__dict__ for info in infos], indent=2))
        return 0
    if not infos:
        print("no workerwire backends are installed")
        return 0
    rows = [("NAME", "DISTRIBUTION", "VERSION", "LOADS", "DESCRIPTION")]
    for info in infos:
        rows.append((info.name, info.distribution, info.version, "yes" if info.loads else "no",
                     info.description if info.loads else f"error: {info.error}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
    return 0


# -- conformance --------------------------------------------------------------------------


def cmd_conformance(args: argparse.Namespace) -> int:
    if args.backend not in backend_names():
        print(f"workerwire conformance: no workerwire backend named {args.backend!r}; installed: "
              f"{', '.join(backend_names()) or 'none'}", file=sys.stderr)
        return USAGE_ERROR
    from workerwire.conformance import missing_runner, run as run_suite

    why = missing_runner()
    if why is not None:
        print(f"workerwire conformance: {why}", file=sys.stderr)
        return USAGE_ERROR
    return int(run_suite(args.backend, _strip_dashdash(list(args.pytest_args))))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
