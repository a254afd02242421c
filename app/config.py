"""The master's config file: which backends listen where, which workers may log in.

The file is TOML (read with :mod:`tomllib`)::

    [master]                      # optional
    duplicate_ping_timeout = 10   # s an existing connection has to answer a ping
    state_dir = "state"           # the master's own files (default: "state" beside this file)
    control_socket = "control.sock"  # the control channel (UNIX socket, mode 0600), in state_dir
    metrics = "tcp:9100:interface=127.0.0.1"  # Prometheus /metrics (default: none)
    job_logs_kept = 100           # per-job output files kept in state_dir/jobs (oldest removed)

    [protocols.pb]                # one table per backend, by its registry name
    port = "tcp:9989"             # a port string the backend accepts
    keepalive_interval = 60       # s between pings (false: no keepalive)
    keepalive_timeout = 30        # s a silent peer has before it is dead
    max_message_size = 67108864   # bytes
    output_window = 4194304       # bytes of command output in flight (flow control)
    login_timeout = 30            # s
    max_unauthenticated = 256     # connections not logged in yet (and 64 per host:
                                  # max_unauthenticated_per_host); over it up to
                                  # max_waiting_logins = 1024 wait their turn; failed logins of a
                                  # host beyond failed_login_grace = 3 are answered after
                                  # failed_login_delay = 0.5 s, doubling to failed_login_max_delay = 10

    [[workers]]
    name = "w1"
    password = "..."              # or password_file = "w1.pw" / password_env = "W1_PW"
    protocols = ["pb"]            # optional: the protocols it may use (default: all)
    builders = ["smoke"]          # optional: builders set up when it attaches

    [[jobs]]                      # optional: run on workers each time they attach
    name = "smoke"
    command = ["make", "check"]   # argv list, or a string run by /bin/sh -c
    workers = ["w1"]              # default: every worker
    builder = "smoke"             # default: the job's name
    workdir = "build"             # relative to the builder's directory
    env = { CI = "1" }
    timeout = 1200                # s without output before the command is killed
    max_time = 3600               # s in total

:func:`load_config` checks everything it can without opening a port and
reports every mistake at once as :class:`ConfigErrors`, each naming the file,
the key, what is wrong and what would be valid.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from workerwire import Backend, LinkOptions, backend_names, load_backend
from workerwire.errors import AddressError, BackendLoadFailed, BackendNotFound

__all__ = [
    "ConfigError",
    "ConfigErrors",
    "ProtocolConfig",
    "WorkerConfig",
    "JobConfig",
    "MasterConfig",
    "load_config",
    "parse_config",
    "DEFAULT_DUPLICATE_PING_TIMEOUT",
    "DEFAULT_JOB_LOGS_KEPT",
    "MasterSettings",
]

DEFAULT_DUPLICATE_PING_TIMEOUT = 10.0

_TOP_KEYS = ("master", "protocols", "workers", "jobs")
_MASTER_KEYS = ("duplicate_ping_timeout", "state_dir", "control_socket", "metrics", "job_logs_kept")
#: Per-job output files kept unless ``[master] job_logs_kept`` says otherwise.
DEFAULT_JOB_LOGS_KEPT = 100
#: Longest path a UNIX socket may have on Linux (``sun_path`` is 108 bytes with the NUL).
MAX_SOCKET_PATH = 107
_WORKER_KEYS = ("name", "password", "password_file", "password_env", "protocols", "builders")
_PASSWORD_KEYS = ("password", "password_file", "password_env")
_JOB_KEYS = ("name", "command", "workers", "builder", "workdir", "env", "timeout", "max_time")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ConfigError(Exception):
    """One mistake in a config file.

    ``str()`` reads ``FILE: KEY: what is wrong; valid: what would be valid``.
    """

    def __init__(self, file: str, key: str, problem: str, valid: str):
        super().__init__(file, key, problem, valid)
        self.file = file
        self.key = key
        self.problem = problem
        self.valid = valid

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.problem}; valid: {self.valid}"


class ConfigErrors(Exception):
    """Every mistake found in one config file (at least one)."""

    def __init__(self, errors: Iterable[ConfigError]):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def _size_waiting_rooms(protocols: dict[str, "ProtocolConfig"], workers: Mapping[str, "WorkerConfig"],
                        declared: Mapping[str, Any]) -> dict[str, "ProtocolConfig"]:
    """A protocol without its own ``max_waiting_logins`` lets every worker
    registered on it wait for a login slot (at least the default): a fleet that
    returns at once, e.g. after a master restart, waits its turn instead of being
    closed at the login caps and backing off.  A waiting connection holds one
    file descriptor until ``login_timeout``; the open-files limit counts it."""
    sized = dict(protocols)
    for name, protocol in protocols.items():
        table = declared.get(name)
        if isinstance(table, dict) and "max_waiting_logins" in table:
            continue
        fleet = sum(1 for w in workers.values() if name in w.protocols)
        if fleet > protocol.options.max_waiting_logins:
            sized[name] = dataclasses.replace(protocol, options=protocol.options.with_(max_waiting_logins=fleet))
    return sized


@dataclass(frozen=True)
class ProtocolConfig:
    """One ``[protocols.NAME]`` table: a backend and where it listens."""

    name: str
    backend: Backend = field(compare=False, repr=False)
    port: str
    options: LinkOptions


@dataclass(frozen=True)
class WorkerConfig:
    """One ``[[workers]]`` entry; the password is never shown by ``repr``."""

    name: str
    password: str = field(repr=False)
    #: Protocol names this worker is registered on.
    protocols: tuple[str, ...]
    #: ``(builder name, builddir)`` pairs set up when the worker attaches.
    builders: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class JobConfig:
    """One ``[[jobs]]`` entry: a ``shell`` command run each time a worker attaches."""

    name: str
    command: tuple[str, ...] | str
    #: Worker names; empty means every worker.
    workers: tuple[str, ...]
    builder: str
    workdir: str = "build"
    env: tuple[tuple[str, str], ...] = ()
    timeout: float | None = None
    max_time: float | None = None

    def shell_args(self) -> dict[str, Any]:
        """The ``shell`` command's args (Buildbot names)."""
        return {
            "command": list(self.command) if isinstance(self.command, tuple) else self.command,
            "workdir": self.workdir,
            "env": dict(self.env),
            "timeout": self.timeout,
            "maxTime": self.max_time,
            "want_stdout": True,
            "want_stderr": True,
            "logEnviron": False,
        }

    def applies_to(self, worker: str) -> bool:
        return not self.workers or worker in self.workers


@dataclass(frozen=True)
class MasterSettings:
    """The ``[master]`` table, paths made absolute."""

    duplicate_ping_timeout: float = DEFAULT_DUPLICATE_PING_TIMEOUT
    #: The master's own files (job output); ``None``: keep none (``workerwire exec``).
    state_dir: str | None = None
    #: The control channel's UNIX socket; ``None``: no control channel.
    control_socket: str | None = None
    #: A Twisted server endpoint string serving Prometheus ``/metrics``; ``None``: none.
    metrics: str | None = None
    job_logs_kept: int = DEFAULT_JOB_LOGS_KEPT


@dataclass(frozen=True)
class MasterConfig:
    """A whole, checked master config."""

    path: str
    protocols: Mapping[str, ProtocolConfig]
    workers: Mapping[str, WorkerConfig]
    jobs: tuple[JobConfig, ...] = ()
    duplicate_ping_timeout: float = DEFAULT_DUPLICATE_PING_TIMEOUT
    settings: MasterSettings = field(default_factory=MasterSettings)

    def jobs_for(self, worker: str) -> list[JobConfig]:
        return [job for job in self.jobs if job.applies_to(worker)]


def load_config(path: str, environ: Mapping[str, str] | None = None, *, check_secrets: bool = True) -> MasterConfig:
    """Read and check the config file at *path*.

    Backends are loaded through the registry and their port strings checked
    with ``Backend.check_port``; no port is opened.  Relative
    ``password_file`` paths are relative to the config file's directory.
    With *check_secrets* false (``workerwire master --check``), a
    ``password_env`` variable need not be set: only its name is checked, and
    the config's password for that worker is a placeholder (never run such a
    config).

    :raises ConfigErrors: listing every mistake found.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigErrors([ConfigError(path, "-", f"cannot read the file: {e.strerror or e}",
                                        "a readable TOML file")]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigErrors([ConfigError(path, "-", f"not UTF-8 text ({e.reason} at byte {e.start})",
                                        "a UTF-8 TOML file")]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigErrors([ConfigError(path, "-", f"not valid TOML: {e}", "TOML syntax (https://toml.io)")]) from None
    return parse_config(data, path, environ, check_secrets=check_secrets)


def parse_config(data: Mapping[str, Any], path: str, environ: Mapping[str, str] | None = None, *,
                 check_secrets: bool = True) -> MasterConfig:
    """Check an already parsed config (see :func:`load_config`).

    :raises ConfigErrors: listing every mistake found.
    """
    return _Parser(path, os.environ if environ is None else environ, check_secrets).parse(data)


class _Parser:
    def __init__(self, path: str, environ: Mapping[str, str], check_secrets: bool = True):
        self.path = path
        self.environ = environ
        self.check_secrets = check_secrets
        self.errors: list[ConfigError] = []

    def error(self, key: str, problem: str, valid: str) -> None:
        self.errors.append(ConfigError(self.path, key, problem, valid))

    def unknown_keys(self, table: Mapping[str, Any], where: str, valid: Iterable[str]) -> None:
        valid = list(valid)
        for key in table:
            if key not in valid:
                self.error(f"{where}{key}", "unknown key", ", ".join(valid))

    # -- top level ----------------------------------------------------------

    def parse(self, data: Mapping[str, Any]) -> MasterConfig:
        self.unknown_keys(data, "", _TOP_KEYS)
        settings = self.master_table(data.get("master", {}))
        protocols = self.protocols(data.get("protocols"))
        declared: dict[str, Any] = data["protocols"] if isinstance(data.get("protocols"), dict) else {}
        workers = self.workers(data.get("workers", []), declared)
        jobs = self.jobs(data.get("jobs", []), _declared_names(data.get("workers")))
        if self.errors:
            raise ConfigErrors(self.errors)
        # Builders the jobs need exist on every worker they run on.
        for job in jobs:
            for name, worker in list(workers.items()):
                if job.applies_to(name) and job.builder not in {b for b, _ in worker.builders}:
                    workers[name] = dataclasses.replace(worker, builders=worker.builders + ((job.builder, job.builder),))
        protocols = _size_waiting_rooms(protocols, workers, declared)
        return MasterConfig(self.path, protocols, workers, tuple(jobs), settings.duplicate_ping_timeout, settings)

    def master_table(self, table: Any) -> MasterSettings:
        base = os.path.dirname(os.path.abspath(self.path))
        if not isinstance(table, dict):
            self.error("master", f"is a {_kind(table)}", "a table such as [master]")
            table = {}
        self.unknown_keys(table, "master.", _MASTER_KEYS)
        ping_timeout = table.get("duplicate_ping_timeout", DEFAULT_DUPLICATE_PING_TIMEOUT)
        if not _positive_number(ping_timeout):
            self.error("master.duplicate_ping_timeout", f"{ping_timeout!r} is not a positive number of seconds",
                       "a number > 0, e.g. 10")
            ping_timeout = DEFAULT_DUPLICATE_PING_TIMEOUT
        state_dir = table.get("state_dir", "state")
        if not isinstance(state_dir, str) or not state_dir:
            self.error("master.state_dir", f"{state_dir!r} is not a directory path",
                       "a directory path (relative paths are relative to the config file), e.g. \"state\"")
            state_dir = "state"
        state_dir = os.path.join(base, state_dir)
        control = table.get("control_socket", "control.sock")
        if control is False:
            control = None
        elif not isinstance(control, str) or not control:
            self.error("master.control_socket", f"{control!r} is not a socket path",
                       "a path (relative paths are relative to state_dir), or false for no control channel")
            control = None
        else:
            control = os.path.join(state_dir, control)
            if len(os.fsencode(control)) > MAX_SOCKET_PATH:
                self.error("master.control_socket", f"{control!r} is {len(os.fsencode(control))} bytes long",
                           f"a UNIX socket path of at most {MAX_SOCKET_PATH} bytes (a shorter state_dir or "
                           "an absolute control_socket)")
                control = None
        metrics = table.get("metrics")
        if metrics is not None:
            metrics = self.metrics_endpoint(metrics)
        kept = table.get("job_logs_kept", DEFAULT_JOB_LOGS_KEPT)
        if not isinstance(kept, int) or isinstance(kept, bool) or kept < 0:
            self.error("master.job_logs_kept", f"{kept!r} is not a whole number >= 0",
                       f"an integer >= 0 (0 keeps no job output; default {DEFAULT_JOB_LOGS_KEPT})")
            kept = DEFAULT_JOB_LOGS_KEPT
        return MasterSettings(float(ping_timeout), state_dir, control, metrics, kept)

    def metrics_endpoint(self, value: Any) -> str | None:
        valid = "a server endpoint string such as \"tcp:9100:interface=127.0.0.1\""
        if not isinstance(value, str) or not value:
            self.error("master.metrics", f"{value!r} is not an endpoint string", valid)
            return None
        from twisted.internet import endpoints, reactor

        try:
            endpoints.serverFromString(reactor, value)
        except (ValueError, TypeError, KeyError) as e:
            self.error("master.metrics", f"{value!r} is not a server endpoint string: {e}", valid)
            return None
        return value

    # -- protocols ------------------------------------------------------------

    def protocols(self, table: Any) -> dict[str, ProtocolConfig]:
        installed = ", ".join(backend_names()) or "none"
        if table is None:
            self.error("protocols", "missing: no backend is enabled",
                       f"at least one [protocols.NAME] table; installed backends: {installed}")
            return {}
        if not isinstance(table, dict) or not table:
            self.error("protocols", "enables no backend" if table == {} else f"is a {_kind(table)}",
                       f"at least one [protocols.NAME] table; installed backends: {installed}")
            return {}
        out: dict[str, ProtocolConfig] = {}
        ports: dict[str, str] = {}
        for name, options in table.items():
            where = f"protocols.{name}"
            if not isinstance(options, dict):
                self.error(where, f"is a {_kind(options)}", f"a table such as [{where}] with port = \"tcp:9989\"")
                continue
            try:
                backend = load_backend(name)
            except BackendNotFound:
                self.error(where, f"unknown backend {name!r}", f"an installed backend: {installed}")
                continue
            except BackendLoadFailed as e:
                self.error(where, f"backend {name!r} is installed but does not load: {e}",
                           f"a backend that loads (see `workerwire backends`); installed: {installed}")
                continue
            self.unknown_keys(options, where + ".", ["port", *LinkOptions.names()])
            port = self.port(where, backend, options.get("port"))
            link = self.link_options(where, options)
            if port is None or link is None:
                continue
            if port in ports and not _ephemeral(port):
                self.error(f"{where}.port", f"{port!r} is also the port of protocols.{ports[port]}",
                           "a different port for each protocol")
                continue
            ports[port] = name
            out[name] = ProtocolConfig(name, backend, port, link)
        return out

    def port(self, where: str, backend: Backend, value: Any) -> str | None:
        example = backend.loopback_port()
        if value is None:
            self.error(f"{where}.port", "missing", f"a port string such as {example!r}")
            return None
        if not isinstance(value, str):
            self.error(f"{where}.port", f"{value!r} is a {_kind(value)}, not a port string",
                       f"a port string such as {example!r}")
            return None
        try:
            backend.check_port(value)
        except AddressError as e:
            self.error(f"{where}.port", str(e), f"a port string of backend {backend.name!r} such as {example!r}")
            return None
        return value

    def link_options(self, where: str, table: Mapping[str, Any]) -> LinkOptions | None:
        defaults = LinkOptions()
        changes: dict[str, Any] = {}
        ok = True
        for f in dataclasses.fields(LinkOptions):
            if f.name not in table:
                continue
            value = table[f.name]
            key = f"{where}.{f.name}"
            default = getattr(defaults, f.name)
            if f.name == "keepalive_interval":
                if value is False:
                    changes[f.name] = None
                elif _positive_number(value):
                    changes[f.name] = float(value)
                else:
                    self.error(key, f"{value!r} is not a positive number of seconds",
                               "a number > 0 (e.g. 60), or false to disable keepalive")
                    ok = False
            elif isinstance(default, bool):
                if isinstance(value, bool):
                    changes[f.name] = value
                else:
                    self.error(key, f"{value!r} is not a boolean", "true or false")
                    ok = False
            elif isinstance(default, int):
                unit, minimum = f.metadata.get("unit", "bytes"), f.metadata.get("minimum", 1024)
                if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
                    changes[f.name] = value
                else:
                    self.error(key, f"{value!r} is not a whole number of {unit} >= {minimum}",
                               f"an integer >= {minimum} (default {default})")
                    ok = False
            elif _positive_number(value):
                changes[f.name] = float(value)
            else:
                self.error(key, f"{value!r} is not a positive number of seconds",
                           f"a number > 0 (default {default:g})")
                ok = False
        if not ok:
            return None
        try:
            return defaults.with_(**changes)
        except ValueError as e:  # a rule LinkOptions knows and we did not check
            self.error(where, str(e), "see the LinkOptions documentation")
            return None

    # -- workers --------------------------------------------------------------

    def workers(self, entries: Any, protocols: Mapping[str, Any]) -> dict[str, WorkerConfig]:
        """*protocols*: the declared [protocols] tables (valid or not, so one
        mistake there is not reported again for every worker)."""
        if not isinstance(entries, list):
            self.error("workers", f"is a {_kind(entries)}", "an array of tables: [[workers]] entries")
            return {}
        out: dict[str, WorkerConfig] = {}
        first_seen: dict[str, int] = {}
        for i, entry in enumerate(entries):
            where = f"workers[{i}]"
            if not isinstance(entry, dict):
                self.error(where, f"is a {_kind(entry)}", "a [[workers]] table with name and password")
                continue
            self.unknown_keys(entry, where + ".", _WORKER_KEYS)
            name = entry.get("name")
            if not isinstance(name, str) or not name.strip() or name != name.strip() or name.startswith("@"):
                self.error(f"{where}.name", "missing" if name is None else f"{name!r} is not a worker name",
                           "a non-empty string without surrounding spaces, not starting with '@' (reserved)")
                name = None
            elif name in first_seen:
                self.error(f"{where}.name", f"duplicate worker name {name!r} (also workers[{first_seen[name]}])",
                           "a name used by one [[workers]] entry only")
                name = None
            else:
                first_seen[name] = i
            password = self.password(where, entry)
            worker_protocols = self.worker_protocols(where, entry.get("protocols"), protocols)
            builders = self.builders(where, entry.get("builders", []))
            if name is None or password is None or worker_protocols is None or builders is None:
                continue
            out[name] = WorkerConfig(name, password, worker_protocols, builders)
        return out

    def password(self, where: str, entry: Mapping[str, Any]) -> str | None:
        given = [k for k in _PASSWORD_KEYS if k in entry]
        valid = "exactly one of password = \"...\", password_file = \"PATH\", password_env = \"VARIABLE\""
        if not given:
            self.error(f"{where}.password", "missing", valid)
            return None
        if len(given) > 1:
            self.error(f"{where}.{given[1]}", f"given together with {given[0]}", valid)
            return None
        key = given[0]
        value = entry[key]
        if not isinstance(value, str) or not value:
            self.error(f"{where}.{key}", f"is {'empty' if value == '' else 'a ' + _kind(value)}", valid)
            return None
        if key == "password":
            return value
        if key == "password_env":
            if not _ENV_NAME.fullmatch(value):
                self.error(f"{where}.password_env", f"{value!r} is not an environment variable name",
                           "a name of letters, digits and '_', not starting with a digit")
                return None
            if not self.check_secrets:
                return f"<unchecked: ${value}>"
            secret = self.environ.get(value)
            if not secret:
                self.error(f"{where}.password_env", f"environment variable {value!r} is "
                           f"{'empty' if secret == '' else 'not set'}",
                           "the name of a set, non-empty environment variable holding the password")
                return None
            return secret
        file = value if os.path.isabs(value) else os.path.join(os.path.dirname(os.path.abspath(self.path)), value)
        try:
            with open(file, encoding="utf-8") as f:
                secret = f.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            self.error(f"{where}.password_file", f"cannot read {file!r}: {getattr(e, 'strerror', None) or e}",
                       "a readable file holding the password (relative paths are relative to the config file)")
            return None
        if not secret:
            self.error(f"{where}.password_file", f"{file!r} is empty", "a file holding a non-empty password")
            return None
        return secret

    def worker_protocols(self, where: str, value: Any, protocols: Mapping[str, Any]) -> tuple[str, ...] | None:
        enabled = ", ".join(protocols) or "none"
        if value is None:
            return tuple(protocols)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            self.error(f"{where}.protocols", f"{value!r} is not a non-empty list of protocol names",
                       f"a list of enabled protocols: {enabled}")
            return None
        unknown = [v for v in value if v not in protocols]
        if unknown:
            self.error(f"{where}.protocols", f"{', '.join(map(repr, unknown))} not enabled in [protocols]",
                       f"enabled protocols: {enabled}")
            return None
        return tuple(dict.fromkeys(value))

    def builders(self, where: str, value: Any) -> tuple[tuple[str, str], ...] | None:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.error(f"{where}.builders", f"{value!r} is not a list of builder names", "a list of strings")
            return None
        for name in value:
            if not _safe_name(name):
                self.error(f"{where}.builders", f"{name!r} is not a usable builder name",
                           "non-empty names without '/', '\\', and not starting with '.'")
                return None
        return tuple((name, name) for name in dict.fromkeys(value))

    # -- jobs -------------------------------------------------------------------

    def jobs(self, entries: Any, workers: Iterable[str]) -> list[JobConfig]:
        """*workers*: every declared worker name, valid entry or not (so one
        mistake in a [[workers]] entry is not reported again for its jobs)."""
        workers = list(workers)
        if not isinstance(entries, list):
            self.error("jobs", f"is a {_kind(entries)}", "an array of tables: [[jobs]] entries")
            return []
        out: list[JobConfig] = []
        seen: set[str] = set()
        known = ", ".join(workers) or "none"
        for i, entry in enumerate(entries):
            where = f"jobs[{i}]"
            if not isinstance(entry, dict):
                self.error(where, f"is a {_kind(entry)}", "a [[jobs]] table with name and command")
                continue
            self.unknown_keys(entry, where + ".", _JOB_KEYS)
            errors_before = len(self.errors)
            name = entry.get("name")
            if not isinstance(name, str) or not _safe_name(name):
                self.error(f"{where}.name", "missing" if name is None else f"{name!r} is not a job name",
                           "a non-empty name without '/', '\\', and not starting with '.'")
            elif name in seen:
                self.error(f"{where}.name", f"duplicate job name {name!r}", "a name used by one [[jobs]] entry only")
            else:
                seen.add(name)
            command = entry.get("command")
            if isinstance(command, str) and command.strip():
                pass
            elif isinstance(command, list) and command and all(isinstance(c, str) for c in command):
                command = tuple(command)
            else:
                self.error(f"{where}.command", "missing" if command is None else f"{command!r} is not a command",
                           "a non-empty argv list such as [\"make\", \"check\"], or a shell string")
            job_workers = entry.get("workers", [])
            if not isinstance(job_workers, list) or not all(isinstance(w, str) for w in job_workers):
                self.error(f"{where}.workers", f"{job_workers!r} is not a list of worker names",
                           f"a list of configured workers: {known}")
            else:
                for w in job_workers:
                    if w not in workers:
                        self.error(f"{where}.workers", f"unknown worker {w!r}", f"configured workers: {known}")
            builder = entry.get("builder", name)
            if not isinstance(builder, str) or not _safe_name(builder):
                self.error(f"{where}.builder", f"{builder!r} is not a usable builder name",
                           "non-empty names without '/', '\\', and not starting with '.'")
            workdir = entry.get("workdir", "build")
            if not isinstance(workdir, str) or not workdir:
                self.error(f"{where}.workdir", f"{workdir!r} is not a directory", "a path relative to the builder")
            env = entry.get("env", {})
            if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
                self.error(f"{where}.env", f"{env!r} is not a table of strings", "a table such as { CI = \"1\" }")
            limits: dict[str, float | None] = {}
            for key in ("timeout", "max_time"):
                value = entry.get(key)
                if value is not None and not _positive_number(value):
                    self.error(f"{where}.{key}", f"{value!r} is not a positive number of seconds", "a number > 0")
                    continue
                limits[key] = None if value is None else float(value)
            if len(self.errors) != errors_before:
                continue
            assert isinstance(name, str) and isinstance(builder, str) and isinstance(command, (str, tuple))
            out.append(JobConfig(name, command, tuple(dict.fromkeys(job_workers)), builder, workdir,
                                 tuple(sorted(env.items())), limits["timeout"], limits["max_time"]))
        return out


def _declared_names(entries: Any) -> list[str]:
    if not isinstance(entries, list):
        return []
    return [e["name"] for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)]


def _ephemeral(port: str) -> bool:
    """True for port strings asking for any free port (``tcp:0``, ``tcp:port=0:...``, ``null:0``)."""
    return any(part in ("0", "port=0") for part in port.split(":")[1:])


def _positive_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def _safe_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__
