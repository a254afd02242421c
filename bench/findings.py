"""Profile-backed explanations of missed targets, shown in docs/benchmarks.md.

Written by hand from ``python -m bench --profile DIR`` (cProfile of every
bench process) and the CPU s/GB columns; the page shows an entry only while
its target is missed in the run that generated the page.  Re-profile and
update this file when a backend changes its hot path.
"""

from __future__ import annotations

__all__ = ["FINDINGS", "PROFILED"]

#: When and against which code the findings were profiled.
PROFILED = "2026-11-30, plugins/pb at f175999, plugins/amp at 0a40c5d, plugins/null and core at 3a2081a, app at 64a1a9e"

#: (target, subject) -> explanation.  ``*`` as subject matches any subject.
FINDINGS: dict[tuple[str, str], str] = {
    ("call round trip overhead", "amp"): (
        "Met with a small margin (0.94x and 0.95x raw AMP in two full runs on 2026-11-30, 8,300-8,600 calls/s), "
        "so a loaded run can dip under 0.9x. In-process CPU per round trip, both ends: amp 76 us against raw "
        "AMP's 70 us (20,000 calls, median of 5). What amp still adds: the contract's checks (`_checked_call`, "
        "`call_bot`'s result check), MessagePack for the message, and one more Deferred on the master "
        "(`BaseConnection._call`'s own, which keeps the ConnectionLost guarantee); cProfile: 7 `_runCallbacks` "
        "per round trip (both ends) where raw AMP needs 6."),
    ("output streaming vs own transport", "amp"): (
        "Met in the last full run (1.08x; 0.95x and 0.98x in the two before the worker stopped copying output "
        "twice), with per-repetition spreads that overlap (amp 1,290-1,641 MB/s, raw AMP 1,183-1,589), so a "
        "loaded run can still miss. The limit is the worker: 0.56-0.78 CPU s/GB against raw AMP's 0.56-0.67, "
        "while amp's master needs 0.40-0.47 against raw AMP's 0.62-0.83 (parts and merged updates: one Update box "
        "per 4 updates). Of the worker's cost about 0.3 s/GB is system time (loopback TCP sends, /proc) and the "
        "rest Python per 64 KiB update: `channel.update`'s checks, the pair encoding, a Deferred from "
        "`SendWindow`, the producer's resumption, and per box the AMP framing and Twisted's write-buffer "
        "concatenation. Intermittently (about 1 master process in 6) glibc trims the heap after every ~300 KiB "
        "box and faults it back (600,000+ minor faults per GiB, master system time 1.4 s/GB); with "
        "MALLOC_TRIM_THRESHOLD_=67108864 it did not happen in 6 runs. Worker RSS grows ~15 MiB with the 4 MiB "
        "window (Twisted's write buffer and its concatenation), bounded."),
    ("fastest backend streaming vs raw TCP", "*"): (
        "Raw TCP streams ~4,000 MB/s at 0.23 (master) / 0.22-0.26 (worker) CPU s/GB, so 0.5x needs ~2,000 MB/s: "
        "under ~0.5 s/GB on the busier side. The fastest backend, amp, reaches ~1,450 MB/s (0.36x), limited by "
        "its worker at 0.56-0.78 s/GB: about 0.3 s/GB of system time in loopback TCP sends (what raw TCP's worker "
        "spends in all) plus ~0.35 s/GB of Python per 64 KiB update (see the amp streaming finding); its master "
        "is at 0.41 s/GB. Reaching 0.5x would take the worker's Python cost per update to about a third (fewer, "
        "larger updates from the producer would, which the contract leaves to the worker; 64 KiB is the bench's "
        "choice)."),
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
    ("storm: master RSS per connection", "pb"): (
        "Not profiled yet; measured (3 storms each): 12.6-12.7 KiB per connection at b1f700a~1, before the login "
        "guard, once the listen backlog let all 1,000 log in (the 11.2 KiB of earlier runs counted only the ~670 "
        "that got in), and 12.7-12.8 KiB since; the output-flow and codec commits after it did not move it. "
        "Raw PB's storm takes 7.2 KiB per connection; what else a workerwire pb login keeps per connection has not "
        "been broken down yet (tracemalloc of the master during a storm would)."),
    ("storm: time until all connected", "pb"): (
        "Not profiled yet; measured with `--only pb --scenarios storm --reps 3`: 0.65-0.70 s at b1f700a~1 (backlog "
        "1024, before the login guard), 1.66-3.05 s at b1f700a (the login guard) and 1.6-3.3 s since; all 1,000 log "
        "in every time. The output-flow and codec commits did not move it (1.59-1.66 s before and after them)."),
    ("in-process delivery (rtt)", "null"): (
        "The floor is two `callLater(0)` hops and one Deferred (6.1 us per round trip). null now checks each "
        "message once per side (a path-free walk, `values._valid`), encodes and decodes it with one packer, and "
        "answers synchronous bot results without Deferreds: 13.1 us per round trip (was 19.2), 0.47x. What is "
        "left is the contract's own work, not redundancy: per round trip two MessagePack encodes and decodes and "
        "their checks, the Connection's pending-call Deferred and error translation, the pipe's two reactor hops "
        "(`_drain`), `call_bot`'s result check (cProfile, 9,150 round trips: `_runCallbacks` 0.23 s cumulative, "
        "`decode` 0.066 s, `_valid` 0.045 s of 0.54 s). 0.8x (7.6 us) would leave 1.5 us above the bare hops for "
        "all of that: out of reach while null stays as strict as a network backend."),
    ("in-process delivery (pipelined)", "null"): (
        "As for the round trip: 0.54x (7.5 us per call against the floor's 4.1 us); per call two encodes and "
        "decodes with their checks and the Connection's Deferred against two bare `callLater(0)` hops."),
}


def finding(target: str, subject: str) -> str | None:
    return FINDINGS.get((target, subject)) or FINDINGS.get((target, "*"))
