"""Profile-backed explanations of missed targets, shown in docs/benchmarks.md.

Written by hand from ``python -m bench --profile DIR`` (cProfile of every
bench process) and the CPU s/GB columns; the page shows an entry only while
its target is missed in the run that generated the page.  Re-profile and
update this file when a backend changes its hot path.
"""

from __future__ import annotations

__all__ = ["FINDINGS", "PROFILED"]

#: When and against which code the findings were profiled.
PROFILED = "2026-11-30, plugins/pb at 98dc9bd, plugins/amp at f75dafc, plugins/null at 707e3df, app at 64a1a9e"

#: (target, subject) -> explanation.  ``*`` as subject matches any subject.
FINDINGS: dict[tuple[str, str], str] = {
    ("output streaming vs own transport", "pb"): (
        "Stop-and-wait. `workerwire_pb.worker._Channel._send_update` returns the Deferred of the `update` "
        "callRemote, so `CommandChannel.update()` fires only when the master has answered, and a worker that waits "
        "on it (as the contract asks) has one update in flight. Both processes then idle in `epoll.poll` about half "
        "of the time (cProfile: worker 1.33 s of 2.36 s, master 1.0 s of 2.5 s for 256 MiB), and throughput is "
        "1 / (master + worker CPU per byte): 1 / (2.12 + 1.56 s/GB) = 272 MB/s, as measured. Fix in the pb backend: "
        "give the channel a byte window like `workerwire_amp.flow.SendWindow` (fire `update()` once the call is "
        "sent while, say, 1 MiB or 16 updates are unanswered; fail them all on link loss). Throughput is then bound "
        "by the busier side, 1 / 2.12 s/GB = ~470 MB/s on this machine, above raw PB 64 KiB x 16. Second cost: "
        "the Buildbot wire form `[[{key: value}, 0]]` jellies to ~24 banana items per update (master "
        "`WireBroker.gotItem` 98,417 calls for 4,101 updates) against ~6 for raw `update(bytes)`; with a "
        "workerwire peer (`peer_features` known) a compact form (one bytes/MessagePack argument) would cut the "
        "master's share."),
    ("call round trip overhead", "pb"): (
        "Borderline and noise-dominated: 0.93x, 0.91x and 0.82x raw PB in three full runs. The wire traffic is the "
        "same as raw PB's (identical banana item counts: 25,321 vs 25,267 on the master for 5,050 calls); the "
        "difference is Python per call. cProfile busy time (total minus `epoll.poll`) for 5,050 round trips: "
        "master 1.14 s vs 0.80 s, worker 1.18 s vs 0.91 s. Worker: `WireBroker.gotItem` wraps every banana item "
        "for size accounting (85,917 calls), and each call goes `dispatch` -> `maybeDeferred` -> `call_bot` "
        "(value check) -> `_pack_result` (`fits` walk, `serialize`): 3 `_runCallbacks` per call where raw PB's "
        "Referenceable needs none. Master: core's `_checked_call`/`_call`/`done` plus `_remote_print`'s "
        "`addCallback(lambda _: None)`: 2 `_runCallbacks` per call against 1. Fix in the pb backend: count sizes "
        "in `gotItem` only inside an unfinished list and only for bytes; in `dispatch`, call the method directly "
        "and wrap only a Deferred result; skip the `fits` walk for small results (None, short str)."),
    ("call round trip overhead", "amp"): (
        "Borderline and noise-dominated: 0.95x, 0.78x and 0.79x raw AMP in three full runs on this (shared, "
        "loaded) machine. Per call amp adds to raw AMP, on the master: `wire.call` builds every box through "
        "`_build` (an `Outgoing` transfer table even when nothing is large), `_check_kinds`, a MessagePack "
        "`put_value`, and a second Deferred (`result`, fed by `answered` from AMP's own) under core's "
        "`_checked_call`/`done` translation: 3 `_runCallbacks` per call against 1 for raw AMP (cProfile, 5,050 "
        "calls: 15,185 vs 5,063); on the worker `take_value`/`decode`, `call_bot`'s value check and "
        "`_make_response`/`_build`: 7 `_runCallbacks` per call against 5. Fix in the amp backend: a fast path "
        "in `wire.call` for boxes whose Values all fit inline (skip `Outgoing`), and return AMP's Deferred with "
        "the parse as its callback instead of chaining a new one."),
    ("output streaming vs own transport", "amp"): (
        "Master CPU per byte: 1.73 s/GB against raw AMP's 0.68 (the worker is not the limit, 1.19 s/GB). A 64 KiB "
        "`stdout` update encodes to 65,5xx bytes of MessagePack, just over AMP's 65,535-byte value limit, so every "
        "update travels as three boxes (two `Chunk` boxes, one of ~15 bytes, then `Update` naming the transfer): "
        "cProfile of the master shows 12,294 boxes and 127,024 `Int16StringReceiver.stringReceived` calls for 4,096 "
        "updates (raw AMP: 4,371 boxes, 30,598 strings), and `_box_received`/`_parse`/`assembler` on top. Fix in "
        "the amp backend: carry a value of a few times 65,535 bytes inside the same box (consecutive keys "
        "`updates`, `updates.1`, ... as one argument) instead of separate `Chunk` boxes, so a 64 KiB update is one "
        "box; or let `Chunk` pieces of one transfer share a box. That removes two thirds of the per-box parsing. "
        "The worker also grows ~15 MiB RSS during a 256 MiB stream with its 4 MiB window (MessagePack copies and "
        "queued boxes): bounded, but more than the window."),
    ("fastest backend streaming vs raw TCP", "*"): (
        "Raw TCP moves 64 KiB frames at 0.45 (master) / 0.19 (worker) CPU s/GB; every RPC layer costs more per "
        "byte than the 1/(0.5 x raw TCP MB/s) budget this target leaves (1.3 s/GB at ~1,500 MB/s). Raw AMP itself "
        "sits at 0.68 s/GB, raw PB at 1.25, so only amp can reach the target, and only after its master cost "
        "drops to about raw AMP's (see the amp streaming finding)."),
    ("storm: all logged in", "pb"): (
        "The listen backlog. The pb listener opens `tcp:port=0:interface=127.0.0.1` (`loopback_port()`, and any "
        "`tcp:PORT` a user writes) with Twisted's default backlog of 50; under 1,000 simultaneous connects the "
        "kernel drops handshakes, the PB client then waits for the server's banana banner that never comes, and "
        "only the 30 s `login_timeout` retries it, past the storm's deadline (no attempt error is reported). The "
        "same storm with `:backlog=1024` appended to the port string: 1,000 of 1,000 in 1.8 s, 11.1 KiB per "
        "connection. Fix in `workerwire_pb.address.server_endpoint`: add `backlog=1024` (capped by "
        "net.core.somaxconn) to TCP endpoint strings that do not set one; and a worker-side connect-to-banner "
        "timeout much shorter than 30 s."),
    ("storm: time until all connected", "amp"): (
        "The same listen backlog of 50 as pb: amp's worker speaks first, so a dropped handshake is retried by TCP "
        "within ~1-3 s instead of hanging, and all log in, but the slowest repetitions take several seconds. With "
        "`:backlog=1024` on the port string the same storm takes 0.7 s. Fix in the amp listener: default the TCP "
        "backlog to 1024."),
    ("storm: time until all connected", "pb"): (
        "Not every worker connected: see \"storm: all logged in\" (listen backlog of 50)."),
    ("in-process delivery (rtt)", "null"): (
        "The floor is two `callLater(0)` hops and nothing else (5.9 µs per round trip); null does, per round trip, "
        "two MessagePack encodes and decodes, six `check_value` walks (22 recursive `_check` calls: the caller's "
        "check, `encode`'s, `decode`'s, `call_bot`'s result check), `maybeDeferred` on both ends and the "
        "Connection's error translation (cProfile, 5,050 round trips: 0.39 s against the floor's 0.11 s; "
        "`_check` 0.077 s, encode+decode 0.09 s, Deferred callbacks 0.23 s cumulative). Checking each value once "
        "(on send) would save ~15 %; even with no codec at all the Deferred plumbing alone keeps null near 0.5x. "
        "0.8x of a bare `callLater(0)` is out of reach while null encodes every message, which is its purpose "
        "(\"strict as a network backend\")."),
    ("in-process delivery (pipelined)", "null"): (
        "As for the round trip: per call two encodes/decodes, six value checks and two Deferred chains against "
        "two bare `callLater(0)` hops."),
    ("pb worker vs buildbot-worker streaming", "pb/app-worker"): (
        "buildbot-worker is CPU-bound in its own process (19.3 worker CPU s/GB: per-line splitting), so it tops out "
        "near 50 MB/s. The `workerwire worker` daemon needs 3.0 s/GB and the master 2.4 s/GB, but the pb channel "
        "is stop-and-wait (see the pb streaming finding), so the two add up: 1 / 5.4 s/GB = ~190 MB/s, ~4x. With a "
        "pipelined pb channel the bound is the worker's 3.0 s/GB (~330 MB/s, ~6.6x). The worker's own cost: "
        "`app/worker_runtime/shell.py` reads the child's pipe through Twisted's `ProcessReader`, 8 KiB per "
        "`os.read` (33,000 reads for 256 MiB, 1.1 s of 6 s under cProfile); reading 64 KiB or more per wake-up "
        "would cut it further."),
    ("pb worker vs buildbot-worker streaming", "pb/shell"): (
        "Same as for the daemon: the pb channel is stop-and-wait, and Twisted reads the child's pipe 8 KiB at a "
        "time (bench/bot.py uses `spawnProcess` like the app)."),
}


def finding(target: str, subject: str) -> str | None:
    return FINDINGS.get((target, subject)) or FINDINGS.get((target, "*"))
