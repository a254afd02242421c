"""What a run measures: the profile (sizes, repetitions) and the subjects.

Subjects are the raw baselines, which are always measured, and every backend
the registry finds installed (:func:`workerwire.registry.backend_names`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workerwire.registry import backend_names, load_backend

__all__ = ["Profile", "PROFILES", "Subject", "plan_subjects"]

KiB = 1024
MiB = 1024 * KiB

LINK_SCENARIOS = ("rtt", "pipelined", "stream")


@dataclass(frozen=True)
class Profile:
    name: str
    reps: int
    rtt_calls: int
    pipe_calls: int
    stream_bytes: int
    storm_workers: int
    storm_deadline: float
    trial_timeout: float
    pipe_window: int = 100


PROFILES = {
    "full": Profile("full", reps=5, rtt_calls=5000, pipe_calls=20000, stream_bytes=256 * MiB,
                    storm_workers=1000, storm_deadline=30.0, trial_timeout=300.0),
    "quick": Profile("quick", reps=3, rtt_calls=1000, pipe_calls=3000, stream_bytes=16 * MiB,
                     storm_workers=100, storm_deadline=15.0, trial_timeout=90.0),
    "smoke": Profile("smoke", reps=1, rtt_calls=100, pipe_calls=300, stream_bytes=1 * MiB,
                     storm_workers=10, storm_deadline=10.0, trial_timeout=60.0),
}


@dataclass(frozen=True)
class Subject:
    """One thing measured: a raw baseline, a backend, or a worker variant."""

    id: str
    label: str
    spec: dict[str, Any]
    scenarios: tuple[str, ...]
    storm: bool = False
    baseline: str | None = None  # the subject id this one is compared with
    kind: str = "baseline"  # baseline | backend | peer
    notes: list[str] = field(default_factory=list)


#: The raw baseline each in-tree backend is compared with (others: raw TCP).
BASELINE_OF = {"pb": "raw-pb", "amp": "raw-amp", "msgpack": "raw-ws", "amqp": "raw-pika"}

#: Subjects that need a RabbitMQ broker: ``bench.cli`` starts a private one for
#: them (``workerwire_amqp.private_broker``) unless ``$WORKERWIRE_AMQP_URL`` names one.
#: In ``--quick``/``--smoke`` only when asked for by name (``--only``/``--backends``):
#: starting a broker costs 4-5 s on an idle 2-core machine and 10-17 s under load,
#: and the two subjects' trials another ~80 s of ``--quick`` under load.
BROKER_SUBJECTS = ("raw-pika", "amqp")


def baselines() -> list[Subject]:
    return [
        Subject("floor", "callLater(0) floor (in-process)", {"subject": "floor", "chunk": 64 * KiB, "window": 1},
                LINK_SCENARIOS),
        Subject("raw-tcp", "raw Twisted TCP (Int32StringReceiver)", {"subject": "raw-tcp", "chunk": 64 * KiB,
                "window": 0}, LINK_SCENARIOS, storm=True),
        Subject("raw-pb", "raw twisted.spread.pb callRemote (64 KiB x 16)",
                {"subject": "raw-pb", "chunk": 64 * KiB, "window": 16}, LINK_SCENARIOS, storm=True),
        Subject("raw-pb-256k", "raw twisted.spread.pb callRemote (256 KiB x 16)",
                {"subject": "raw-pb", "chunk": 256 * KiB, "window": 16}, ("stream",)),
        Subject("raw-amp", "raw twisted.protocols.amp callRemote (60 KiB x 16)",
                {"subject": "raw-amp", "chunk": 60 * KiB, "window": 16}, LINK_SCENARIOS, storm=True),
        Subject("raw-ws", "raw autobahn WebSocket + msgpack messages (64 KiB x 16)",
                {"subject": "raw-ws", "chunk": 64 * KiB, "window": 16}, LINK_SCENARIOS),
    ]


def plan_subjects(only: list[str] | None = None) -> tuple[list[Subject], list[dict[str, Any]]]:
    """The subjects of a run and the installed backends (with load status).

    *only* restricts the backends (by name); baselines are always included.
    """
    subjects = baselines()
    installed: list[dict[str, Any]] = []
    for name in backend_names():
        if only is not None and name not in only:
            continue
        try:
            backend = load_backend(name)
        except Exception as e:
            installed.append({"name": name, "loads": False, "error": str(e)})
            continue
        installed.append({"name": name, "loads": True, "network": backend.network,
                          "description": backend.description})
        base = BASELINE_OF.get(name, "raw-tcp") if not backend.in_process else "floor"
        subjects.append(Subject(name, f"workerwire {name}", {"subject": "ww", "backend": name, "chunk": 64 * KiB,
                                "window": 0}, LINK_SCENARIOS, storm=True, baseline=base, kind="backend"))
    names = {b["name"] for b in installed if b["loads"]}
    if "amqp" in names:
        subjects.insert(len(baselines()), Subject(
            "raw-pika", "raw pika publish/consume via RabbitMQ (64 KiB x 16, confirms while streaming)",
            {"subject": "raw-pika", "chunk": 64 * KiB, "window": 16}, LINK_SCENARIOS))
    if "pb" in names:
        from .sides.app_worker import available as app_available
        from .sides.bbw import available

        if app_available():
            subjects.append(Subject("pb/app-worker", "`workerwire worker` daemon (the app) over pb, shell command "
                                    "(printer child)", {"subject": "app", "backend": "pb", "chunk": 64 * KiB,
                                                        "window": 0}, ("stream",), baseline="buildbot-worker",
                                    kind="peer"))
        subjects.append(Subject("pb/shell", "bench worker over pb, shell command (printer child, forwarded "
                                "by bench/bot.py)", {"subject": "ww", "backend": "pb", "variant": "shell",
                                                     "chunk": 64 * KiB, "window": 0}, ("stream",),
                                baseline="buildbot-worker", kind="peer"))
        if available():
            subjects.append(Subject("buildbot-worker", "buildbot-worker 4.x (PyPI), shell command, into workerwire pb",
                                    {"subject": "bbw", "chunk": 64 * KiB, "window": 0}, ("stream",), kind="peer"))
    if "msgpack" in names:
        subjects += msgpack_peers()
    return subjects, installed


#: The stock worker over msgpack, which the msgpack worker subjects are compared with.
BBW_MSGPACK = "buildbot-worker/msgpack"

#: Subjects left out of ``--quick`` (each starts a worker daemon for a few
#: seconds per repetition; tests/test_bench_quick.py runs --quick and must not
#: get slower): the full run and ``--smoke`` measure them.
NOT_IN_QUICK = frozenset({"msgpack/app-worker", "msgpack/shell", BBW_MSGPACK})


def msgpack_peers() -> list[Subject]:
    """Workers running the same shell command into one workerwire msgpack master:
    the `workerwire worker` daemon, the bench worker, and a stock buildbot-worker
    created with ``--protocol msgpack_experimental_v7``."""
    from .sides.app_worker import available as app_available
    from .sides.bbw import available

    out = []
    if app_available():
        out.append(Subject("msgpack/app-worker", "`workerwire worker` daemon (the app) over msgpack, shell command "
                           "(printer child)", {"subject": "app", "backend": "msgpack", "chunk": 64 * KiB, "window": 0},
                           ("stream",), baseline=BBW_MSGPACK, kind="peer"))
    out.append(Subject("msgpack/shell", "bench worker over msgpack, shell command (printer child, forwarded by "
                       "bench/bot.py)", {"subject": "ww", "backend": "msgpack", "variant": "shell", "chunk": 64 * KiB,
                                         "window": 0}, ("stream",), baseline=BBW_MSGPACK, kind="peer"))
    if available():
        out.append(Subject(BBW_MSGPACK, "buildbot-worker 4.x (PyPI) created with --protocol msgpack_experimental_v7, "
                           "shell command, into workerwire msgpack", {"subject": "bbw", "backend": "msgpack",
                                                                      "chunk": 64 * KiB, "window": 0}, ("stream",),
                           kind="peer"))
    return out


def trial_spec(subject: Subject, profile: Profile, scenarios: list[str]) -> dict[str, Any]:
    return {
        **subject.spec, "scenarios": scenarios, "timeout": profile.trial_timeout,
        "rtt_calls": profile.rtt_calls, "pipe_calls": profile.pipe_calls, "pipe_window": profile.pipe_window,
        "stream_bytes": profile.stream_bytes, "storm_workers": profile.storm_workers,
        "storm_deadline": profile.storm_deadline,
    }
