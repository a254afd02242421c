"""Profile-backed explanations of missed targets, shown in docs/benchmarks.md.

Written by hand from ``python -m bench --profile DIR`` (cProfile of every
bench process) and the CPU s/GB columns; the page shows an entry only while
its target is missed in the run that generated the page.  Re-profile and
update this file when a backend changes its hot path.
"""

from __future__ import annotations

__all__ = ["FINDINGS", "PROFILED"]

#: When and against which code the findings were profiled.
PROFILED = ("2026-11-30, plugins/pb at 2761628 (with core's allocator priming at 7455202), plugins/amp at 8c871bd "
            "(with core's output window at b661993), plugins/null and core at 3a2081a, app at 64a1a9e; "
            "plugins/msgpack 2026-12-06 (branch msgpack-bench, under load)")

#: (target, subject) -> explanation.  ``*`` as subject matches any subject.
FINDINGS: dict[tuple[str, str], str] = {
    ("call round trip overhead", "amp"): (
        "Met with a small margin (0.94x and 0.95x raw AMP in two full runs on 2026-11-30, 8,300-8,600 calls/s), "
        "so a loaded run can dip under 0.9x. In-process CPU per round trip, both ends: amp 76 us against raw "
        "AMP's 70 us (20,000 calls, median of 5). What amp still adds: the contract's checks (`_checked_call`, "
        "`call_bot`'s result check), MessagePack for the message, and one more Deferred on the master "
        "(`BaseConnection._call`'s own, which keeps the ConnectionLost guarantee); cProfile: 7 `_runCallbacks` "
        "per round trip (both ends) where raw AMP needs 6."),
    ("call round trip overhead", "msgpack"): (
        "Round trips measured under heavy load (2026-12-06, load average 7-15 on 2 cores) gave 0.5x-1.3x raw-ws "
        "from run to run; CPU per call (the results file's `master_cpu_us_per_call` / `worker_cpu_us_per_call`) "
        "is steadier: pipelined, msgpack 35-48 us (master) and 27-35 us (worker) against raw autobahn's 23-34 / "
        "19-28 us, i.e. ~0.7x as much work per call for raw autobahn. autobahn's own per-message work (frame "
        "parsing, masking, `sendMessage`) is the same in both and most of the Python per call. What msgpack adds "
        "(cProfile of 5,000 round trips, both ends): the contract's work — `BaseConnection._call`'s Deferred and "
        "pending-call table, `check_value` of the argument, `values.decode`'s value walk on both ends, "
        "`call_bot_now`'s checks — about half; the dialect's checks (seq_number, op, keepalive, send budget), the "
        "other half. The backend's own share was cut: no Deferred for a bot's synchronous answer, no callback per "
        "call to drop a result (`request_done`), one reused `msgpack.Packer`, keepalive touch and send-budget "
        "check once per read (pipelined CPU per call 42 -> 36 us master, 35 -> 28 us worker). What is left of "
        "the gap is mostly core's, shared by every backend (its Deferred per call)."),
    ("output streaming vs own transport", "amp"): (
        "Met by a wide margin since 8c871bd: 3,700-4,450 MB/s against raw AMP's 1,250-1,475 (2.5-3.5x; three "
        "`--only raw-tcp,raw-amp,amp --scenarios stream --reps 3` runs, 2026-11-30), at 0.21-0.23 (master) and "
        "0.22-0.26 (worker) CPU s/GB; before, 1,308 MB/s (0.92x) at 0.42 / 0.75 s/GB. Profiled (cProfile of both "
        "ends, per-process user/system time and minor faults): the worker's box was joined, then Twisted joined "
        "its write buffer again (two copies of every byte, ~50,000 faults per GB, 14 MiB RSS growth); now a box "
        "goes to the socket with one scatter-gather `sendmsg` while Twisted's buffer is empty "
        "(`workerwire.speedups.socket_write.write_pieces`), Update boxes skip AMP's argument machinery (`call_encoded`), and an "
        "update that finds room fires before `update()` returns (no producer resumption per update). That made "
        "the master the limit: it read 64 KiB per `recv` (now 256 KiB once a read fills 64 KiB, `workerwire.stream_link.READ_SIZE`: system time ~0.25 -> "
        "~0.10 s/GB), and in about a third of its processes glibc trimmed the heap after every box and faulted "
        "it back (600,000 faults per GB, 1.7 s/GB, ~600 MB/s); one 8 MiB block freed at the first connection "
        "raises glibc's thresholds (`workerwire.speedups.allocator.prime_allocator`): 0 of 16 processes since. That in turn "
        "made 1 MiB Update boxes cheaper than 288 KiB ones for both ends (`workerwire_amp.worker.BATCH`; per box: "
        "framing, a Deferred, an answer, a wake-up). A miss now: check the master's minor faults per GB (the "
        "allocator) and the machine's load; RSS growth is ~3 MiB on either side."),
    ("output streaming vs own transport", "pb"): (
        "Met by a wide margin since 2761628: 2,500-3,600 MB/s against raw PB's 410-770 (5.1-5.9x; three "
        "`--only raw-pb,pb --scenarios stream --reps 3` runs, 2026-11-30), at 0.24-0.34 (master) and 0.26-0.37 "
        "(worker) CPU s/GB; before, 1,200-1,470 MB/s at 0.43 / 0.71 s/GB with 14.7 MiB worker RSS growth. As for "
        "amp: the worker's banana messages of 32 KiB or more go to the socket with one `sendmsg` while Twisted's "
        "buffer is empty (`workerwire.speedups.socket_write.write_pieces`; worker 0.52 -> 0.26 s/GB, RSS growth 12.4 -> 3.6 MiB), a "
        "connection whose read fills 64 KiB reads 256 KiB at a time (`workerwire.stream_link.READ_SIZE`; master 0.58-0.61 -> "
        "0.44-0.48 s/GB), and `packedUpdate` messages to a workerwire master carry up to 1 MiB "
        "(`worker.PACKED_BATCH`; master 0.44-0.48 -> 0.23-0.26, worker 0.37-0.39 -> 0.26-0.30 s/GB; 576 KiB and "
        "1.5 MiB were slower), which pays only with glibc's thresholds raised (`workerwire.speedups.allocator`: without it "
        "the master trimmed and faulted its heap per message in 12 of 12 runs, 1.17 s/GB, ~850 MB/s). A stock "
        "master still gets Buildbot-form updates in 288 KiB batches. A miss now: check the master's minor faults "
        "per GB (the allocator) and the machine's load; RSS growth is ~2 MiB (master) and ~3.6 MiB (worker)."),
    ("fastest backend streaming vs raw TCP", "*"): (
        "Met since 8c871bd: amp streams 3,700-4,450 MB/s against raw TCP's 4,180-4,220 (0.89-1.06x; 1,346 MB/s, "
        "0.34x, in the last full run before), at 0.21-0.23 (master) / 0.22-0.26 (worker) CPU s/GB against raw "
        "TCP's 0.23 / 0.22-0.26 (see the amp streaming finding for what changed). Both ends now spend about what "
        "raw TCP does per GB, so a run where one of amp's repetitions is low (2,780-3,200 MB/s, one of three in each "
        "run) is the scheduling of two busy processes on two cores, not amp's per-byte cost; a miss below "
        "~2,000 MB/s would mean the master's allocator trims again (its minor faults per GB) or another load."),
    ("storm: all logged in", "*"): (
        "Earlier misses had two causes, both fixed: Twisted's default listen backlog of 50 (every TCP port string "
        "now gets `backlog=1024` unless it sets one, `workerwire.addresses.DEFAULT_BACKLOG`), and the login guard "
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
    ("output streaming vs own transport", "amqp"): (
        "Not profiled in depth yet. raw-pika's worker publishes 64 KiB messages with confirms and nothing else; "
        "the amqp backend adds MessagePack framing of each batch (up to 1 MiB), the output window (4 MiB in "
        "flight, each batch held until the master's remote_update finished and its `ack` came back through the "
        "broker, with its own confirm) and the worker's receipt counts (`seen`). Both ends go through pika's "
        "frame codec, whose per-frame callbacks (`pika.callback`) lead the cProfile of a 1,000-worker storm; "
        "figures taken under load (2026-12-06, load average 9-13 on 2 cores) swing 2x between repetitions."),
    ("storm: time until all connected", "amqp"): (
        "The broker's work per login, not the masters': every session is a channel, two queue declarations, a "
        "qos and a consume at the broker, plus the login request and its answer through it. "
        "`python -m bench.sides.amqp_bench --reps 0 --storm 2000` (2026-12-06, under load 9-16): broker 11.4 "
        "CPU-s for 2,000 logins (5.7 ms each), the two masters 1.1 + 1.2 s, the worker processes 3.8 s; so "
        "1,000 logins take about 5.7 s of the broker's CPU before anything of ours. Login requests now expire in "
        "the broker after login_timeout (a profiled storm had built 1,147 sessions for 1,000 workers before). "
        "To go faster: fewer broker round trips per session (e.g. several worker sessions per channel)."),
    ("storm: master RSS per connection", "amqp"): (
        "About 15 KiB per session (`python -m bench.sides.amqp_bench --storm 2000`: 14.9 KB per connection on "
        "each of two masters): each session is an AMQP channel of its own on the master's one broker connection "
        "(pika's `Channel` with its callback registrations), a Mailbox, the `Connection` and its send budget. "
        "Not yet reduced."),
}


def finding(target: str, subject: str) -> str | None:
    return FINDINGS.get((target, subject)) or FINDINGS.get((target, "*"))
