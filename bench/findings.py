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
    ("storm: all logged in", "*"): (
        "Earlier misses had two causes, both fixed: Twisted's default listen backlog of 50 (every TCP port string "
        "now gets `backlog=1024` unless it sets one, `workerwire.tls.DEFAULT_BACKLOG`), and the login guard "
        "closing connections over its caps, which a connector retries only after its backoff. A miss now means "
        "the master's `ulimit -n` or net.core.somaxconn is below the storm: see `master_guard` in the JSON "
        "results (`closed_at_cap` counts connections closed because the waiting room was full)."),
    ("storm: time until all connected", "*"): (
        "Profiled 2026-11-30 (guard stats and `--only pb,amp --scenarios storm --reps 3`): with the login guard "
        "closing every connection over `max_unauthenticated_per_host` (64; the storm comes from one address) at "
        "once, 936 of the 1,000 workers were sent into reconnect backoff (0.5 s, doubling, jittered) and logged "
        "in in waves: pb 1.6-3.6 s, amp 1.6 s. The guard now keeps such connections waiting, unread, and serves "
        "them as slots free up (`LoginGuard.guarded`, `LinkOptions.max_waiting_logins`, docs/hostile-clients.md "
        "section 2): pb 0.45-0.48 s, amp 0.38-0.40 s, 936 waited, none closed. A miss now points at the machine "
        "(load, fd limits), not at backoff."),
    ("storm: master RSS per connection", "pb"): (
        "tracemalloc of the master during a 1,000-worker pb storm (2026-11-30): 13.0 KiB traced per connection. "
        "Two items were per-connection copies of shared state and are gone: each broker built its own jelly "
        "security rules (two ~630-byte type tables) and each keepalive monitor a deque (a 600-byte block for a "
        "few timestamps): 12.8 -> 10.2-10.4 KiB per connection. What is left above raw PB's 7.2 KiB: the "
        "broker's attribute dict (1.6 KiB: PB, banana and workerwire state together outgrow CPython's shared-key "
        "dict), banana's per-connection symbol table (1.2 KiB, raw PB has it too), the Connection, its keepalive "
        "timer and subscriptions (~1.2 KiB), the workerwire extension object and the peer's feature dict "
        "(~0.5 KiB). Reproduce with a tracemalloc snapshot before and after a storm (`bench.storm ww` as the "
        "client)."),
    ("in-process delivery (rtt)", "null"): (
        "The floor is two `callLater(0)` hops and one Deferred (5.9-6.1 us per round trip). null now checks each "
        "message once per side (a path-free walk, `values._valid`), encodes and decodes it with one packer, and "
        "answers synchronous bot results without Deferreds: 13.1-14.3 us per round trip (was 19.2). Where the "
        "other ~8 us go (2026-11-30, `timeit` of each piece, min of 5 x 200,000, and cProfile of 30,000 round "
        "trips): the MessagePack work the contract asks of a link, 1.3 us (encode call 0.19, decode and check it "
        "0.56, encode answer 0.13, decode answer 0.40); two more Deferreds than the floor's one, ~2.3 us (1.16 us "
        "each with its callbacks: the backend call's own, and `BaseConnection._call`'s, which keeps the "
        "ConnectionLost and error-translation guarantees); the rest, ~4.5 us, is the Python between them "
        "(argument check, pending-call tables on both sides, dispatch by message kind, `call_bot_now`'s method "
        "check, the pipe's send/schedule/drain). 0.8x (7.6 us) would leave 1.5 us above the bare hops for all of "
        "that: less than the codec alone, so out of reach while null stays as strict as a network backend; "
        "folding the two Deferreds into one would give ~11.5 us (0.53x), not 0.8x."),
    ("in-process delivery (pipelined)", "null"): (
        "As for the round trip: 0.54x (7.5 us per call against the floor's 4.1 us); per call two encodes and "
        "decodes with their checks and the Connection's Deferred against two bare `callLater(0)` hops."),
}


def finding(target: str, subject: str) -> str | None:
    return FINDINGS.get((target, subject)) or FINDINGS.get((target, "*"))
