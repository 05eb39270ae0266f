"""The cluster benchmark (`make bench-cluster`).

Chat across nodes: two Aurum nodes (A, B) on one database and one private
Redis (the RedisBridge), and two Node.js Socket.IO servers on the
@socket.io/redis-adapter with a Redis of their own (bench/peer/, a relay
that stores nothing). At rising offered rates, in turn at each rate:
  same-node   senders and recipients on A (B up, the bus live);
  cross-node  senders on A, recipients on B;
  peer        senders on peer 1, recipients on peer 2;
each step by one `aurum-loadgen chat` process, so both ends of a message
are timed on one clock: delivered %, delivery and ack p50 / p99, and for
Aurum the bridge counters of `/health` (`bus`: received, discarded,
published, dropped) per node: the share of bus messages a node received
and threw away (the design's target is zero).

Capacity: six Aurum nodes, one Redis, 100,000 authenticated sockets
(`aurum-loadgen idle`, at most 5,000 sockets a process, each from its own
127.0.0.x), then random pairs, sender and recipient on different nodes,
chat while the rest idle: delivered %, RSS per node and per socket, Redis
memory and CPU. One node alone with as many idle sockets as each of the
six holds, measured the same way in the same run, is the per-socket
baseline.

The report goes to docs/benchmarks.md between the bench-cluster markers,
with what N nodes and a Redis would carry, computed from the figures.

Knobs: BENCH_CLUSTER_ONLY (a comma-separated subset of chat,capacity; the
report is written only when both ran), BENCH_CLUSTER_RATES (msg/s),
BENCH_CLUSTER_SECS (per step), BENCH_CLUSTER_ROUNDS (of every chat step,
3), BENCH_CLUSTER_PAIRS (chat pairs),
BENCH_CLUSTER_SOCKETS (capacity sockets, e.g. 6000 to try it quickly),
BENCH_CLUSTER_CAPACITY_PAIRS, BENCH_CLUSTER_CAPACITY_RATE (msg/s),
BENCH_CLUSTER_CAPACITY_SECS, BENCH_CLUSTER_HOLD (s idle before measuring),
BENCH_CLUSTER_CASES (a subset of same-node,cross-node,peer for the chat
phase, to compare builds; the report wants all three).
"""

import datetime as dt
import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import bench_common
import bench_ws  # process probes (RSS, CPU ticks, fds) and source addresses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
AURUM = os.path.join(TARGET, "release", "aurum")
LOADGEN = os.path.join(TARGET, "release", "aurum-loadgen")
PEER_DIR = os.path.join(ROOT, "bench", "peer")
PG = os.environ.get("AURUM_BENCH_PG", "postgres://postgres@127.0.0.1:5432")
DB_URL = f"{PG}/aurum_bench_cluster"
SECRET = "bench-cluster-secret-0123456789abcdef"
REDIS_PORT, PEER_REDIS_PORT = 6390, 6391
REDIS_PREFIX = "bench:"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BEGIN, END = "<!-- bench-cluster:begin -->", "<!-- bench-cluster:end -->"
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the server colours its log

def env_subset(name, allowed):
    """A comma-separated subset of `allowed` from the environment variable
    `name` (all of them when unset); anything else stops the run."""
    chosen = [x.strip() for x in os.environ.get(name, ",".join(allowed)).split(",") if x.strip()]
    unknown = [x for x in chosen if x not in allowed]
    if unknown or not chosen:
        raise SystemExit(f"{name}: a comma-separated subset of {','.join(allowed)}, not {unknown or 'nothing'}")
    return tuple(chosen)


SCENARIOS = ("chat", "capacity")
ONLY = env_subset("BENCH_CLUSTER_ONLY", SCENARIOS)
RATES = [int(x) for x in os.environ.get("BENCH_CLUSTER_RATES", "1000,2000,5000,10000").split(",")]
STEP_SECS = int(os.environ.get("BENCH_CLUSTER_SECS", "10"))
# Each rate's three cases run this many times (rounds outermost, so that a
# burst of the machine's noise lands in one round, not on one case); the
# targets read the round of median delivery p99.
ROUNDS = max(1, int(os.environ.get("BENCH_CLUSTER_ROUNDS", "3")))
PAIRS = int(os.environ.get("BENCH_CLUSTER_PAIRS", "1000"))
WARMUP_RATE, WARMUP_SECS = 1000, 3
SENDER_RATE_LIMIT = 20  # messages/s per sender (the server's default CHAT_RATE)
P99_SUSTAINED_MS = 50.0  # bench-ws's bar: above it a rate is queueing, not carried
# BENCH_CLUSTER_CASES narrows the chat phase to some cases, to compare two
# builds or settings quickly (the report wants all three).
ALL_CASES = ("same-node", "cross-node", "peer")
CASES = env_subset("BENCH_CLUSTER_CASES", ALL_CASES)

NODES = 6
SOCKETS = int(os.environ.get("BENCH_CLUSTER_SOCKETS", "100000"))
CAP_PAIRS = int(os.environ.get("BENCH_CLUSTER_CAPACITY_PAIRS", str(min(2000, SOCKETS // 25))))
CAP_RATE = int(os.environ.get("BENCH_CLUSTER_CAPACITY_RATE", "2000"))
CAP_SECS = int(os.environ.get("BENCH_CLUSTER_CAPACITY_SECS", "20"))
HOLD = int(os.environ.get("BENCH_CLUSTER_HOLD", "30"))  # > one 25 s ping round
PER_PROCESS = 5_000  # sockets per load generator process at most
CONNECT_CONCURRENCY = 128
# Capacity users: idle ones from 1, then the chat pairs drawn at random from
# twice as many ids after them; warm-up sockets far above (they need no profile).
PROFILES = max(104_000, SOCKETS + 2 * CAP_PAIRS)
WARM_USER = 900_000
FD_LIMIT = 20_000
# The bridge PINGs its subscriber connection every BUS_PING_INTERVAL ms. Until
# b55a122 it took Redis's answer there (["pong", ""] on a subscribed
# connection) for a failure and rebuilt the subscriber every time, each
# rebuild replaying each held user's recent messages (measured: 55 %
# delivered, 150,000 old messages on sockets that asked for none). The
# nodes run the default now; the extra step at the end of the chat phase
# still runs one cross-node step with it set explicitly, as a check.
BUS_PING = int(os.environ.get("BENCH_CLUSTER_BUS_PING", "5000"))
DELIVERY_TARGET_PCT = 100.0

# Ports: chat nodes A and B, peers, capacity nodes, the single node.
NODE_A, NODE_B = (18380, 18381), (18390, 18391)
PEER_PORTS = (18501, 18502)
CAP_BASE = 18400  # node i: REST CAP_BASE + 10 i, sockets + 1
SINGLE = (18470, 18471)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def sql(statement):
    return [line for line in run(["psql", DB_URL, "-qAtc", statement]).splitlines() if line]


def ws_url(port):
    return f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"


def prepare_database():
    run([AURUM, "migrate", "--create-database", "--database-url", DB_URL])
    have = int(sql("SELECT count(*) FROM profiles")[0])
    if have != PROFILES or int(sql("SELECT coalesce(max(id), 0) FROM profiles")[0]) != PROFILES:
        log(f"seeding {PROFILES:,} profiles (had {have:,})")
        sql("TRUNCATE profiles RESTART IDENTITY CASCADE")
        log(run([AURUM, "seed", "--profiles", str(PROFILES), "--database-url", DB_URL]).strip())
    sql("TRUNCATE messages, conversation_reads, conversations RESTART IDENTITY CASCADE")


def wait_port(port, proc, what, tries=300):
    for _ in range(tries):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not come up on {port}")


def stop(proc):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Redis:
    """A private redis-server on its own loopback port, in a session of its own."""

    def __init__(self, port):
        self.port = port
        self.dir = tempfile.mkdtemp(prefix=f"bench-cluster-redis-{port}-")
        self.log = os.path.join(TARGET, f"bench-cluster-redis-{port}.log")
        if os.path.exists(self.log):
            os.remove(self.log)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--maxclients", "1000", "--logfile", self.log],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **bench_common.OWN_SESSION)
        wait_port(port, self.proc, f"redis-server :{port}")
        for _ in range(50):
            if self.cli("PING").strip() == "PONG":
                return
            time.sleep(0.1)
        raise SystemExit(f"redis-server :{port} does not answer")

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/"

    def cli(self, *args):
        return run(["redis-cli", "-p", str(self.port), *args])

    def info(self):
        fields = {}
        for line in self.cli("INFO", "everything").splitlines():
            if ":" in line and not line.startswith("#"):
                key, value = line.strip().split(":", 1)
                fields[key] = value
        return fields

    def calls(self, info, *commands):
        """Calls of `commands` so far, from INFO commandstats."""
        total = 0
        for command in commands:
            stat = info.get(f"cmdstat_{command}")
            if stat:
                total += int(stat.split("calls=", 1)[1].split(",", 1)[0])
        return total

    def closed_clients(self):
        """Clients Redis closed for their output buffer (a subscriber that
        fell behind), from its log."""
        try:
            with open(self.log) as f:
                return sum(1 for line in f if "output buffer limits" in line)
        except OSError:
            return 0

    def stop(self):
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class Node:
    """One `aurum serve` in a session of its own, its log in the target directory."""

    def __init__(self, name, ports, extra):
        self.name, (self.http, self.ws) = name, ports
        self.log = open(os.path.join(TARGET, f"bench-cluster-{name}.log"), "w+")
        env = dict(os.environ, DATABASE_URL=DB_URL, JWT_SECRET=SECRET, BIND=f"127.0.0.1:{self.http}",
                   WS_BIND=f"127.0.0.1:{self.ws}", RUST_LOG="warn", WS_PING_INTERVAL="25000",
                   MIGRATE_ON_START="false", **{**bench_common.LOAD_TEST_LIMITS, **extra})
        self.proc = subprocess.Popen([AURUM, "serve"], env=env, stdout=self.log, stderr=self.log,
                                     **bench_common.OWN_SESSION)
        for _ in range(300):
            if self.proc.poll() is not None:
                raise SystemExit(f"node {name} exited with {self.proc.returncode} (log: {self.log.name})")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http}/health/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"node {name} did not come up")

    @property
    def url(self):
        return ws_url(self.ws)

    @property
    def pid(self):
        return self.proc.pid

    def bus(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/health", timeout=5) as answer:
            return json.load(answer)["bus"]

    def warnings(self):
        """Warnings and errors the node logged, by message."""
        self.log.flush()
        self.log.seek(0)
        counts = {}
        for line in self.log:
            line = ANSI.sub("", line)
            if " WARN " in line or " ERROR " in line:
                # `<time> WARN <target>: <message> <field>=<value>...`
                message = re.split(r" \w+=", line.split(": ", 1)[-1], maxsplit=1)[0].strip()[:80]
                counts[message] = counts.get(message, 0) + 1
        return counts

    def stop(self):
        stop(self.proc)


def cluster_env(redis, node_id):
    return {"REDIS_URL": redis.url, "REDIS_PREFIX": REDIS_PREFIX, "NODE_ID": node_id,
            "BUS_PING_INTERVAL": str(BUS_PING)}


def start_peer(port, redis, name):
    if not os.path.exists(os.path.join(PEER_DIR, "node_modules")):
        log("bench/peer: npm ci")
        run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER_DIR)
    log_file = open(os.path.join(TARGET, f"bench-cluster-{name}.log"), "w")
    proc = subprocess.Popen(["node", "server.js"], cwd=PEER_DIR, stdout=log_file, stderr=log_file,
                            env=dict(os.environ, PORT=str(port), JWT_SECRET=SECRET, REDIS_URL=redis.url,
                                     NODE_ENV="production"),
                            **bench_common.OWN_SESSION)
    wait_port(port, proc, f"peer {name}")
    return proc


def loadgen(args):
    return subprocess.Popen([LOADGEN, *args], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, JWT_SECRET=SECRET), **bench_common.OWN_SESSION)


def read_json(proc, what):
    return bench_ws.read_json(proc, what)


def ticks(pids):
    return [bench_ws.cpu_ticks(pid) for pid in pids]


def chat_args(send_url, recipient_urls, rate, secs, pairs=None, first_user=None, pairs_file=None):
    args = ["chat", "--url", send_url, "--rate", str(rate), "--secs", str(secs), "--local-addr", bench_ws.local_addr()]
    for url in recipient_urls:
        args += ["--recipient-url", url]
    if pairs_file:
        args += ["--pairs-file", pairs_file]
    else:
        args += ["--pairs", str(pairs), "--first-user", str(first_user)]
    return args


# ---------------------------------------------------------------- chat


def machine_busy_ticks():
    """Ticks all cores spent on anything but idling, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # less idle and iowait


def chat_step(case, rate, secs, setup):
    """One `aurum-loadgen chat` run of `case` at `rate`; the bus counters of
    our nodes around the whole run (connects and closes included), CPU of
    each side over the sending and draining window."""
    send_url, recipient_url, first_user, servers, redis = setup[case]
    nodes = setup["nodes"]
    bus0 = {n.name: n.bus() for n in nodes} if case != "peer" else {}
    redis0 = redis.info()
    gen = loadgen(chat_args(send_url, [recipient_url], rate, secs, pairs=setup["pairs"], first_user=first_user))
    read_json(gen, f"chat {case} connect")
    pids = [p.pid for p in servers] + [redis.proc.pid, gen.pid]
    t0, pg0, cpu0, busy0 = time.monotonic(), bench_ws.postgres_ticks(), ticks(pids), machine_busy_ticks()
    done = read_json(gen, f"chat {case}")
    t1, pg1, cpu1, busy1 = time.monotonic(), bench_ws.postgres_ticks(), ticks(pids), machine_busy_ticks()
    gen.wait(timeout=60)
    time.sleep(0.5)  # the closes' presence notices reach the bus
    redis1 = redis.info()
    wall = t1 - t0
    cpu = [(b - a) / CLK_TCK / wall * 100 for a, b in zip(cpu0, cpu1)]
    bus = {}
    if case != "peer":
        for n in nodes:
            after = n.bus()
            bus[n.name] = {k: after[k] - bus0[n.name][k] for k in ("received", "discarded", "published", "dropped")}
    row = dict(done, case=case, wall=wall, bus=bus,
               cpu_servers=sum(cpu[:len(servers)]), cpu_redis=cpu[len(servers)], cpu_loadgen=cpu[-1],
               cpu_pg=(pg1 - pg0) / CLK_TCK / wall * 100 if case != "peer" else 0.0,
               # What ran besides this step's processes (the shared machine's noise).
               cpu_others=max(0.0, ((busy1 - busy0) - (pg1 - pg0) - sum(cpu1) + sum(cpu0)) / CLK_TCK / wall * 100),
               redis_cpu_s=(cpu1[len(servers)] - cpu0[len(servers)]) / CLK_TCK,
               redis_publishes=redis.calls(redis1, "publish", "spublish") - redis.calls(redis0, "publish", "spublish"),
               redis_scripts=redis.calls(redis1, "evalsha") - redis.calls(redis0, "evalsha"))
    discarded = sum(b["discarded"] for b in bus.values())
    log(f"chat {case} {rate:,}/s: sent {row['sent']:,}/{row['scheduled']:,}, acked ok {row['acked_ok']:,} "
        f"{row['ack_errors'] or ''}, delivered {row['delivered_pct']:.2f} %, delivery p50 "
        f"{ms(row['delivery_ms']['p50'])} p99 {ms(row['delivery_ms']['p99'])} ms, ack p99 {ms(row['ack_ms']['p99'])} ms"
        + (f", bus {bus}, discarded {discarded:,}" if bus else "")
        + f", CPU servers {row['cpu_servers']:.0f}% redis {row['cpu_redis']:.0f}% pg {row['cpu_pg']:.0f}%")
    return row


def chat_phase():
    pairs = max(PAIRS, math.ceil(max(RATES) / SENDER_RATE_LIMIT))
    redis, peer_redis = Redis(REDIS_PORT), Redis(PEER_REDIS_PORT)
    nodes, peers = [], []
    try:
        nodes = [Node("a", NODE_A, dict(cluster_env(redis, "a"), MAX_CONNECTIONS="20")),
                 Node("b", NODE_B, dict(cluster_env(redis, "b"), MAX_CONNECTIONS="20"))]
        peers = [start_peer(PEER_PORTS[0], peer_redis, "peer1"), start_peer(PEER_PORTS[1], peer_redis, "peer2")]
        a, b = nodes
        setup = {
            "pairs": pairs, "nodes": nodes,
            "same-node": (a.url, a.url, 1, nodes, redis),
            "cross-node": (a.url, b.url, 1 + 2 * pairs, nodes, redis),
            "peer": (ws_url(PEER_PORTS[0]), ws_url(PEER_PORTS[1]), 1, peers, peer_redis),
        }
        # Warm-up (not reported): the pairs' conversations exist, statements
        # are prepared, the peer's JIT has run.
        for case in CASES:
            log(f"chat: warm-up {case}, {pairs:,} pairs at {WARMUP_RATE:,} msg/s for {WARMUP_SECS} s")
            send_url, recipient_url, first_user, _, _ = setup[case]
            warm = loadgen(chat_args(send_url, [recipient_url], WARMUP_RATE, WARMUP_SECS, pairs=pairs,
                                     first_user=first_user))
            warm.communicate(timeout=120)
        rows = []
        for round_no in range(1, ROUNDS + 1):
            for i, rate in enumerate(RATES):
                # Each case leads in turn, so that none always runs first
                # after a rate change (or always last, as the noise drifts).
                lead = (i + round_no - 1) % len(CASES)
                for case in CASES[lead:] + CASES[:lead]:
                    rows.append(dict(chat_step(case, rate, STEP_SECS, setup), round=round_no))
        warnings = {n.name: n.warnings() for n in nodes}
        # The same cross-node step once more on nodes with the bridge's
        # default PING interval, to show what it does (see BUS_PING).
        for n in nodes:
            n.stop()
        log(f"chat: cross-node at {RATES[0]:,} msg/s with BUS_PING_INTERVAL=5000 (the default)")
        nodes = [Node("a-default-ping", NODE_A, dict(cluster_env(redis, "a"), MAX_CONNECTIONS="20",
                                                     BUS_PING_INTERVAL="5000")),
                 Node("b-default-ping", NODE_B, dict(cluster_env(redis, "b"), MAX_CONNECTIONS="20",
                                                     BUS_PING_INTERVAL="5000"))]
        setup["nodes"] = nodes
        setup["cross-node"] = (nodes[0].url, nodes[1].url, 1 + 2 * pairs, nodes, redis)
        default_ping = chat_step("cross-node", RATES[0], STEP_SECS, setup)
        default_ping["warnings"] = {n.name: n.warnings() for n in nodes}
        stored = int(sql("SELECT count(*) FROM messages")[0])
    finally:
        for n in nodes:
            n.stop()
        for p in peers:
            stop(p)
        redis.stop()
        peer_redis.stop()
    return {"rows": rows, "pairs": pairs, "stored": stored, "warnings": warnings, "default_ping": default_ping}


# ---------------------------------------------------------------- capacity


def spread(total, parts):
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def warm_up(nodes):
    """A few sockets come and go on each node (arbiters, registry shards,
    the JWT key are live) before the baseline RSS is read."""
    gens = [loadgen(["idle", "--url", n.url, "--first-user", str(WARM_USER + 1000 * i), "--sockets", "50",
                     "--hold-secs", "1", "--local-addr", bench_ws.local_addr()]) for i, n in enumerate(nodes)]
    for g in gens:
        g.communicate(timeout=60)
    time.sleep(3)


def connect_idle(nodes, per_node, hold_secs):
    """`per_node` idle sockets on each node, users from 1 upward, by
    processes of at most PER_PROCESS sockets, each from its own address."""
    gens, first = [], 1
    for n in nodes:
        for share in spread(per_node, math.ceil(per_node / PER_PROCESS)):
            gens.append((n, loadgen(["idle", "--url", n.url, "--first-user", str(first), "--sockets", str(share),
                                     "--hold-secs", str(hold_secs), "--connect-concurrency", str(CONNECT_CONCURRENCY),
                                     "--local-addr", bench_ws.local_addr()])))
            first += share
    started = [read_json(g, "idle") for _, g in gens]
    span_ms = max(r["end_unix_ms"] for r in started) - min(r["start_unix_ms"] for r in started)
    failures = {}
    for r in started:
        for kind, n in r["failures"].items():
            failures[kind] = failures.get(kind, 0) + n
    return gens, {"established": sum(r["established"] for r in started), "failed": sum(r["failed"] for r in started),
                  "failures": failures, "span_ms": span_ms, "procs": len(gens),
                  "last_ms": max(r["end_unix_ms"] for r in started)}


def held(gens):
    reports = [read_json(g, "idle hold") for _, g in gens]
    for _, g in gens:
        g.wait(timeout=60)
    return {"open_at_end": sum(r["open_at_end"] for r in reports), "pings": sum(r["pings_answered"] for r in reports)}


def wait_hold_since(last_ms):
    time.sleep(max(0.0, HOLD - (time.time() * 1000 - last_ms) / 1000))


def single_node(per_node, bus):
    """One node alone, `per_node` idle sockets, measured as each of the six
    is: the per-socket baseline of the same run. With `bus`, the node has a
    Redis of its own, so the bridge's share of a socket shows apart from
    what six nodes on one machine add."""
    redis = Redis(REDIS_PORT) if bus else None
    extra = dict(cluster_env(redis, "single"), MAX_CONNECTIONS="6") if bus else {"MAX_CONNECTIONS": "6"}
    node = None
    try:
        node = Node("single-bus" if bus else "single", SINGLE, extra)
        warm_up([node])
        before = bench_ws.rss_kib(node.pid)
        gens, conn = connect_idle([node], per_node, HOLD + 3)
        wait_hold_since(conn["last_ms"])
        after, fds = bench_ws.rss_kib(node.pid), bench_ws.fd_count(node.pid)
        hold = held(gens)
    finally:
        if node:
            node.stop()
        if redis:
            redis.stop()
    row = dict(conn, **hold, sockets=per_node, before=before, after=after, fds=fds,
               per_socket=(after - before) / per_node, bus=bus)
    log(f"single node{' with the bus' if bus else ''}: {per_node:,} sockets, RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB, "
        f"{row['per_socket']:.2f} KiB/socket, open at end {hold['open_at_end']:,}")
    return row


def pairs_files(idle, pairs, tmp):
    """`pairs` random pairs of users drawn from the 2 * 2 * pairs ids after
    the idle ones, split over the sender nodes; a process's recipients go
    round-robin to the other five nodes, so every pair crosses nodes."""
    rng = random.Random(20261202)
    users = rng.sample(range(idle + 1, idle + 1 + 4 * pairs), 2 * pairs)
    all_pairs = [(users[2 * i], users[2 * i + 1]) for i in range(pairs)]
    files, start = [], 0
    for i, count in enumerate(spread(pairs, NODES)):
        path = os.path.join(tmp, f"pairs-{i}.txt")
        with open(path, "w") as f:
            f.writelines(f"{s} {r}\n" for s, r in all_pairs[start:start + count])
        files.append(path)
        start += count
    return files


def capacity_phase():
    idle = SOCKETS - 2 * CAP_PAIRS
    per_node = idle // NODES
    idle = per_node * NODES
    log(f"capacity: one node alone with {per_node:,} idle sockets (the baseline)")
    single = single_node(per_node, bus=False)
    log(f"capacity: one node alone with a Redis of its own, {per_node:,} idle sockets")
    single_bus = single_node(per_node, bus=True)

    redis = Redis(REDIS_PORT)
    nodes = []
    tmp = tempfile.mkdtemp(prefix="bench-cluster-pairs-")
    try:
        mem_empty = int(redis.info()["used_memory"])
        nodes = [Node(f"n{i + 1}", (CAP_BASE + 10 * i, CAP_BASE + 10 * i + 1),
                      dict(cluster_env(redis, f"n{i + 1}"), MAX_CONNECTIONS="6")) for i in range(NODES)]
        warm_up(nodes)
        before = {n.name: bench_ws.rss_kib(n.pid) for n in nodes}
        info0 = redis.info()
        log(f"capacity: {NODES} nodes up, RSS {', '.join(f'{v / 1024:.1f}' for v in before.values())} MiB; "
            f"{idle:,} idle sockets ({per_node:,} a node), then {CAP_PAIRS:,} pairs")
        hold_secs = HOLD + CAP_SECS + 25  # past the chat: the idle sockets are held throughout
        node_pids = [n.pid for n in nodes]
        r_ticks0, n_ticks0 = bench_ws.cpu_ticks(redis.proc.pid), ticks(node_pids)
        gens, conn = connect_idle(nodes, per_node, hold_secs)
        log(f"capacity: {conn['established']:,} established in {conn['span_ms']:,} ms, {conn['failed']:,} failed "
            f"{conn['failures'] or ''}")
        t_hold0, r_hold0, n_hold0 = time.monotonic(), bench_ws.cpu_ticks(redis.proc.pid), ticks(node_pids)
        wait_hold_since(conn["last_ms"])
        t_hold1, r_hold1, n_hold1 = time.monotonic(), bench_ws.cpu_ticks(redis.proc.pid), ticks(node_pids)
        idle_rss = {n.name: bench_ws.rss_kib(n.pid) for n in nodes}
        fds = {n.name: bench_ws.fd_count(n.pid) for n in nodes}
        info_idle = redis.info()
        idle_commands = command_counts(info_idle, info0)
        connect_cpu = {"redis": (r_hold0 - r_ticks0) / CLK_TCK,
                       "nodes": [(b - a) / CLK_TCK for a, b in zip(n_ticks0, n_hold0)]}
        hold_wall = t_hold1 - t_hold0
        hold_cpu = {"redis": (r_hold1 - r_hold0) / CLK_TCK / hold_wall * 100,
                    "nodes": [(b - a) / CLK_TCK / hold_wall * 100 for a, b in zip(n_hold0, n_hold1)]}
        log(f"capacity: idle RSS {', '.join(f'{v / 1024:.1f}' for v in idle_rss.values())} MiB, Redis "
            f"{int(info_idle['used_memory']) / 2**20:.1f} MiB, Redis CPU {hold_cpu['redis']:.1f}% while idle")

        # The pairs chat, one load generator per sender node.
        bus0 = {n.name: n.bus() for n in nodes}
        chats = []
        for i, path in enumerate(pairs_files(idle, CAP_PAIRS, tmp)):
            others = [n.url for j, n in enumerate(nodes) if j != i]
            chats.append(loadgen(chat_args(nodes[i].url, others, CAP_RATE / NODES, CAP_SECS, pairs_file=path)))
        for g in chats:
            read_json(g, "capacity chat connect")
        all_rss = {n.name: bench_ws.rss_kib(n.pid) for n in nodes}
        t_chat0, r_chat0, n_chat0 = time.monotonic(), bench_ws.cpu_ticks(redis.proc.pid), ticks(node_pids)
        pg0 = bench_ws.postgres_ticks()
        info_chat0 = redis.info()
        reports = [read_json(g, "capacity chat") for g in chats]
        t_chat1, r_chat1, n_chat1 = time.monotonic(), bench_ws.cpu_ticks(redis.proc.pid), ticks(node_pids)
        pg1 = bench_ws.postgres_ticks()
        info_chat1 = redis.info()
        chat_rss = {n.name: bench_ws.rss_kib(n.pid) for n in nodes}
        for g in chats:
            g.wait(timeout=60)
        time.sleep(0.5)
        bus = {}
        for n in nodes:
            after = n.bus()
            bus[n.name] = {k: after[k] - bus0[n.name][k] for k in ("received", "discarded", "published", "dropped")}
        subscriptions = {n.name: n.bus()["subscriptions"] for n in nodes}
        chat_warnings = {n.name: n.warnings() for n in nodes}
        hold = held(gens)
        time.sleep(2)  # the closes' lease releases
        warnings = {n.name: n.warnings() for n in nodes}
        redis_closed = redis.closed_clients()
    finally:
        for n in nodes:
            n.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    chat_wall = t_chat1 - t_chat0
    chat = {key: sum(r[key] for r in reports) for key in ("scheduled", "sent", "acked_ok", "delivered", "duplicates",
                                                          "ack_missing", "sockets_closed_early")}
    errors = {}
    for r in reports:
        for kind, n in r["ack_errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    chat["ack_errors"] = errors
    chat["delivered_pct"] = chat["delivered"] * 100 / chat["sent"] if chat["sent"] else 0.0
    # Each process's percentiles are its own; the worst is reported.
    chat["p50"] = max(r["delivery_ms"]["p50"] or 0 for r in reports)
    chat["p99"] = max(r["delivery_ms"]["p99"] or 0 for r in reports)
    chat["max"] = max(r["delivery_ms"]["max"] or 0 for r in reports)
    rows = []
    per_node_sockets = {n: per_node for n in before}
    for name in before:
        rows.append({"node": name, "sockets": per_node_sockets[name], "before": before[name], "idle": idle_rss[name],
                     "chat": chat_rss[name], "all": all_rss[name], "fds": fds[name],
                     "per_socket": (idle_rss[name] - before[name]) / per_node_sockets[name],
                     "subscriptions": subscriptions[name], "bus": bus[name],
                     "cpu_hold": hold_cpu["nodes"][len(rows)],
                     "cpu_chat": (n_chat1[len(rows)] - n_chat0[len(rows)]) / CLK_TCK / chat_wall * 100})
    redis_row = {
        "empty": mem_empty, "nodes_up": int(info0["used_memory"]), "idle": int(info_idle["used_memory"]),
        "chat": int(info_chat1["used_memory"]), "rss_idle": int(info_idle["used_memory_rss"]),
        "channels": int(info_idle.get("pubsub_channels", 0)), "keys": db_keys(info_idle),
        "connect_cpu_s": connect_cpu["redis"], "hold_cpu_pct": hold_cpu["redis"],
        "chat_cpu_pct": (r_chat1 - r_chat0) / CLK_TCK / chat_wall * 100,
        "chat_cpu_s": (r_chat1 - r_chat0) / CLK_TCK,
        "publishes": redis.calls(info_chat1, "publish", "spublish") - redis.calls(info_chat0, "publish", "spublish"),
        "commands_idle": int(info_idle["total_commands_processed"]) - int(info0["total_commands_processed"]),
    }
    log(f"capacity chat: {chat['delivered']:,}/{chat['sent']:,} delivered ({chat['delivered_pct']:.2f} %), p99 "
        f"{chat['p99']} ms, bus {bus}, Redis CPU {redis_row['chat_cpu_pct']:.1f}% chatting; open at end "
        f"{hold['open_at_end']:,}")
    return {"single": single, "single_bus": single_bus, "nodes": rows, "idle_commands": idle_commands,
            "chat_warnings": chat_warnings, "redis_closed": redis_closed, "redis": redis_row, "chat": chat, "conn": conn, "hold": hold,
            "idle": idle, "per_node": per_node, "hold_wall": hold_wall, "chat_wall": chat_wall,
            "pg_chat_pct": (pg1 - pg0) / CLK_TCK / chat_wall * 100, "warnings": warnings,
            "connect_cpu": connect_cpu}


def command_counts(after, before):
    """Calls per Redis command between two INFO readings, most first."""
    counts = {}
    for key, stat in after.items():
        if key.startswith("cmdstat_"):
            calls = int(stat.split("calls=", 1)[1].split(",", 1)[0])
            old = before.get(key)
            if old:
                calls -= int(old.split("calls=", 1)[1].split(",", 1)[0])
            if calls:
                counts[key[len("cmdstat_"):]] = calls
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def db_keys(info):
    keyspace = info.get("db0", "")
    return int(keyspace.split("keys=", 1)[1].split(",", 1)[0]) if "keys=" in keyspace else 0


# ---------------------------------------------------------------- report


def ms(value):
    return "-" if value is None else f"{value:,.1f}"


def sustained(row):
    """Carried at this rate: everything sent and acked ok, >= 99.9 % delivered,
    delivery p99 under P99_SUSTAINED_MS."""
    p99 = row["delivery_ms"]["p99"]
    return (row["sent"] >= row["scheduled"] and not row["ack_errors"] and not row["ack_missing"]
            and row["delivered_pct"] >= 99.9 and p99 is not None and p99 < P99_SUSTAINED_MS)


def discarded_cell(row):
    if row["case"] == "peer":
        return "n/a"
    cells = []
    for name, b in sorted(row["bus"].items()):
        share = b["discarded"] * 100 / b["received"] if b["received"] else 0.0
        cells.append(f"{name}: {b['discarded']:,} / {b['received']:,} ({share:.0f} %)")
    return "; ".join(cells)


def machine():
    return bench_common.machine(sql("SHOW server_version")[0])


def knobs():
    return " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_CLUSTER_"))


def verdict(ok):
    return "**pass**" if ok else "**fail**"


def median_rounds(rows):
    """Per (case, rate), the round of median delivery p99 (a round that
    delivered no p99 counts as the worst)."""
    steps = {}
    for r in rows:
        steps.setdefault((r["case"], int(r["offered_rate"])), []).append(r)
    def p99(r):
        value = r["delivery_ms"]["p99"]
        return math.inf if value is None else value
    return {key: sorted(runs, key=p99)[(len(runs) - 1) // 2] for key, runs in steps.items()}


def write_report(chat, cap):
    rows = sorted(chat["rows"], key=lambda r: (int(r["offered_rate"]), CASES.index(r["case"]), r.get("round", 1)))
    by = median_rounds(rows)
    rounds = max(r.get("round", 1) for r in rows)
    def command(phase):
        return f"{phase['knobs'] + ' ' if phase['knobs'] else ''}make bench-cluster"

    if chat["run_at"] == cap["run_at"]:
        when = f"Run {chat['run_at']} UTC"
        commands = f"Command: `{command(chat)}`"
    else:
        when = f"Chat run {chat['run_at']} UTC, capacity run {cap['run_at']} UTC"
        commands = f"Commands: chat `{command(chat)}`, capacity `{command(cap)}` (one phase rerun alone)"
    lines = [
        BEGIN,
        "## A cluster of nodes (`make bench-cluster`)",
        "",
        f"{when} on {machine()}.",
        f"{commands} (release build; `scripts/bench_cluster.py` drives `target/release/aurum serve`, "
        "`target/release/aurum-loadgen` and `node bench/peer/server.js`; every server, Redis and load generator "
        "runs in a session of its own). All of it shares the machine's 2 cores: two or six nodes, PostgreSQL, "
        "Redis and the load generators, so a node here has a fraction of a core; read the ratios within the run, "
        "not the absolute rates.",
        "",
        f"### Chat across two nodes ({chat['pairs']:,} pairs, {STEP_SECS} s per step, {rounds} rounds, acks on)",
        "",
        "Nodes A and B (`REDIS_URL` = one private redis-server, `NODE_ID` a / b, one database, "
        "`MAX_CONNECTIONS=20`, `RUST_LOG=warn`). Same-node: senders and recipients on A (B up). Cross-node: "
        "senders on A, recipients on B (other users, so no state carries over). Peer: two Node.js "
        "Socket.IO 4 servers (`bench/peer/server.js`) on `@socket.io/redis-adapter`'s sharded adapter (the one "
        "its documentation recommends for new work; one channel per room, as ours has one per user) with a "
        "redis-server of their own, senders on one, recipients on the other; **a relay only: it acks before "
        "anything is stored, where Aurum acks after the message is committed to PostgreSQL**. At each rate the "
        f"three run in turn, in {rounds} rounds over all the rates (so the machine's noise falls on a round, not "
        "on a case; the targets and the summary below take each step's round of median delivery p99), each "
        "with one `aurum-loadgen chat` (open loop, message k due at t0 + k/rate, sender "
        "k mod pairs; delivery latency = `new_message` arrival at the recipient - send time, both on the load "
        "generator's one clock), after an unreported warm-up of each "
        f"({WARMUP_SECS} s at {WARMUP_RATE:,} msg/s) that creates the conversations. "
        "Discarded = bus envelopes a node read from Redis and threw away (its own, or for a user it no longer "
        "holds), of all it read, from `/health`'s `bus` counters around the whole step. "
        f"Carried = all sent and acked ok, >= 99.9 % delivered, delivery p99 under {P99_SUSTAINED_MS:.0f} ms. "
        "Redis EVALSHA / PUBLISH = commands Redis ran in the step (INFO commandstats): our bridge sends each batch "
        "of events (what queued while the last batch was out) as one script call, which publishes an event only "
        "when another node holds a lease on its user; the peer SPUBLISHes every emit. "
        "CPU = percent of one core over the sending and draining window (servers = both nodes or "
        "both peers; PostgreSQL = all its processes; others = everything else on the machine but the load "
        "generator, the noise: the machine is shared with another engineer's builds and tests). "
        f"The nodes run with `BUS_PING_INTERVAL={BUS_PING}` (the default is 5000; before b55a122 a PING's answer on "
        "the subscriber connection was taken for a failure, and the subscriber was rebuilt every 5 s).",
        "",
        "| offered msg/s | case | round | sent | acked ok/s | delivered % | delivery p50 ms | delivery p99 ms | delivery max ms "
        "| ack p99 ms | carried | discarded / received on the bus | Redis EVALSHA / PUBLISH | CPU servers / PostgreSQL / Redis "
        "/ others % |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for r in rows:
        errors = ", ".join(f"{k}: {v:,}" for k, v in r["ack_errors"].items())
        if r["ack_missing"]:
            errors += f"{'; ' if errors else ''}no ack: {r['ack_missing']:,}"
        if r["foreign_messages"]:
            errors += f"{'; ' if errors else ''}replayed from earlier runs: {r['foreign_messages']:,}"
        sent = f"{r['sent']:,}" + (f" ({errors})" if errors else "")
        lines.append(
            f"| {r['offered_rate']:,.0f} | {r['case']} | {r.get('round', 1)} | {sent} | {r['acked_ok_per_sec']:,.0f} | "
            f"{r['delivered_pct']:.2f} | {ms(r['delivery_ms']['p50'])} | {ms(r['delivery_ms']['p99'])} | "
            f"{ms(r['delivery_ms']['max'])} | {ms(r['ack_ms']['p99'])} | {'yes' if sustained(r) else 'no'} | "
            f"{discarded_cell(r)} | {r['redis_scripts']:,} / {r['redis_publishes']:,} | "
            f"{r['cpu_servers']:.0f} / {'-' if r['case'] == 'peer' else f'{r_pg(r):.0f}'} / {r['cpu_redis']:.0f} / "
            f"{r['cpu_others']:.0f} |")
    d = chat["default_ping"]
    ping_warnings = sum(n for counts in d["warnings"].values() for m, n in counts.items() if "PING" in m)
    rates = sorted({rate for _, rate in by})
    def p99s(case, rate):
        runs = [r for r in rows if r["case"] == case and int(r["offered_rate"]) == rate]
        return " / ".join(ms(r["delivery_ms"]["p99"]) for r in runs)
    lines += [
        "",
        f"Delivery p99 of each step's {rounds} rounds, ms (the median in bold):",
        "",
        "| offered msg/s | same-node | cross-node | peer | cross - same (medians) |",
        "|---:|---|---|---|---:|",
    ]
    for rate in rates:
        same, cross = by[("same-node", rate)]["delivery_ms"]["p99"], by[("cross-node", rate)]["delivery_ms"]["p99"]
        gap = f"{cross - same:+.1f}" if same is not None and cross is not None else "-"
        cells = [f"{p99s(case, rate)} (**{ms(by[(case, rate)]['delivery_ms']['p99'])}**)" for case in CASES]
        lines.append(f"| {rate:,} | {' | '.join(cells)} | {gap} |")
    lines += [
        "",
        f"Messages stored in PostgreSQL at the end (warm-ups included): {chat['stored']:,}; the peer stored none.",
        "",
        f"Fresh nodes: the cross-node step at {d['offered_rate']:,.0f} msg/s once more, on nodes restarted "
        f"(`BUS_PING_INTERVAL=5000`, the default): {d['sent']:,} sent, {d['delivered_pct']:.2f} % delivered, "
        f"delivery p50 {ms(d['delivery_ms']['p50'])} ms, p99 {ms(d['delivery_ms']['p99'])} ms, max "
        f"{ms(d['delivery_ms']['max'])} ms; **{d['foreign_messages']:,} `new_message` events of earlier runs "
        f"replayed** to recipients that connected without `since`; bus {discarded_cell(d)}; "
        f"{ping_warnings:,} \"bus subscriber failed its PING; rebuilding it\" warnings in the two nodes' logs.",
        "",
    ]

    # Targets, chat.
    def top(case):
        return max((rate for (c, rate), r in by.items() if c == case and sustained(r)), default=0)

    same_top, cross_top, peer_top = top("same-node"), top("cross-node"), top("peer")
    p99_rows, p99_ok = [], True
    peer_rows, peer_ok = [], True
    for rate in rates:
        same, cross, peer = by[("same-node", rate)], by[("cross-node", rate)], by[("peer", rate)]
        sp, cp, pp = same["delivery_ms"]["p99"], cross["delivery_ms"]["p99"], peer["delivery_ms"]["p99"]
        ok = cp is not None and sp is not None and cp <= sp + 5.0
        p99_ok &= ok
        p99_rows.append(f"{rate:,}: {ms(cp)} vs {ms(sp)} ({'ok' if ok else 'over'})")
        if sustained(peer):
            ok = cp is not None and cp <= pp
            peer_ok &= ok
            peer_rows.append(f"{rate:,}: {ms(cp)} vs {ms(pp)} ({'ok' if ok else 'over'})")
    ratio = cross_top / same_top if same_top else 0.0
    discarded = sum(b["discarded"] for r in rows for b in r["bus"].values())
    received = sum(b["received"] for r in rows for b in r["bus"].values())
    lines += [
        "Targets:",
        f"- cross-node p99 within 5 ms of same-node p99 at the same rate: {verdict(p99_ok)} "
        f"(cross vs same, ms: {'; '.join(p99_rows)}).",
        f"- cross-node throughput at least 80 % of same-node: {verdict(ratio >= 0.8)} (highest rate carried: "
        f"cross-node {cross_top:,} msg/s, same-node {same_top:,} msg/s, {ratio * 100:.0f} %; "
        f"the peer {peer_top:,} msg/s; at the highest rate tried, {max(rates):,} msg/s, persisted: cross-node "
        f"{by[('cross-node', max(rates))]['acked_ok_per_sec']:,.0f}/s, same-node "
        f"{by[('same-node', max(rates))]['acked_ok_per_sec']:,.0f}/s).",
        f"- zero discarded bus messages: {verdict(discarded == 0)} ({discarded:,} of {received:,} envelopes read "
        "over all steps and both nodes).",
        f"- our cross-node p99 at or below the peer's at every rate it carries, persisted where it is not: "
        f"{verdict(peer_ok and bool(peer_rows))} (ours vs theirs, ms: {'; '.join(peer_rows) or 'the peer carried no rate'}).",
        "",
    ]

    # Capacity.
    s, nodes, rd, c = cap["single"], cap["nodes"], cap["redis"], cap["chat"]
    total = cap["idle"] + 2 * CAP_PAIRS
    lines += [
        f"### {total:,} sockets on {NODES} nodes, one Redis",
        "",
        f"{NODES} nodes (`REDIS_URL` one private redis-server, `NODE_ID` n1..n{NODES}, `MAX_CONNECTIONS=6`, "
        f"`WS_PING_INTERVAL=25000`, `RUST_LOG=warn`), each warmed up with 50 sockets that come and go. Then "
        f"{cap['idle']:,} idle sockets ({cap['per_node']:,} a node; users 1..{cap['idle']:,}, all with profiles) "
        f"from {cap['conn']['procs']} `aurum-loadgen idle` processes of at most {PER_PROCESS:,} sockets, each from "
        f"its own 127.0.0.x: {cap['conn']['established']:,} established in {cap['conn']['span_ms'] / 1000:.1f} s, "
        f"{cap['conn']['failed']:,} failed. RSS idle = VmRSS {HOLD} s after the last of them connected (a ping "
        f"round); RSS per socket = (RSS idle - RSS before) / the node's idle sockets. Then {CAP_PAIRS:,} pairs of "
        f"users drawn at random from ids {cap['idle'] + 1:,}..{cap['idle'] + 4 * CAP_PAIRS:,} (not among the idle "
        "users, so each delivery has one socket to reach), each sender on one node and its recipient on another "
        f"(one `aurum-loadgen chat` per sender node, recipients round-robin over the other {NODES - 1}), "
        f"{CAP_RATE:,} msg/s together for {CAP_SECS} s, while the idle sockets stay open: "
        f"{cap['idle'] + 2 * CAP_PAIRS:,} sockets in all. RSS all = VmRSS with every socket open, as the chat "
        "starts; RSS chat = at its end. The baseline: one node alone (no Redis), "
        f"{s['sockets']:,} idle sockets from {s['procs']} load generator process{'es' if s['procs'] > 1 else ''}, "
        "measured the same way in the same run; then the same with `REDIS_URL` (a Redis of its own, nobody else "
        "on it), which tells what the bridge costs a socket from what six nodes sharing a machine add.",
        "",
        "| node | idle sockets | RSS before MiB | RSS idle MiB | RSS per socket KiB | vs one node | RSS all MiB "
        "| RSS chat MiB | fds | bus channels | CPU idle / chat % | bus discarded / received in the chat |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    rss_ok = True
    sb = cap["single_bus"]
    rss_bus_ok = all(abs(n["per_socket"] / sb["per_socket"] - 1) <= 0.10 for n in nodes) if sb["per_socket"] else False
    for n in nodes:
        vs = n["per_socket"] / s["per_socket"] - 1 if s["per_socket"] else 0.0
        rss_ok &= abs(vs) <= 0.10
        b = n["bus"]
        lines.append(
            f"| {n['node']} | {n['sockets']:,} | {n['before'] / 1024:.1f} | {n['idle'] / 1024:.1f} | "
            f"{n['per_socket']:.2f} | {vs * 100:+.1f} % | {n['all'] / 1024:.1f} | {n['chat'] / 1024:.1f} | "
            f"{n['fds']:,} | {n['subscriptions']:,} | {n['cpu_hold']:.1f} / {n['cpu_chat']:.0f} | "
            f"{b['discarded']:,} / {b['received']:,} |")
    lines.append(
        f"| one node alone | {s['sockets']:,} | {s['before'] / 1024:.1f} | {s['after'] / 1024:.1f} | "
        f"{s['per_socket']:.2f} | | | | {s['fds']:,} | | | |")
    lines.append(
        f"| one node alone, with a Redis of its own | {sb['sockets']:,} | {sb['before'] / 1024:.1f} | "
        f"{sb['after'] / 1024:.1f} | {sb['per_socket']:.2f} | {(sb['per_socket'] / s['per_socket'] - 1) * 100:+.1f} % "
        f"| | | {sb['fds']:,} | | | |")
    errors = ", ".join(f"{k}: {v:,}" for k, v in c["ack_errors"].items()) or "none"
    cap_discarded = sum(n["bus"]["discarded"] for n in nodes)
    cap_received = sum(n["bus"]["received"] for n in nodes)
    redis_per_socket = (rd["idle"] - rd["nodes_up"]) / (cap["idle"]) if cap["idle"] else 0
    per_node_rss = ", ".join(f"{n['per_socket']:.2f}" for n in nodes)
    lines += [
        "",
        f"Chat: {c['sent']:,} sent of {c['scheduled']:,}, {c['acked_ok']:,} acked ok (ack errors: {errors}; "
        f"no ack: {c['ack_missing']:,}), **{c['delivered']:,} delivered ({c['delivered_pct']:.2f} %)**, "
        f"duplicates {c['duplicates']:,}; delivery p50 {ms(c['p50'])} ms, p99 {ms(c['p99'])} ms, max "
        f"{ms(c['max'])} ms (the worst of the {NODES} load generators); sockets closed early "
        f"{c['sockets_closed_early']:,}. Idle sockets still open after it all: {cap['hold']['open_at_end']:,} of "
        f"{cap['conn']['established']:,} (pongs sent {cap['hold']['pings']:,}).",
        "",
        f"Redis: used_memory {rd['empty'] / 2**20:.2f} MiB empty, {rd['nodes_up'] / 2**20:.2f} MiB with the nodes "
        f"up, **{rd['idle'] / 2**20:.1f} MiB with {cap['idle']:,} idle sockets** ({rd['channels']:,} channels, "
        f"{rd['keys']:,} keys: one presence lease hash per user), {rd['chat'] / 2**20:.1f} MiB after the chat; "
        f"RSS {rd['rss_idle'] / 2**20:.1f} MiB. That is {redis_per_socket:,.0f} bytes of used_memory per socket "
        f"(channel + lease). CPU: {rd['connect_cpu_s']:.1f} s while the sockets connected, "
        f"**{rd['hold_cpu_pct']:.1f} % of a core while they idled** ({rd['commands_idle']:,} commands from the "
        f"nodes up to the end of the idle hold), **{rd['chat_cpu_pct']:.1f} % during the chat** "
        f"({rd['publishes']:,} publishes, {rd['chat_cpu_s']:.2f} CPU s over {cap['chat_wall']:.1f} s); "
        f"PostgreSQL {cap['pg_chat_pct']:.0f} % during the chat. Commands from the nodes' start to the end of the "
        f"idle hold: {', '.join(f'{k} {v:,}' for k, v in list(cap['idle_commands'].items())[:5])}. Clients Redis "
        f"closed for their output buffer: {cap['redis_closed']}.",
        "",
        "Targets:",
        f"- {cap['idle'] + 2 * CAP_PAIRS:,} authenticated sockets across {NODES} nodes, each node under "
        f"{FD_LIMIT:,} open files: {verdict(cap['conn']['failed'] == 0 and max(n['fds'] for n in nodes) < FD_LIMIT)} "
        f"(most fds on a node: {max(n['fds'] for n in nodes):,}).",
        f"- the pairs chat with 100 % delivery: {verdict(c['delivered'] == c['sent'] == c['scheduled'] and not c['ack_errors'])}.",
        f"- per-socket RSS on each of the {NODES} nodes within 10 % of one node's: {verdict(rss_ok)} "
        f"({per_node_rss} KiB vs {s['per_socket']:.2f} KiB). Against one node with the bus "
        f"({sb['per_socket']:.2f} KiB), each within 10 %: {'yes' if rss_bus_ok else 'no'}"
        + (f"; what a socket costs more on a cluster node is the bridge's ({sb['per_socket'] - s['per_socket']:+.2f} "
           "KiB on one node alone with a Redis), not the other nodes'." if rss_bus_ok else "."),
        f"- zero discarded bus messages: {verdict(cap_discarded == 0)} ({cap_discarded:,} of {cap_received:,}).",
        "",
    ]
    lines += carry_section(chat, cap, same_top, cross_top)
    lines += warnings_section(chat, cap)
    lines.append(END)
    block = "\n".join(lines)
    bench_common.write_block(ROOT, BEGIN, END, block)
    print(block)


def r_pg(row):
    return row["cpu_pg"]


def carry_section(chat, cap, same_top, cross_top):
    """What N nodes and a Redis would carry, from this run's figures."""
    s, nodes, rd = cap["single"], cap["nodes"], cap["redis"]
    per_socket_kib = max(n["per_socket"] for n in nodes)
    base_mib = max(n["before"] for n in nodes) / 1024
    overhead_fds = max(n["fds"] - n["sockets"] for n in nodes)
    per_node_fd = (FD_LIMIT - overhead_fds) // 500 * 500
    node_mib_at_fd = base_mib + per_node_fd * per_socket_kib / 1024
    redis_bytes = (rd["idle"] - rd["nodes_up"]) / cap["idle"]
    idle_core_per_socket = rd["hold_cpu_pct"] / 100 / cap["idle"]
    # Redis CPU per chat message: the cross-node step at the highest rate
    # fully delivered whatever its latency (the largest sample, where
    # Redis's fixed background costs weigh least).
    cross = [r for r in chat["rows"] if r["case"] == "cross-node" and r["delivered_pct"] >= 99.9
             and not r["ack_errors"]]
    ref = max(cross, key=lambda r: r["offered_rate"]) if cross else None
    if ref:
        redis_us_per_msg = ref["redis_cpu_s"] / max(ref["sent"], 1) * 1e6
        publishes_per_msg = ref["redis_publishes"] / max(ref["sent"], 1)
        scripts_per_msg = ref["redis_scripts"] / max(ref["sent"], 1)
    else:
        redis_us_per_msg, publishes_per_msg, scripts_per_msg = 0.0, 0.0, 0.0
    cap_us_per_msg = (rd["chat_cpu_s"] - rd["hold_cpu_pct"] / 100 * cap["chat_wall"]) / max(cap["chat"]["sent"], 1) * 1e6
    redis_msgs_per_core = 1e6 / redis_us_per_msg if redis_us_per_msg > 0 else float("inf")
    redis_sockets_per_core = 1 / idle_core_per_socket if idle_core_per_socket > 0 else float("inf")
    redis_sockets_per_gib = 2**30 / redis_bytes if redis_bytes > 0 else float("inf")
    pg_ceiling = same_top  # one database behind every node; a node alone carried this here
    lines = [
        "### What N nodes and a Redis would carry",
        "",
        "From the figures above (per node: the worst of the six; Redis: this run's one instance):",
        "",
        f"- Memory per socket on a node: {per_socket_kib:.2f} KiB, on a base of {base_mib:.1f} MiB. A node's "
        f"first limit here is its open files: {FD_LIMIT:,} less the {overhead_fds} it holds besides sockets = "
        f"**{per_node_fd:,} sockets a node**, at {base_mib:.1f} + {per_node_fd:,} x {per_socket_kib:.2f} KiB = "
        f"{node_mib_at_fd:.0f} MiB. Memory would bind only far later: 1 GiB holds "
        f"(1024 - {base_mib:.0f}) MiB / {per_socket_kib:.2f} KiB = {(1024 - base_mib) * 1024 / per_socket_kib:,.0f} "
        "sockets, so raise the file limit first.",
        f"- Redis memory per socket: ({rd['idle'] / 2**20:.1f} - {rd['nodes_up'] / 2**20:.1f}) MiB / "
        f"{cap['idle']:,} = {redis_bytes:,.0f} bytes (its channel and its presence lease): "
        f"{redis_sockets_per_gib:,.0f} sockets per GiB of Redis.",
        f"- Redis CPU while idle: {rd['hold_cpu_pct']:.2f} % of a core for {cap['idle']:,} sockets (lease renewals "
        f"and pings) = {idle_core_per_socket * 1e6:.3f} µs per socket-second: one core renews "
        f"{redis_sockets_per_core:,.0f} sockets' leases.",
    ]
    if ref:
        lines.append(
            f"- Redis CPU per chat message: {ref['redis_cpu_s']:.2f} CPU s over the {ref['sent']:,} messages of the "
            f"cross-node step at {ref['offered_rate']:,.0f} msg/s = {redis_us_per_msg:.1f} µs a message "
            f"({scripts_per_msg:.2f} EVALSHA each: every message makes two events, the recipient's and the "
            f"sender's, and a script call carries a batch of events; {publishes_per_msg:.2f} PUBLISH: only the "
            "recipient is held elsewhere); the capacity "
            f"chat gave {cap_us_per_msg:.1f} µs (less its idle share). One Redis core: 10^6 / {redis_us_per_msg:.1f} "
            f"= **{redis_msgs_per_core:,.0f} msg/s**; k shards of sharded pub/sub (`REDIS_CLUSTER=true`) would "
            "carry about k times that, less what the cluster's publisher pays: there a batch reads the leases "
            "with one HGETALL a user and SPUBLISHes those held elsewhere, since a script may not touch two slots.")
    lines += [
        f"- Messages: every node writes to the one PostgreSQL; on this machine two nodes carried "
        f"{at_least(same_top, chat)}{same_top:,} msg/s same-node and {at_least(cross_top, chat)}{cross_top:,} msg/s cross-node "
        "(bench-ws's single node: 15,000), and that ceiling is the database's and the shared cores', not a "
        "node's: more nodes do not raise it.",
        "",
        "| nodes | sockets (fd-bound) | node RSS each MiB | Redis memory MiB | Redis idle CPU % | msg/s ceiling "
        "| first limit |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n in (NODES, 12, 24, 48, 96):
        sockets = n * per_node_fd
        redis_mib = sockets * redis_bytes / 2**20
        idle_pct = sockets * idle_core_per_socket * 100
        ceilings = {"PostgreSQL (one database)": pg_ceiling, "one Redis core": redis_msgs_per_core}
        limit_name = min(ceilings, key=ceilings.get)
        limit = f"messages: {limit_name} at {ceilings[limit_name]:,.0f} msg/s"
        if idle_pct >= 100:
            limit = f"Redis CPU for leases alone ({idle_pct:.0f} % of a core)"
        lines.append(f"| {n} | {sockets:,} | {node_mib_at_fd:.0f} | {redis_mib:,.0f} | {idle_pct:.1f} | "
                     f"{min(ceilings.values()):,.0f} | {limit} |")
    lines += [
        "",
        "Sockets grow with nodes (each adds its file limit's worth); Redis memory grows with sockets but stays "
        "small; the message rate does not grow with nodes, because every message is committed in the one "
        "database: with this machine's figures that is the first limit, long before Redis. At these rates one "
        "Redis would also renew every lease; only with far more sockets (the last column's CPU) would idle "
        "lease traffic, not chat, call for shards.",
        "",
    ]
    return lines


def at_least(rate, chat):
    """Carried at the highest rate `chat` tried (the saved run's rates, not
    this invocation's): the ceiling is higher still."""
    return "at least " if rate == max(r["offered_rate"] for r in chat["rows"]) else ""


def warnings_section(chat, cap):
    """Warnings the nodes logged, by message, added up over the nodes of a phase."""

    def total(warnings, less=None):
        counts = {}
        for node, by_message in warnings.items():
            for message, n in by_message.items():
                n -= (less or {}).get(node, {}).get(message, 0)
                if n:
                    counts[message] = counts.get(message, 0) + n
        return ", ".join(f"{n:,} x \"{m}\"" for m, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"

    return [
        "Warnings the nodes logged (`bench-cluster-<node>.log` in the cargo target directory), over all nodes "
        f"of a phase: chat (A and B): {total(chat['warnings'])}; capacity, from the start to the end of the chat "
        f"(the connect burst, the idle hold, the chat): {total(cap['chat_warnings'])}; capacity, as the idle "
        f"sockets closed: {total(cap['warnings'], cap['chat_warnings'])}.",
        "",
    ]


def main():
    for binary in (AURUM, LOADGEN):
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"{binary} missing: run `make bench-cluster` (it builds both)")
    prepare_database()
    run_at = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}"  # names this invocation's figures
    phases = {}
    for phase, run_phase in (("chat", chat_phase), ("capacity", capacity_phase)):
        saved = os.path.join(TARGET, f"bench-cluster-{phase}.json")
        if phase in ONLY:
            phases[phase] = dict(run_phase(), run_at=run_at, knobs=knobs())
            with open(saved, "w") as f:
                json.dump(phases[phase], f)
        elif os.path.exists(saved):
            # A rerun of one phase (a noisy one) reports beside the other's last figures.
            with open(saved) as f:
                phases[phase] = json.load(f)
            log(f"{phase}: the figures of {phases[phase]['run_at']} UTC ({saved})")
    every_case = "chat" in phases and {r["case"] for r in phases["chat"]["rows"]} == set(ALL_CASES)
    if len(phases) == len(SCENARIOS) and every_case:
        write_report(phases["chat"], phases["capacity"])
    else:
        log("docs/benchmarks.md is written once both chat (every case) and capacity have run (in this run or an "
            "earlier one)")
        print(json.dumps(phases, default=str, indent=1))


if __name__ == "__main__":
    main()
