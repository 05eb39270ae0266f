"""The Socket.IO benchmark (`make bench-ws`).

Idle: for 5,000 / 10,000 / 19,500 authenticated sockets on one fresh server
(release, RUST_LOG=warn, WS_PING_INTERVAL=25000, MAX_CONNECTIONS=20 so that
sockets + DB pool + listeners stay under the 20,000-fd limit), the server's
RSS after warm-up with no socket, the sockets connected by several
`aurum-loadgen idle` processes (at most 5,000 each, each from its own
127.0.0.x), held 30 s with heartbeats, RSS again: RSS per socket and
sockets established per second.

Chat: 1,000 sender/recipient pairs (`aurum-loadgen chat`) at rising offered
rates, persisted with acks; delivered %, delivery and ack latency, and the
CPU each side used.

The tables go to docs/benchmarks.md between the bench-ws markers, with the
command and the machine. Knobs: BENCH_WS_IDLE (socket counts),
BENCH_WS_RATES (msg/s), BENCH_WS_SECS, BENCH_WS_PAIRS, BENCH_WS_HOLD.
"""

import datetime as dt
import json
import math
import os
import random
import re
import subprocess
import sys
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
BEGIN, END = "<!-- bench-ws:begin -->", "<!-- bench-ws:end -->"
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


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


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


def start_server(extra):
    env = dict(os.environ, DATABASE_URL=DB_URL, JWT_SECRET=SECRET, BIND=f"127.0.0.1:{HTTP_PORT}",
               WS_BIND=f"127.0.0.1:{WS_PORT}", RUST_LOG="warn", WS_PING_INTERVAL="25000", **extra)
    server = subprocess.Popen([AURUM, "serve"], env=env, **bench_common.OWN_SESSION)
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


def idle_case(sockets):
    server = start_server({"MAX_CONNECTIONS": "20"})
    try:
        # Warm-up: a few sockets come and go (arbiters, registry shards and
        # the JWT key are live), then the baseline with no socket open.
        warm = loadgen(["idle", "--url", WS_URL, "--first-user", str(IDLE_FIRST_USER + 900_000),
                        "--sockets", "50", "--hold-secs", "1", "--local-addr", local_addr()])
        warm.communicate(timeout=60)
        time.sleep(3)
        before = rss_kib(server.pid)
        procs = math.ceil(sockets / PER_PROCESS)
        shares = [sockets // procs + (1 if i < sockets % procs else 0) for i in range(procs)]
        gens, first = [], IDLE_FIRST_USER
        for share in shares:
            gens.append(loadgen(["idle", "--url", WS_URL, "--first-user", str(first), "--sockets", str(share),
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
        log(f"idle {sockets}: {established} established in {span_ms} ms, {failed} failed {failures or ''}")
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
        "sockets": sockets, "procs": procs, "established": established, "failed": failed, "failures": failures,
        "per_sec": per_sec, "connect_ms": span_ms, "before": before, "connected": connected, "after": after,
        "per_socket": (after - before) / sockets, "open_at_end": open_at_end, "pings": pings, "fds": fds,
    }


def chat_steps():
    sql("TRUNCATE messages, conversation_reads, conversations RESTART IDENTITY CASCADE")
    server = start_server({})
    rows = []
    try:
        # Warm-up (not reported): every pair's conversation exists, the
        # server's statements are prepared; the steps then measure steady state.
        pairs = max(PAIRS, math.ceil(max(RATES) / SENDER_RATE_LIMIT))
        log(f"chat: warm-up, {pairs} pairs at {WARMUP_RATE} msg/s for {WARMUP_SECS} s")
        warm = loadgen(["chat", "--url", WS_URL, "--pairs", str(pairs), "--first-user", "1",
                        "--rate", str(WARMUP_RATE), "--secs", str(WARMUP_SECS), "--local-addr", local_addr()])
        warm.communicate(timeout=120)
        time.sleep(2)
        for rate in RATES:
            pairs = max(PAIRS, math.ceil(rate / SENDER_RATE_LIMIT))
            log(f"chat: {rate:,} msg/s offered, {pairs} pairs, {STEP_SECS} s")
            gen = loadgen(["chat", "--url", WS_URL, "--pairs", str(pairs), "--first-user", "1",
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


def machine():
    return bench_common.machine(sql("SHOW server_version")[0])


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
        f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}.",
        "Command: `make bench-ws` (release build; `scripts/bench_ws.py` drives `target/release/aurum serve` "
        "and `target/release/aurum-loadgen`, which speaks Engine.IO v4 / Socket.IO v5 as raw frames; the server and "
        "each load generator run in a session of their own). "
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
        "hold - RSS before) / sockets. Established/s = sockets / (last CONNECT answer - first connect attempt).",
        "",
        "| sockets | loadgen procs | established | failed | established/s | RSS before MiB | RSS connected MiB "
        "| RSS after hold MiB | RSS per socket KiB | open at end | pongs sent | server fds |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in idle:
        failed = f"{r['failed']:,}" + (f" ({', '.join(f'{k}: {v}' for k, v in r['failures'].items())})"
                                       if r["failures"] else "")
        lines.append(f"| {r['sockets']:,} | {r['procs']} | {r['established']:,} | {failed} | {r['per_sec']:,.0f} | "
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
        "CPU is percent of one core during the sending and draining window (PostgreSQL = all its processes).",
        "",
        "| offered msg/s | pairs | sent | achieved send msg/s | acked ok | persisted msg/s | ack errors | delivered % "
        "| delivery p50 ms | delivery p99 ms | delivery max ms | ack p99 ms | CPU server / PostgreSQL / loadgen % |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in chat:
        errors = ", ".join(f"{k}: {v:,}" for k, v in r["ack_errors"].items()) or "-"
        if r["ack_missing"]:
            errors += f"; no ack: {r['ack_missing']:,}"
        cpu = " / ".join(f"{c:.0f}" for c in r["cpu"])
        lines.append(f"| {r['offered_rate']:,.0f} | {r['pairs']:,} | {r['sent']:,} | {r['achieved_send_rate']:,.0f} | "
                     f"{r['acked_ok']:,} | {r['acked_ok_per_sec']:,.0f} | {errors} | {r['delivered_pct']:.2f} | {ms(r['delivery_ms']['p50'])} | "
                     f"{ms(r['delivery_ms']['p99'])} | {ms(r['delivery_ms']['max'])} | {ms(r['ack_ms']['p99'])} | "
                     f"{cpu} |")
    best = max((r["offered_rate"] for r in chat if passes(r)), default=None)
    lines += [
        "",
        (f"Highest offered rate with delivery p99 under {P99_TARGET_MS:.0f} ms (all sent, >= 99.9 % delivered, "
         f"no ack errors): **{best:,.0f} msg/s**." if best is not None else
         f"No offered rate kept delivery p99 under {P99_TARGET_MS:.0f} ms with everything delivered."),
        f"Messages stored in PostgreSQL at the end: {stored:,}.",
        "",
        "Targets (issue #3): at most 5 KiB of server RSS per idle socket; at least 5,000 sockets established/s; "
        "15,000 persisted msg/s with p99 under 50 ms.",
        END,
    ]
    block = "\n".join(lines)
    bench_common.write_block(ROOT, BEGIN, END, block)
    print(block)


def main():
    for binary in (AURUM, LOADGEN):
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"{binary} missing: run `make bench-ws` (it builds both)")
    prepare_database()
    idle = []
    for sockets in IDLE_COUNTS:
        log(f"idle: {sockets:,} sockets")
        idle.append(idle_case(sockets))
    chat, stored = chat_steps()
    write_report(idle, chat, stored)


if __name__ == "__main__":
    main()
