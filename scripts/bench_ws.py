"""The Socket.IO benchmark (`make bench-ws`).

Each of idle and chat runs on both transports, WebSocket then Engine.IO
long-polling (`transport=polling`, never upgraded), in the same run and the
same tables.

Idle: for 5,000 / 10,000 / 19,500 authenticated sockets on one fresh server
(release, RUST_LOG=warn, WS_PING_INTERVAL=25000, MAX_CONNECTIONS=20 so that
sockets + DB pool + listeners stay under the 20,000-fd limit), the server's
RSS after warm-up with no socket, the sockets connected by several
`aurum-loadgen idle` processes (at most 5,000 each, each from its own
127.0.0.x), held 30 s with heartbeats, RSS again: RSS per socket and
sockets established per second. An idle polling socket is what an idle
client keeps: the handshake and CONNECT done, one keep-alive connection
with a long-poll GET waiting, the pongs POSTed on it between GETs.

Chat: 1,000 sender/recipient pairs (`aurum-loadgen chat`) at rising offered
rates, persisted with acks; delivered %, delivery and ack latency, and the
CPU each side used. Over polling each socket keeps a GET waiting on one
connection and POSTs on a second, batching what queued meanwhile.

Replay: a reconnect storm with a backlog. 1,000 recipients each hold 100
messages and missed 1,000 more (from 10 partners each, interleaved as live
traffic would be), inserted with SQL as the server writes them; on a fresh
server all recipients connect at once (several `aurum-loadgen replay`
processes, each from its own 127.0.0.x) with `since` = the last message
they hold, and each counts its `new_message` events until it has all it
missed: sockets complete, messages/s from the first connect to the last
message, per-socket time to complete, out-of-order and duplicate ids,
sockets the server closed, and the server's RSS before and at its peak.

The idle and chat tables go to docs/benchmarks.md between the bench-ws
markers, the replay table between the bench-ws-replay markers, each with
the command and the machine. Replay rows are kept by their server label
(BENCH_WS_LABEL, default the last commit that changed the server), so
that a before and an after sit side by side; a run replaces only its own
label's row.

Knobs: BENCH_WS_ONLY (a comma-separated subset of idle,chat,replay: runs only
those; the idle and chat table is written only when both ran, e.g.
BENCH_WS_ONLY=replay for the replay alone), BENCH_WS_TRANSPORTS (websocket,polling: the idle and chat
transports, in that order), BENCH_WS_IDLE (socket counts),
BENCH_WS_RATES (msg/s), BENCH_WS_SECS, BENCH_WS_PAIRS, BENCH_WS_HOLD,
BENCH_WS_REPLAY_SOCKETS, BENCH_WS_REPLAY_MESSAGES (missed per socket),
BENCH_WS_REPLAY_DEADLINE (s), BENCH_WS_LABEL.
"""

import datetime as dt
import json
import math
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request

import bench_common  # the shared helpers beside this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
AURUM = os.path.join(TARGET, "release", "aurum")
LOADGEN = os.path.join(TARGET, "release", "aurum-loadgen")
PG = os.environ.get("AURUM_BENCH_PG", "postgres://postgres@127.0.0.1:5432")
DB_URL = f"{PG}/aurum_bench_ws"
PROFILES = 20_000
SECRET = "bench-ws-secret-0123456789abcdef"
HTTP_PORT, WS_PORT = 18280, 18281
WS_URL = f"ws://127.0.0.1:{WS_PORT}/socket.io/?EIO=4&transport=websocket"
POLL_URL = f"http://127.0.0.1:{WS_PORT}/socket.io/?EIO=4&transport=polling"
URLS = {"websocket": WS_URL, "polling": POLL_URL}
TRANSPORTS = [x.strip() for x in os.environ.get("BENCH_WS_TRANSPORTS", "websocket,polling").split(",") if x.strip()]
IDLE_COUNTS = [int(x) for x in os.environ.get("BENCH_WS_IDLE", "5000,10000,19500").split(",")]
PER_PROCESS = 5_000
HOLD = int(os.environ.get("BENCH_WS_HOLD", "30"))
CONNECT_CONCURRENCY = 128  # per load generator process
RATES = [int(x) for x in os.environ.get("BENCH_WS_RATES", "1000,2000,3000,4000,5000,10000,15000,20000").split(",")]
WARMUP_RATE, WARMUP_SECS = 1000, 3
STEP_SECS = int(os.environ.get("BENCH_WS_SECS", "10"))
PAIRS = int(os.environ.get("BENCH_WS_PAIRS", "1000"))
SENDER_RATE_LIMIT = 20  # messages/s per sender, burst 40 (the server's default)
P99_TARGET_MS = 50.0
IDLE_FIRST_USER = 1_000_000  # idle sockets need no profile; chat users are 1..20,000
SCENARIOS = ("idle", "chat", "replay")
ONLY = [x.strip() for x in os.environ.get("BENCH_WS_ONLY", ",".join(SCENARIOS)).split(",") if x.strip()]
REPLAY_SOCKETS = int(os.environ.get("BENCH_WS_REPLAY_SOCKETS", "1000"))
REPLAY_MESSAGES = int(os.environ.get("BENCH_WS_REPLAY_MESSAGES", "1000"))
REPLAY_DEADLINE = int(os.environ.get("BENCH_WS_REPLAY_DEADLINE", "120"))
REPLAY_HELD = 100  # messages each recipient already holds, at or below `since`
REPLAY_PARTNERS = 10  # conversations per recipient; its messages come from all of them
REPLAY_PROCS = 4  # load generator processes at least (more above PER_PROCESS sockets each)
RSS_SAMPLE_SECS = 0.1
BEGIN, END = "<!-- bench-ws:begin -->", "<!-- bench-ws:end -->"
REPLAY_BEGIN, REPLAY_END = "<!-- bench-ws-replay:begin -->", "<!-- bench-ws-replay:end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Where this invocation's source addresses start: random, because the
# sockets of a run just before (the server closes them, so their TIME_WAIT
# is on its side) would otherwise meet the same address and port pairs, and
# a SYN that lands on one waits a second for its retry (measured: 5,000
# sockets in 6 s instead of 0.6 s on a back-to-back run).
_next_local = [random.randrange(10, 60_000)]


def local_addr():
    """A fresh loopback source address per load generator process, so no run
    meets another's TIME_WAIT ports."""
    n = _next_local[0]
    _next_local[0] += 1
    return f"127.0.{n // 250}.{n % 250 + 2}"


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def sql(statement):
    return [line for line in run(["psql", DB_URL, "-qAtc", statement]).splitlines() if line]


def prepare_database():
    run([AURUM, "migrate", "--create-database", "--database-url", DB_URL])
    have = int(sql("SELECT count(*) FROM profiles")[0])
    if have != PROFILES or int(sql("SELECT coalesce(max(id), 0) FROM profiles")[0]) != PROFILES:
        log(f"seeding {PROFILES} profiles (had {have})")
        sql("TRUNCATE profiles RESTART IDENTITY CASCADE")
        log(run([AURUM, "seed", "--profiles", str(PROFILES), "--database-url", DB_URL]).strip())


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


class RssSampler:
    """VmRSS of a process every RSS_SAMPLE_SECS on a thread of its own: the
    peak of a burst that is over before anyone looks."""

    def __init__(self, pid):
        self.pid, self.peak, self.samples = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
                self.samples += 1
            except (OSError, RuntimeError):
                return  # the process is gone
            self._stop.wait(RSS_SAMPLE_SECS)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError):
        return 0


def postgres_ticks():
    total = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/comm") as f:
                    if f.read().strip() != "postgres":
                        continue
            except OSError:
                continue
            total += cpu_ticks(name)
    return total


def start_server(extra, log_file=None):
    """A server in a session of its own; its log goes to `log_file` (an open
    file) when given, else to this script's stderr."""
    env = dict(os.environ, DATABASE_URL=DB_URL, JWT_SECRET=SECRET, BIND=f"127.0.0.1:{HTTP_PORT}",
               WS_BIND=f"127.0.0.1:{WS_PORT}", RUST_LOG="warn", WS_PING_INTERVAL="25000",
               **{**bench_common.LOAD_TEST_LIMITS, **extra})
    server = subprocess.Popen([AURUM, "serve"], env=env, stdout=log_file, stderr=log_file,
                              **bench_common.OWN_SESSION)
    for _ in range(200):
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/health/live", timeout=1)
            return server
        except OSError:
            time.sleep(0.1)
    server.terminate()
    raise SystemExit("the server did not come up")


def stop_server(server):
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def loadgen(args):
    return subprocess.Popen([LOADGEN, *args], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, JWT_SECRET=SECRET), **bench_common.OWN_SESSION)


def read_json(proc, what):
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise SystemExit(f"aurum-loadgen ({what}) ended without a report (exit {proc.returncode})")
    return json.loads(line)


def idle_case(sockets, transport):
    url = URLS[transport]
    server = start_server({"MAX_CONNECTIONS": "20"})
    try:
        # Warm-up: a few sockets come and go (arbiters, registry shards and
        # the JWT key are live), then the baseline with no socket open.
        warm = loadgen(["idle", "--url", url, "--first-user", str(IDLE_FIRST_USER + 900_000),
                        "--sockets", "50", "--hold-secs", "1", "--local-addr", local_addr()])
        warm.communicate(timeout=60)
        time.sleep(3)
        before = rss_kib(server.pid)
        procs = math.ceil(sockets / PER_PROCESS)
        shares = [sockets // procs + (1 if i < sockets % procs else 0) for i in range(procs)]
        gens, first = [], IDLE_FIRST_USER
        for share in shares:
            gens.append(loadgen(["idle", "--url", url, "--first-user", str(first), "--sockets", str(share),
                                 "--hold-secs", str(HOLD + 3), "--connect-concurrency", str(CONNECT_CONCURRENCY),
                                 "--local-addr", local_addr()]))
            first += share
        started = [read_json(g, "idle") for g in gens]
        connected = rss_kib(server.pid)
        established = sum(r["established"] for r in started)
        failed = sum(r["failed"] for r in started)
        span_ms = max(r["end_unix_ms"] for r in started) - min(r["start_unix_ms"] for r in started)
        per_sec = established / (span_ms / 1000) if span_ms > 0 else 0.0
        failures = {}
        for r in started:
            for kind, n in r["failures"].items():
                failures[kind] = failures.get(kind, 0) + n
        log(f"idle {transport} {sockets}: {established} established in {span_ms} ms, {failed} failed {failures or ''}")
        # Measure HOLD - 1 s after the last socket connected (a ping round,
        # 25 s, has passed); the load generators hold 3 s longer than that.
        time.sleep(max(0.0, HOLD - 1 - (time.time() * 1000 - max(r["end_unix_ms"] for r in started)) / 1000))
        after = rss_kib(server.pid)
        fds = fd_count(server.pid)
        held = [read_json(g, "idle hold") for g in gens]
        for g in gens:
            g.wait(timeout=60)
        open_at_end = sum(r["open_at_end"] for r in held)
        pings = sum(r["pings_answered"] for r in held)
    finally:
        stop_server(server)
    return {
        "transport": transport, "sockets": sockets, "procs": procs, "established": established, "failed": failed, "failures": failures,
        "per_sec": per_sec, "connect_ms": span_ms, "before": before, "connected": connected, "after": after,
        "per_socket": (after - before) / sockets, "open_at_end": open_at_end, "pings": pings, "fds": fds,
    }


def chat_steps(transport):
    url = URLS[transport]
    sql("TRUNCATE messages, conversation_reads, conversations RESTART IDENTITY CASCADE")
    server = start_server({})
    rows = []
    try:
        # Warm-up (not reported): every pair's conversation exists, the
        # server's statements are prepared; the steps then measure steady state.
        pairs = max(PAIRS, math.ceil(max(RATES) / SENDER_RATE_LIMIT))
        log(f"chat {transport}: warm-up, {pairs} pairs at {WARMUP_RATE} msg/s for {WARMUP_SECS} s")
        warm = loadgen(["chat", "--url", url, "--pairs", str(pairs), "--first-user", "1",
                        "--rate", str(WARMUP_RATE), "--secs", str(WARMUP_SECS), "--local-addr", local_addr()])
        warm.communicate(timeout=120)
        time.sleep(2)
        for rate in RATES:
            pairs = max(PAIRS, math.ceil(rate / SENDER_RATE_LIMIT))
            log(f"chat {transport}: {rate:,} msg/s offered, {pairs} pairs, {STEP_SECS} s")
            gen = loadgen(["chat", "--url", url, "--pairs", str(pairs), "--first-user", "1",
                           "--rate", str(rate), "--secs", str(STEP_SECS), "--local-addr", local_addr()])
            read_json(gen, "chat")
            ticks0 = (cpu_ticks(server.pid), postgres_ticks(), cpu_ticks(gen.pid), time.monotonic())
            done = read_json(gen, "chat report")
            ticks1 = (cpu_ticks(server.pid), postgres_ticks(), cpu_ticks(gen.pid), time.monotonic())
            gen.wait(timeout=60)
            wall = ticks1[3] - ticks0[3]
            cpu = [(b - a) / CLK_TCK / wall * 100 for a, b in zip(ticks0[:3], ticks1[:3])]
            done["pairs"] = pairs
            done["cpu"] = cpu
            done["transport"] = transport
            rows.append(done)
            d = done["delivery_ms"]
            log(f"  sent {done['sent']:,}, ok {done['acked_ok']:,} ({done['acked_ok_per_sec']:,.0f}/s), errors {done['ack_errors']}, delivered "
                f"{done['delivered_pct']}%, p50 {d['p50']} ms, p99 {d['p99']} ms, ack p99 {done['ack_ms']['p99']} ms, "
                f"CPU server {cpu[0]:.0f}% pg {cpu[1]:.0f}% loadgen {cpu[2]:.0f}%")
            time.sleep(3)
        stored = int(sql("SELECT count(*) FROM messages")[0])
    finally:
        stop_server(server)
    return rows, stored


def psql_script(script):
    """Runs a multi-statement script (one statement at a time, stopping at
    the first error) from a session of its own, as bulk loads here are."""
    subprocess.run(["psql", DB_URL, "-qAt", "-v", "ON_ERROR_STOP=1", "-f", "-"], input=script, check=True,
                   capture_output=True, text=True, **bench_common.OWN_SESSION)


def replay_messages(first_k, last_k, sockets):
    """Messages first_k..last_k (1-based, per recipient) of recipients
    1..sockets, as the server's store_messages writes them: ids from
    messages_id_seq taken in time order, interleaved across recipients as
    live traffic is (k-th message of every recipient, then the next), each
    from one of the recipient's partners in turn; no client_id (the load
    generator's chat sends none)."""
    return f"""
INSERT INTO messages (id, conversation_id, sender_id, body, client_id, created_at)
SELECT nextval('messages_id_seq'), o.conversation_id, o.sender, o.body, NULL, o.created_at
FROM (SELECT c.id AS conversation_id, c.user_b AS sender,
             'replay ' || k || ' to ' || r || ' ' || repeat('x', 40) AS body,
             now() - interval '1 day' + ((k - 1) * {sockets} + r) * interval '1 millisecond' AS created_at
      FROM generate_series({first_k}, {last_k}) AS k
      CROSS JOIN generate_series(1, {sockets}) AS r
      JOIN conversations c ON c.user_a = r AND c.user_b = {sockets} + 1 + (k - 1) % {REPLAY_PARTNERS}
      ORDER BY k, r OFFSET 0) o;
"""


def seed_replay(sockets, missed):
    """Recipients 1..sockets, each with REPLAY_PARTNERS conversations (the
    partners are users sockets+1..sockets+REPLAY_PARTNERS), REPLAY_HELD
    messages it holds and `missed` it missed. Returns `since`: the last id
    every recipient holds, below all the messages it missed."""
    if sockets + REPLAY_PARTNERS > PROFILES:
        raise SystemExit(f"BENCH_WS_REPLAY_SOCKETS: at most {PROFILES - REPLAY_PARTNERS} (profiles)")
    started = time.monotonic()
    psql_script(f"""
BEGIN;
TRUNCATE messages, conversation_reads, conversations RESTART IDENTITY CASCADE;
INSERT INTO conversations (user_a, user_b, created_at)
SELECT r, {sockets} + p, now() - interval '2 days'
FROM generate_series(1, {sockets}) AS r CROSS JOIN generate_series(1, {REPLAY_PARTNERS}) AS p
ORDER BY r, p;
{replay_messages(1, REPLAY_HELD, sockets)}
COMMIT;
""")
    since = int(sql("SELECT coalesce(max(id), 0) FROM messages")[0])
    psql_script(f"""
BEGIN;
{replay_messages(REPLAY_HELD + 1, REPLAY_HELD + missed, sockets)}
-- As every stored message leaves its conversation.
UPDATE conversations c SET last_message_id = m.id, last_message_at = m.created_at
FROM (SELECT DISTINCT ON (conversation_id) conversation_id, id, created_at
      FROM messages ORDER BY conversation_id, id DESC) m
WHERE c.id = m.conversation_id;
COMMIT;
-- Statistics and the visibility map as a table that has lived a while has them.
VACUUM (ANALYZE) conversations, messages;
""")
    after = int(sql(f"SELECT count(*) FROM messages WHERE id > {since}")[0])
    if after != sockets * missed:
        raise SystemExit(f"replay seed: {after:,} messages after since {since}, expected {sockets * missed:,}")
    log(f"replay: seeded {sockets:,} recipients x ({REPLAY_HELD} held + {missed:,} missed) in "
        f"{time.monotonic() - started:.1f} s, since = {since:,}")
    return since


def percentile(sorted_values, p):
    """Nearest rank, as the load generator's stats do."""
    if not sorted_values:
        return None
    rank = math.ceil(p * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def replay_case():
    sockets, missed = REPLAY_SOCKETS, REPLAY_MESSAGES
    since = seed_replay(sockets, missed)
    procs = min(sockets, max(REPLAY_PROCS, math.ceil(sockets / PER_PROCESS)))
    shares = [sockets // procs + (1 if i < sockets % procs else 0) for i in range(procs)]
    server_log = open(os.path.join(TARGET, "bench-ws-replay-server.log"), "w+")
    server = start_server({}, log_file=server_log)
    try:
        # Warm-up (not reported): sockets of users with no conversation come
        # and go with the same `since`, so the pool's connections and the
        # replay query's plan exist before the storm.
        warm = loadgen(["replay", "--url", WS_URL, "--first-user", str(IDLE_FIRST_USER + 900_000),
                        "--sockets", "20", "--messages", "0", "--since", str(since), "--deadline-secs", "30",
                        "--local-addr", local_addr()])
        warm.communicate(timeout=60)
        time.sleep(2)
        before = rss_kib(server.pid)
        log(f"replay: {sockets:,} sockets x {missed:,} missed messages, {procs} load generators, "
            f"RSS before {before / 1024:.1f} MiB")
        with RssSampler(server.pid) as sampler:
            ticks0 = (cpu_ticks(server.pid), postgres_ticks(), time.monotonic())
            gens, first = [], 1
            for share in shares:
                gens.append(loadgen(["replay", "--url", WS_URL, "--first-user", str(first), "--sockets", str(share),
                                     "--messages", str(missed), "--since", str(since),
                                     "--deadline-secs", str(REPLAY_DEADLINE), "--local-addr", local_addr()]))
                first += share
            gen_ticks = [0] * len(gens)
            reports = []
            for i, g in enumerate(gens):
                reports.append(read_json(g, "replay"))
                gen_ticks[i] = cpu_ticks(g.pid)
            ticks1 = (cpu_ticks(server.pid), postgres_ticks(), time.monotonic())
        for g in gens:
            g.wait(timeout=60)
        hwm = rss_kib(server.pid, "VmHWM")
        after = rss_kib(server.pid)
        alive = server.poll() is None
    finally:
        stop_server(server)
    server_log.seek(0)
    mailbox_full = sum(1 for line in server_log if "mailbox full" in line)
    server_log.close()

    total = {key: sum(r[key] for r in reports) for key in (
        "connected", "connect_failed", "complete", "delivered", "expected", "duplicates", "out_of_order",
        "foreign", "extra", "resync_required", "error_events", "closed_by_server", "closed_after_complete",
        "incomplete_open")}
    how, failures = {}, {}
    for r in reports:
        for kind, n in r["closed_by_server_how"].items():
            how[kind] = how.get(kind, 0) + n
        for kind, n in r["connect_failures"].items():
            failures[kind] = failures.get(kind, 0) + n
    start = min(r["start_unix_ms"] for r in reports)
    lasts = [r["last_message_unix_ms"] for r in reports if r["last_message_unix_ms"] is not None]
    span_ms = max(lasts) - start if lasts else None
    closes = [r["last_close_unix_ms"] for r in reports if r["last_close_unix_ms"] is not None]
    last_close_ms = max(closes) - start if closes else None
    complete_ms = sorted(t for r in reports for t in r["complete_ms"])
    wall = ticks1[2] - ticks0[2]
    cpu = [(ticks1[0] - ticks0[0]) / CLK_TCK / wall * 100, (ticks1[1] - ticks0[1]) / CLK_TCK / wall * 100,
           sum(gen_ticks) / CLK_TCK / wall * 100]
    row = dict(total, sockets=sockets, missed=missed, since=since, procs=procs, span_ms=span_ms,
               per_sec=(total["delivered"] / (span_ms / 1000) if span_ms else 0.0),
               complete_p50=percentile(complete_ms, 0.50), complete_p99=percentile(complete_ms, 0.99),
               complete_max=complete_ms[-1] if complete_ms else None, closed_how=how, connect_failures=failures,
               last_close_ms=last_close_ms, timed_out=any(r["timed_out"] for r in reports), before=before,
               # The kernel updates VmHWM lazily (it can read below a VmRSS
               # sampled earlier); the larger of the two is the peak.
               peak=max(sampler.peak, hwm), sampled_peak=sampler.peak, hwm=hwm, after=after,
               samples=sampler.samples, alive=alive, mailbox_full=mailbox_full, cpu=cpu,
               first_error=next((r["first_error"] for r in reports if r["first_error"]), None))
    log(f"replay: {total['complete']:,} of {sockets:,} sockets complete, {total['delivered']:,} of "
        f"{total['expected']:,} messages in {ms(span_ms)} ms ({row['per_sec']:,.0f}/s), complete p50 "
        f"{ms(row['complete_p50'])} ms p99 {ms(row['complete_p99'])} ms, out of order {total['out_of_order']}, "
        f"duplicates {total['duplicates']}, closed by server {total['closed_by_server']:,} {how or ''} "
        f"(last {ms(last_close_ms)} ms), open at deadline {total['incomplete_open']:,}, resync "
        f"{total['resync_required']}, connect failed {total['connect_failed']} {failures or ''}, RSS "
        f"{before / 1024:.1f} -> sampled peak {sampler.peak / 1024:.1f} MiB (VmHWM {hwm / 1024:.1f}), "
        f"'mailbox full' warnings {mailbox_full:,}, CPU server {cpu[0]:.0f}% pg {cpu[1]:.0f}% "
        f"loadgen {cpu[2]:.0f}%{'' if alive else ', THE SERVER DIED'}")
    return row


def machine():
    return bench_common.machine(sql("SHOW server_version")[0])


def load_average():
    """The 1-minute load average: how busy the machine was beside the benchmark."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


LOAD_AT_START = load_average()


def ms(value):
    return "-" if value is None else f"{value:,.1f}"


def passes(row):
    p99 = row["delivery_ms"]["p99"]
    return (p99 is not None and p99 < P99_TARGET_MS and row["delivered_pct"] >= 99.9
            and not row["ack_errors"] and row["sent"] >= row["scheduled"])


def write_report(idle, chat, stored):
    lines = [
        BEGIN,
        "## Socket.IO sockets and chat (`make bench-ws`)",
        "",
        f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}; 1-minute load average "
        f"{LOAD_AT_START:.1f} at the start, {load_average():.1f} at the end.",
        "Command: `make bench-ws` (release build; `scripts/bench_ws.py` drives `target/release/aurum serve` "
        "and `target/release/aurum-loadgen`, which speaks Engine.IO v4 / Socket.IO v5 as raw frames, over "
        "WebSocket or over long-polling on its own HTTP/1.1 keep-alive client; the server and "
        "each load generator run in a session of their own)"
        + (f", with `{knobs()}`" if knobs() else "") + ". "
        "The machine is shared and noisy: its 2 cores run the server, PostgreSQL and the load generators "
        "together (and whatever else runs there), so treat the figures as indicative.",
        "",
        f"### Idle sockets (one node, held {HOLD} s with heartbeats)",
        "",
        f"A fresh server per row (`RUST_LOG=warn WS_PING_INTERVAL=25000 MAX_CONNECTIONS=20`); RSS before = "
        "VmRSS after start-up and a 50-socket warm-up, with no socket open; RSS after = VmRSS "
        f"{HOLD - 1} s after the last socket connected (after a ping round), all sockets open; the load "
        f"generators hold {HOLD + 3} s and report how many sockets are still open then (open at end). Load generator processes hold at most "
        f"{PER_PROCESS:,} sockets each, each from its own 127.0.0.x, {CONNECT_CONCURRENCY} handshakes in "
        "flight per process. RSS connected = VmRSS as soon as all are connected; RSS per socket = (RSS after "
        "hold - RSS before) / sockets. Established/s = sockets / (last CONNECT answer - first connect attempt). "
        "A polling socket (`transport=polling`, no upgrade) is what an idle client keeps: the handshake GET, "
        "`POST 40{auth}` and the GET that brought the CONNECT answer done, then one keep-alive connection with a "
        "long-poll GET waiting (the server answers it with a PING every 25 s; the pong is POSTed on the same "
        "connection, then the next GET waits). Pongs sent counts WebSocket pongs or POSTed ones.",
        "",
        "| transport | sockets | loadgen procs | established | failed | established/s | RSS before MiB | RSS connected MiB "
        "| RSS after hold MiB | RSS per socket KiB | open at end | pongs sent | server fds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in idle:
        failed = f"{r['failed']:,}" + (f" ({', '.join(f'{k}: {v}' for k, v in r['failures'].items())})"
                                       if r["failures"] else "")
        lines.append(f"| {r['transport']} | {r['sockets']:,} | {r['procs']} | {r['established']:,} | {failed} | {r['per_sec']:,.0f} | "
                     f"{r['before'] / 1024:.1f} | {r['connected'] / 1024:.1f} | {r['after'] / 1024:.1f} | {r['per_socket']:.2f} | "
                     f"{r['open_at_end']:,} | {r['pings']:,} | {r['fds']:,} |")
    lines += [
        "",
        f"### Chat ({PAIRS:,} sender/recipient pairs, persisted, acks on, {STEP_SECS} s per rate)",
        "",
        "Open loop: message k is due at t0 + k/rate, sent by sender k mod pairs with an ack, whatever is "
        "outstanding. Delivery latency = arrival of `new_message` at the recipient - send time; ack latency = "
        "arrival of the ack - send time (same process, monotonic clock). One server (`RUST_LOG=warn`, default "
        f"pool) for all rates; the same pairs throughout, after an unreported warm-up ({WARMUP_SECS} s at "
        f"{WARMUP_RATE:,} msg/s) that creates their conversations, so the steps measure steady state. "
        "Persisted msg/s = ok acks / (last ack - first send). The server allows "
        f"{SENDER_RATE_LIMIT} msg/s per sender (burst 40), so {PAIRS:,} senders can offer at most "
        f"{PAIRS * SENDER_RATE_LIMIT:,} msg/s; rates above that use more pairs (the pairs column). "
        "CPU is percent of one core during the sending and draining window (PostgreSQL = all its processes). "
        "Each transport has a server of its own (messages truncated before it). Over polling every socket keeps "
        "a long-poll GET waiting on one keep-alive connection, and POSTs on a second one, one POST at a time, "
        "what queued while the last was out going together (as engine.io-client batches); acks and "
        "`new_message` come back on the GETs.",
        "",
        "| transport | offered msg/s | pairs | sent | achieved send msg/s | acked ok | persisted msg/s | ack errors | delivered % "
        "| delivery p50 ms | delivery p99 ms | delivery max ms | ack p99 ms | CPU server / PostgreSQL / loadgen % |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in chat:
        errors = ", ".join(f"{k}: {v:,}" for k, v in r["ack_errors"].items()) or "-"
        if r["ack_missing"]:
            errors += f"; no ack: {r['ack_missing']:,}"
        cpu = " / ".join(f"{c:.0f}" for c in r["cpu"])
        lines.append(f"| {r['transport']} | {r['offered_rate']:,.0f} | {r['pairs']:,} | {r['sent']:,} | {r['achieved_send_rate']:,.0f} | "
                     f"{r['acked_ok']:,} | {r['acked_ok_per_sec']:,.0f} | {errors} | {r['delivered_pct']:.2f} | {ms(r['delivery_ms']['p50'])} | "
                     f"{ms(r['delivery_ms']['p99'])} | {ms(r['delivery_ms']['max'])} | {ms(r['ack_ms']['p99'])} | "
                     f"{cpu} |")
    lines.append("")
    for transport in dict.fromkeys(r["transport"] for r in chat):
        best = max((r["offered_rate"] for r in chat if r["transport"] == transport and passes(r)), default=None)
        lines.append(
            f"{transport}: highest offered rate with delivery p99 under {P99_TARGET_MS:.0f} ms (all sent, >= 99.9 % "
            f"delivered, no ack errors): **{best:,.0f} msg/s**; messages stored in PostgreSQL at the end of its "
            f"steps: {stored[transport]:,}." if best is not None else
            f"{transport}: no offered rate kept delivery p99 under {P99_TARGET_MS:.0f} ms with everything "
            f"delivered; messages stored in PostgreSQL at the end of its steps: {stored[transport]:,}.")
    lines += side_by_side(idle, chat)
    lines += [
        "",
        "Targets (issue #3): at most 5 KiB of server RSS per idle socket; at least 5,000 sockets established/s; "
        "15,000 persisted msg/s with p99 under 50 ms.",
        END,
    ]
    block = "\n".join(lines)
    bench_common.write_block(ROOT, BEGIN, END, block)
    print(block)


def side_by_side(idle, chat):
    """The two transports' figures next to each other, when both ran."""
    transports = list(dict.fromkeys([r["transport"] for r in idle] + [r["transport"] for r in chat]))
    if len(transports) < 2:
        return []
    lines = ["", "### The transports side by side", "",
             "| idle sockets | " + " | ".join(f"{t} RSS per socket KiB" for t in transports) + " |",
             "|---:|" + "---:|" * len(transports)]
    for sockets in dict.fromkeys(r["sockets"] for r in idle):
        cells = [next((f"{r['per_socket']:.2f}" for r in idle if r["sockets"] == sockets and r["transport"] == t), "-")
                 for t in transports]
        lines.append(f"| {sockets:,} | " + " | ".join(cells) + " |")
    lines += ["", "| offered msg/s | " + " | ".join(f"{t} delivery p50 / p99 ms (delivered %)" for t in transports)
              + " |", "|---:|" + "---|" * len(transports)]
    for rate in dict.fromkeys(r["offered_rate"] for r in chat):
        cells = [next((f"{ms(r['delivery_ms']['p50'])} / {ms(r['delivery_ms']['p99'])} ({r['delivered_pct']:.2f})"
                       for r in chat if r["offered_rate"] == rate and r["transport"] == t), "-") for t in transports]
        lines.append(f"| {rate:,.0f} | " + " | ".join(cells) + " |")
    return lines


SERVER_PATHS = ["src", "actors", "schema", "migrations", "Cargo.lock"]


def label():
    """Names the server a replay row measured: BENCH_WS_LABEL, else the last
    commit that changed the server's code (a commit that only touches the
    benchmark measures the same server), marked when the tree differs."""
    if os.environ.get("BENCH_WS_LABEL"):
        return os.environ["BENCH_WS_LABEL"].replace("|", "/")
    try:
        commit = run(["git", "-C", ROOT, "log", "-1", "--format=%h", "--", *SERVER_PATHS]).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", *SERVER_PATHS]).returncode != 0
    return f"`{commit}`" + (" + changes" if dirty else "")


def knobs():
    """The BENCH_WS_* settings of this run, as they would be typed."""
    set_ = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_WS_") and k != "BENCH_WS_LABEL"]
    return " ".join(set_)


def replay_row(r):
    closed = f"{r['closed_by_server']:,}"
    if r["closed_how"]:
        closed += f" ({', '.join(f'{k}: {v:,}' for k, v in sorted(r['closed_how'].items()))})"
    if r["last_close_ms"] is not None:
        closed += f", the last {ms(r['last_close_ms'])} ms after the first connect"
    if r["closed_after_complete"]:
        closed += f"; after complete: {r['closed_after_complete']:,}"
    other = [f"{name}: {r[key]:,}" for key, name in (
        ("connect_failed", "connect failed"), ("resync_required", "resync_required"),
        ("error_events", "error events"), ("foreign", "foreign"), ("extra", "extra"))
        if r[key]]
    if not r["alive"]:
        other.append("server died")
    cpu = " / ".join(f"{c:.0f}" for c in r["cpu"])
    run_cell = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}" + (f", `{knobs()}`" if knobs() else "")
    return (f"| {label()} | {run_cell} | {r['sockets']:,} x {r['missed']:,} | {r['procs']} | {r['connected']:,} | "
            f"**{r['complete']:,}** | {r['delivered']:,} / {r['expected']:,} | {ms(r['span_ms'])} | "
            f"{r['per_sec']:,.0f} | {ms(r['complete_p50'])} / {ms(r['complete_p99'])} | "
            f"{r['out_of_order']:,} | {r['duplicates']:,} | {closed} | {r['incomplete_open']:,} | "
            f"{'; '.join(other) or '-'} | {r['before'] / 1024:.1f} | {r['peak'] / 1024:.1f} | "
            f"{cpu} |")


def write_replay_report(r):
    header = ("| server | run (UTC) | sockets x missed | loadgen procs | connected | complete | delivered / expected "
              "| first connect to last message ms | messages/s | complete p50 / p99 ms | out of order | duplicates "
              "| closed by server | open at deadline | other | RSS before MiB | peak RSS MiB "
              "| CPU server / PostgreSQL / loadgen % |")
    rule = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---|"
    # Rows of other servers stay, so that a before and an after sit side by side.
    this = label()
    kept = []
    old = bench_common.read_block(ROOT, REPLAY_BEGIN, REPLAY_END)
    if old and rule in old:
        for line in old.split(rule, 1)[1].lstrip("\n").splitlines():
            if not line.startswith("| "):
                break
            if line.split("|")[1].strip() != this:
                kept.append(line)
    lines = [
        REPLAY_BEGIN,
        "## Replay on reconnect (`make bench-ws`)",
        "",
        f"Latest run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}.",
        "Command: `make bench-ws` (all of it), or `BENCH_WS_ONLY=replay make bench-ws` for this table alone "
        "(the run column shows the settings a row ran with). A reconnect storm with a backlog: each recipient holds "
        f"{REPLAY_HELD} messages and missed the next ones (the sockets x missed column), from {REPLAY_PARTNERS} "
        "partners each, interleaved across recipients as live traffic would be; inserted with SQL as "
        "`store_messages` writes them (ids from `messages_id_seq` in time order, `last_message_id` / "
        "`last_message_at` set), then `VACUUM (ANALYZE)`. A fresh server (`RUST_LOG=warn`, default pool), an "
        "unreported warm-up of 20 sockets with nothing to replay; then every recipient connects at once "
        f"(`aurum-loadgen replay`, at least {REPLAY_PROCS} processes, each from its own 127.0.0.x, all handshakes "
        "in flight together) with `auth: { token, since }`, `since` = the last id they hold, and counts "
        "`new_message` until it has every message it missed, within "
        f"{REPLAY_DEADLINE} s of its first connect. Complete = sockets with every missed message (should be all); "
        "out of order = ids below one already received (or at or below `since`); duplicates = ids received twice (both should be 0); "
        "closed by server = sockets the server ended before they were complete, by how they ended "
        "(`reset_without_close`: the TCP connection dropped without a WebSocket close, as the server drops a slow "
        "consumer); open at deadline = incomplete sockets still open when the load generator gave up. "
        "Messages/s = distinct messages delivered / (last message - first connect attempt); complete p50 / p99 = "
        "each complete socket's time from its connect attempt to its last missed message. RSS before = VmRSS "
        "after the warm-up; peak RSS = the larger of the largest VmRSS sampled every "
        f"{RSS_SAMPLE_SECS * 1000:.0f} ms during the replay and VmHWM (the kernel's peak since start-up, which it "
        "updates lazily) read after it. CPU is percent of one core from the first connect to the last report (PostgreSQL = all its "
        "processes). Rows are kept across runs by their server (`BENCH_WS_LABEL`, default the last commit that changed the "
        "server's code): a run replaces its own server's row.",
        "",
        header,
        rule,
        *kept,
        replay_row(r),
        "",
        f"This run's server log had {r['mailbox_full']:,} \"closing socket: mailbox full\" warnings "
        "(`bench-ws-replay-server.log` in the cargo target directory).",
        REPLAY_END,
    ]
    block = "\n".join(lines)
    bench_common.write_block(ROOT, REPLAY_BEGIN, REPLAY_END, block, after=END)
    print(block)


def main():
    for binary in (AURUM, LOADGEN):
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"{binary} missing: run `make bench-ws` (it builds both)")
    unknown = [x for x in ONLY if x not in SCENARIOS]
    if unknown or not ONLY:
        raise SystemExit(f"BENCH_WS_ONLY: a comma-separated subset of {','.join(SCENARIOS)}, not {unknown or 'nothing'}")
    prepare_database()
    unknown = [x for x in TRANSPORTS if x not in URLS]
    if unknown or not TRANSPORTS:
        raise SystemExit(f"BENCH_WS_TRANSPORTS: a comma-separated subset of {','.join(URLS)}, not {unknown or 'nothing'}")
    idle, chat, stored = [], [], {}
    if "idle" in ONLY:
        for transport in TRANSPORTS:
            for sockets in IDLE_COUNTS:
                log(f"idle: {sockets:,} sockets over {transport}")
                idle.append(idle_case(sockets, transport))
    if "chat" in ONLY:
        for transport in TRANSPORTS:
            rows, stored[transport] = chat_steps(transport)
            chat += rows
    if "idle" in ONLY and "chat" in ONLY:
        write_report(idle, chat, stored)
    elif "idle" in ONLY or "chat" in ONLY:
        log("idle and chat figures are written to docs/benchmarks.md only when both run")
    if "replay" in ONLY:
        write_replay_report(replay_case())


if __name__ == "__main__":
    main()
