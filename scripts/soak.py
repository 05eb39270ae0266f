"""The soak (`make soak`): socket churn and REST load on two nodes.

Two release nodes share a database and a private redis-server. The official
socket.io-client (scripts/soak_clients.mjs, default options) runs
SOAK_MEMBERS members that connect to a node chosen at random, chat with
acks, leave and come back with `since`, while a REST loop scrolls and
batch-loads profiles, for SOAK_MINUTES. Every 10 s each node's RSS, sockets
and supervisor actions go into docs/soak[-<run>].csv; at the end
docs/soak[-<run>].png plots them (matplotlib, in the venv that
scripts/deploy-tools.sh makes) and docs/benchmarks.md gets the figures
between the soak markers, with the command and the machine.

It holds when each node's median RSS over the last 10 minutes is within 5 %
of its median over the first 10 minutes after a warm-up (SOAK_WARMUP_MINUTES,
default 5): with 30 minutes, minutes 5-15 against 20-30. Shorter runs
compare the two halves after the warm-up.

SOAK_WATERMARK=low gives node b a MEMORY_HIGH_WATERMARK just above its
idle RSS (SOAK_HEADROOM_MB, default 3, above it), so its supervisor acts
during the run (collect, close idle connections, shed); the plot marks each
action. (With 16 MiB, 300 members never took a node past the mark.) That run is named `low-watermark`.
"""

import csv
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import bench_common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
AURUM = os.path.join(TARGET, "release", "aurum")
PG = os.environ.get("AURUM_BENCH_PG", "postgres://postgres@127.0.0.1:5432")
DB_URL = f"{PG}/aurum_soak"
SECRET = "soak-secret-0123456789abcdef0123"
PROFILES = 20_000
MINUTES = float(os.environ.get("SOAK_MINUTES", "30"))
WARMUP_MINUTES = float(os.environ.get("SOAK_WARMUP_MINUTES", "5"))
MEMBERS = int(os.environ.get("SOAK_MEMBERS", "1000"))
REST_RATE = int(os.environ.get("SOAK_REST_RATE", "50"))
LOW_WATERMARK = os.environ.get("SOAK_WATERMARK", "") == "low"
HEADROOM_MB = float(os.environ.get("SOAK_HEADROOM_MB", "3"))
RUN = "low-watermark" if LOW_WATERMARK else ""
SAMPLE_SECS = 10
REDIS_PORT = 18479
NODES = {"a": (18480, 18481), "b": (18490, 18491)}
BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"
HOLD_LIMIT = 0.05


def log(*args):
    print(f"[soak {dt.datetime.now():%H:%M:%S}]", *args, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)


def actions(http_port):
    """resource_actions_total by action, from the node's /metrics."""
    counts = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("resource_actions_total{"):
                labels, value = line.rsplit(" ", 1)
                action = labels.split('action="', 1)[1].split('"', 1)[0]
                counts[action] = int(float(value))
    return counts


def prepare_database():
    run([AURUM, "migrate", "--create-database", "--database-url", DB_URL])
    run([AURUM, "seed", "--profiles", str(PROFILES), "--if-empty", "--database-url", DB_URL])


def start_redis():
    redis = subprocess.Popen(["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, **bench_common.OWN_SESSION)
    for _ in range(100):
        if subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "ping"], capture_output=True).returncode == 0:
            return redis
        time.sleep(0.1)
    raise SystemExit("redis-server did not start")


def start_node(name, extra):
    http, ws = NODES[name]
    env = dict(os.environ, DATABASE_URL=DB_URL, JWT_SECRET=SECRET, BIND=f"127.0.0.1:{http}",
               WS_BIND=f"127.0.0.1:{ws}", RUST_LOG="warn", NODE_ID=name,
               REDIS_URL=f"redis://127.0.0.1:{REDIS_PORT}/", REDIS_PREFIX="soak:",
               **{**bench_common.LOAD_TEST_LIMITS, **extra})
    node = subprocess.Popen([AURUM, "serve"], env=env, **bench_common.OWN_SESSION)
    for _ in range(300):
        if node.poll() is not None:
            raise SystemExit(f"node {name} exited with {node.returncode}")
        try:
            get_json(f"http://127.0.0.1:{http}/health/live")
            return node
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"node {name} did not come up")


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def low_watermark_for(http_port, pid):
    """A percent just above the node's RSS now, in the node's own terms
    (its percent is against the container's limit, else the host's)."""
    for _ in range(50):
        resources = get_json(f"http://127.0.0.1:{http_port}/health").get("resources") or {}
        percent = resources.get("memory_percent")
        if percent:
            rss = rss_kib(pid)
            total_kib = rss / (percent / 100)
            return (rss + HEADROOM_MB * 1024) / total_kib * 100
        time.sleep(0.2)
    raise SystemExit("the supervisor reported no memory figure")


def median_in(rows, node, start_s, end_s):
    values = [row[f"{node}_rss_kib"] for row in rows if start_s <= row["t_s"] < end_s]
    return statistics.median(values) if values else None


def main():
    if not os.path.exists(AURUM):
        raise SystemExit(f"{AURUM} is missing: make soak builds it")
    prepare_database()
    redis = start_redis()
    nodes = {}
    try:
        nodes["a"] = start_node("a", {})
        nodes["b"] = start_node("b", {"RESOURCE_INTERVAL": "1"} if LOW_WATERMARK else {})
        watermark = None
        if LOW_WATERMARK:
            # The mark is set from the idle node's figure, so node b
            # restarts with it.
            watermark = low_watermark_for(NODES["b"][0], nodes["b"].pid)
            stop(nodes["b"])
            nodes["b"] = start_node("b", {"RESOURCE_INTERVAL": "1", "MEMORY_HIGH_WATERMARK": f"{watermark:.4f}"})
            log(f"node b's MEMORY_HIGH_WATERMARK: {watermark:.4f} %")
        seconds = int(MINUTES * 60)
        clients = subprocess.Popen(
            ["node", os.path.join(ROOT, "scripts", "soak_clients.mjs")],
            env=dict(os.environ, SOAK_CLIENT_DIR=os.path.join(ROOT, "tests", "e2e"), JWT_SECRET=SECRET,
                     SOAK_NODES=",".join(f"http://127.0.0.1:{ws}" for _, ws in NODES.values()),
                     SOAK_REST=",".join(f"http://127.0.0.1:{http}" for http, _ in NODES.values()),
                     SOAK_MEMBERS=str(MEMBERS), SOAK_SECONDS=str(seconds), SOAK_REST_RATE=str(REST_RATE)),
            stdout=subprocess.PIPE, text=True, **bench_common.OWN_SESSION)
        reports = []
        reader = threading.Thread(target=lambda: reports.extend(json.loads(line) for line in clients.stdout),
                                  daemon=True)
        reader.start()
        rows = []
        started = time.monotonic()
        log(f"{MEMBERS} members for {MINUTES:g} min; sampling every {SAMPLE_SECS} s")
        while time.monotonic() - started < seconds:
            time.sleep(SAMPLE_SECS - (time.monotonic() - started) % SAMPLE_SECS)
            row = {"t_s": round(time.monotonic() - started)}
            for name, (http, _) in NODES.items():
                health = get_json(f"http://127.0.0.1:{http}/health")
                row[f"{name}_rss_kib"] = rss_kib(nodes[name].pid)
                row[f"{name}_sockets"] = health.get("sockets") or 0
                row[f"{name}_actions"] = sum(actions(http).values())
            row["acked"] = reports[-1]["acked"] if reports else 0
            rows.append(row)
            if len(rows) % 6 == 0:
                log(json.dumps(row))
        clients.wait(timeout=120)
        reader.join(timeout=5)
        final = {name: actions(http) for name, (http, _) in NODES.items()}
    finally:
        for node in nodes.values():
            stop(node)
        stop(redis)
    report(rows, reports[-1] if reports else {}, final, watermark)


def report(rows, counts, final_actions, watermark):
    suffix = f"-{RUN}" if RUN else ""
    docs = os.path.join(ROOT, "docs")
    csv_path = os.path.join(docs, f"soak{suffix}.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    total = MINUTES * 60
    warm = WARMUP_MINUTES * 60
    # 10-minute windows for a 30-minute run (minutes 5-15 against 20-30);
    # halves of what follows the warm-up for shorter ones.
    window = min(600.0, (total - warm) / 2)
    verdicts = {}
    for name in NODES:
        first = median_in(rows, name, warm, warm + window)
        last = median_in(rows, name, total - window, total + 1)
        change = (last - first) / first if first and last else None
        verdicts[name] = (first, last, change)
    plot(rows, os.path.join(docs, f"soak{suffix}.png"), watermark)
    machine = bench_common.machine(run(["psql", PG, "-Atc", "SHOW server_version"]).strip())
    command = "SOAK_WATERMARK=low make soak" if RUN else "make soak"
    knobs = [("SOAK_MINUTES", MINUTES, 30), ("SOAK_WARMUP_MINUTES", WARMUP_MINUTES, 5),
             ("SOAK_MEMBERS", MEMBERS, 1000), ("SOAK_REST_RATE", REST_RATE, 50)]
    if RUN:
        knobs.append(("SOAK_HEADROOM_MB", HEADROOM_MB, 3))
    for name, value, default in reversed(knobs):
        if value != default:
            command = f"{name}={value:g} {command}"
    lines = [f"### Soak{' (low watermark on node b)' if RUN else ''}: {MINUTES:g} min, {MEMBERS} members, "
             f"{REST_RATE} REST requests/s",
             "",
             f"`{command}` on {dt.date.today()}, {machine}. Two nodes, one Redis; the official socket.io-client "
             f"with default options; figures in `docs/soak{suffix}.csv`, plot `docs/soak{suffix}.png`.",
             "",
             f"| node | median RSS, min {warm / 60:g}-{(warm + window) / 60:g} | median RSS, last {window / 60:g} min "
             "| change | holds (within 5 %) | supervisor actions |",
             "|---|---|---|---|---|---|"]
    for name, (first, last, change) in verdicts.items():
        holds = "yes" if change is not None and abs(change) <= HOLD_LIMIT else "no"
        taken = ", ".join(f"{action} {count}" for action, count in sorted(final_actions[name].items())) or "none"
        lines.append(f"| {name} | {first / 1024:.1f} MiB | {last / 1024:.1f} MiB | {change * 100:+.1f} % | {holds} "
                     f"| {taken} |")
    lines += ["",
              f"Clients: {counts.get('visits', 0)} visits (connect, chat, leave), {counts.get('sent', 0)} messages "
              f"sent, {counts.get('acked', 0)} acked, {counts.get('refused', 0)} refused or timed out, "
              f"{counts.get('received', 0)} received, {counts.get('duplicates', 0)} duplicates seen (replays "
              f"overlap by design), {counts.get('connect_errors', 0)} refused connects, "
              f"{counts.get('rest_ok', 0)} REST answers ok and {counts.get('rest_failed', 0)} failed."]
    if watermark is not None:
        lines += ["", f"Node b ran with `MEMORY_HIGH_WATERMARK={watermark:.4f}` (its idle RSS plus {HEADROOM_MB:g} "
                  "MiB); the plot marks each action of its supervisor."]
    begin = BEGIN.replace("-->", f"{suffix} -->") if suffix else BEGIN
    end = END.replace("-->", f"{suffix} -->") if suffix else END
    bench_common.write_block(ROOT, begin, end, "\n".join([begin, *lines, end]))
    log("\n".join(lines))


def plot(rows, path, watermark):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is missing (scripts/deploy-tools.sh installs it in its venv): no plot")
        return
    minutes = [row["t_s"] / 60 for row in rows]
    figure, (memory, sockets) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for name in NODES:
        memory.plot(minutes, [row[f"{name}_rss_kib"] / 1024 for row in rows], label=f"node {name} RSS")
        sockets.plot(minutes, [row[f"{name}_sockets"] for row in rows], label=f"node {name} sockets")
        previous = 0
        for row, at in zip(rows, minutes):
            if row[f"{name}_actions"] > previous:
                memory.axvline(at, color="red", alpha=0.3, linewidth=1)
            previous = row[f"{name}_actions"]
    memory.set_ylabel("RSS (MiB)")
    memory.legend()
    title = f"make soak: {MEMBERS} members, {MINUTES:g} min"
    if watermark is not None:
        title += " (red: node b's supervisor acted)"
    memory.set_title(title)
    sockets.set_ylabel("sockets")
    sockets.set_xlabel("minutes")
    sockets.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
