"""The profile API benchmark (`make bench-profiles`).

On 1,000,000 seeded profiles, with the release binary serving on loopback:
scroll at pages 1, 100, 500 and 5,000 (keyset, through HTTP, by wrk) and the
same depths with OFFSET (SQL, by pgbench, since the API has no OFFSET mode),
batch-50, and pgbench on the very SQL each endpoint runs as the ceiling.
Everything runs side by side in one invocation; the table goes to
docs/benchmarks.md between markers, with the command and the machine.
"""

import base64
import datetime as dt
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import bench_common  # the shared helpers beside this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
AURUM = os.path.join(TARGET, "release", "aurum")
PG = os.environ.get("AURUM_BENCH_PG", "postgres://postgres@127.0.0.1:5432")
DB_URL = f"{PG}/aurum_bench"
PROFILES = int(os.environ.get("BENCH_PROFILES", "1000000"))
DURATION = int(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = 32
DEPTHS = [1, 100, 500, 5000]
LIMIT = 20
FILTER = "gender=female&min_age=25&max_age=35"
PORT = 18080
SECRET = "bench-secret-0123456789abcdef"
VIEWER = 9_000_000
BEGIN, END = "<!-- bench-profiles:begin -->", "<!-- bench-profiles:end -->"

COLUMNS = ('"profiles"."id", "profiles"."display_name", "profiles"."gender", "profiles"."date_of_birth", '
           '"profiles"."religion", "profiles"."city", "profiles"."occupation", "profiles"."bio", '
           '"profiles"."verification_status", "profiles"."created_at", "profiles"."updated_at", '
           '"profiles"."last_active_at"')


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def prepare_database():
    run([AURUM, "migrate", "--create-database", "--database-url", DB_URL])
    have = int(sql_rows("SELECT count(*) FROM profiles")[0])
    if have != PROFILES:
        log(f"seeding {PROFILES} profiles (had {have})")
        sql(f"TRUNCATE profiles CASCADE")
        started = time.monotonic()
        out = run([AURUM, "seed", "--profiles", str(PROFILES), "--database-url", DB_URL])
        log(out.strip())
        return time.monotonic() - started
    return None


def sql(statement):
    run(["psql", DB_URL, "-qAtc", statement])


def sql_rows(statement):
    return [line for line in run(["psql", DB_URL, "-qAtc", statement]).splitlines() if line]


def get(path, token):
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req) as res:
        return json.load(res)


def cursor_at(page, token):
    """The cursor that fetches `page` (1-based), by walking the pages before it."""
    cursor = None
    for _ in range(page - 1):
        query = f"limit={LIMIT}&{FILTER}" if cursor is None else f"limit={LIMIT}&cursor={cursor}"
        cursor = get(f"/api/v1/matching/profiles/scroll?{query}", token)["next_cursor"]
    return cursor


def decode_cursor(cursor):
    body = cursor.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def wrk(path, token):
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    script.close()
    out = run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency", "-s", script.name,
               f"http://127.0.0.1:{PORT}{path}"])
    os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw errors on {path}:\n{out}")

    def pct(label):
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {"rps": rps, "p50": pct("50"), "p99": pct("99")}


def pgbench(statement):
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "q.sql")
        with open(script, "w") as f:
            f.write(statement + ";\n")
        out = run(["pgbench", "-n", "-M", "prepared", "-c", str(CONNECTIONS), "-j", "2", "-T", str(DURATION),
                   "-l", "--log-prefix", os.path.join(tmp, "log"), "-f", script, DB_URL], cwd=tmp)
        tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
        latencies = []
        for name in os.listdir(tmp):
            if name.startswith("log"):
                with open(os.path.join(tmp, name)) as f:
                    latencies += [int(line.split()[2]) / 1000.0 for line in f if line.strip()]
    latencies.sort()
    return {"rps": tps, "p50": statistics.median(latencies), "p99": latencies[int(len(latencies) * 0.99) - 1]}


def scroll_sql(key, today, offset=None):
    dob_max = today.replace(year=today.year - 25).isoformat()
    dob_min = today.replace(year=today.year - 36).isoformat()
    where = (f'(((("profiles"."verification_status" = \'approved\' AND ("profiles"."id" != {VIEWER})) '
             f'AND ("profiles"."gender" = \'female\')) AND ("profiles"."date_of_birth" <= \'{dob_max}\')) '
             f'AND ("profiles"."date_of_birth" > \'{dob_min}\'))')
    if key is not None:
        ts = dt.datetime.fromtimestamp(key["created_at_us"] / 1e6, dt.timezone.utc).isoformat()
        where = f'({where} AND ("profiles"."created_at", "profiles"."id") < (\'{ts}\', {key["id"]}))'
    tail = f" OFFSET {offset}" if offset else ""
    return (f'SELECT {COLUMNS} FROM "profiles" WHERE {where} '
            f'ORDER BY "profiles"."created_at" DESC, "profiles"."id" DESC LIMIT {LIMIT + 1}{tail}')


def machine():
    return bench_common.machine(sql_rows("SHOW server_version")[0])


def main():
    seed_secs = prepare_database()
    env = dict(os.environ, DATABASE_URL=DB_URL, JWT_SECRET=SECRET, BIND=f"127.0.0.1:{PORT}",
               RUST_LOG="warn", MAX_CONNECTIONS="32")
    server = subprocess.Popen([AURUM, "serve"], env=env)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health/live")
                break
            except OSError:
                time.sleep(0.1)
        token = run([AURUM, "token", "--user", str(VIEWER), "--ttl", "7200"], env=env).strip()
        today = dt.datetime.now(dt.timezone.utc).date()
        rows = []
        for depth in DEPTHS:
            log(f"page {depth}: walking to it")
            cursor = cursor_at(depth, token)
            path = (f"/api/v1/matching/profiles/scroll?limit={LIMIT}&{FILTER}" if cursor is None
                    else f"/api/v1/matching/profiles/scroll?limit={LIMIT}&cursor={cursor}")
            key = None if cursor is None else decode_cursor(cursor)["after"]
            log(f"page {depth}: HTTP keyset")
            http = wrk(path, token)
            log(f"page {depth}: pgbench keyset, pgbench OFFSET")
            keyset = pgbench(scroll_sql(key, today))
            offset = pgbench(scroll_sql(None, today, offset=(depth - 1) * LIMIT))
            rows.append((f"scroll page {depth:,}", http, keyset, offset))
        ids = [int(x) for x in sql_rows(
            "SELECT id FROM profiles WHERE verification_status = 'approved' ORDER BY random() LIMIT 50")]
        log("batch-50")
        http = wrk(f"/api/v1/matching/profiles/batch?profile_ids={','.join(map(str, ids))}", token)
        id_list = ",".join(map(str, ids))
        batch_sql = (f'SELECT {COLUMNS} FROM "profiles" WHERE (("profiles"."id" = ANY(\'{{{id_list}}}\'::int8[])) '
                     f'AND "profiles"."verification_status" = \'approved\')')
        rows.append(("batch 50 ids", http, pgbench(batch_sql), None))
    finally:
        server.terminate()
        server.wait(timeout=30)
    write_report(rows, seed_secs)


def write_report(rows, seed_secs):
    first = rows[0][1]["p50"]
    lines = [
        BEGIN,
        "## Profile API (`make bench-profiles`)",
        "",
        f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}.",
        f"Command: `make bench-profiles` ({PROFILES:,} profiles, release build, wrk and pgbench "
        f"`-M prepared` at {CONNECTIONS} connections, {DURATION} s each, limit {LIMIT}, filter `{FILTER}`). "
        "Server, PostgreSQL and the load generator share the 2 cores, so absolute figures are noisy; "
        "the ratios within one run are what to compare.",
        "",
        "| case | HTTP req/s | HTTP p50 ms | HTTP p99 ms | pgbench same SQL tps | HTTP / pgbench | pgbench p99 ms | OFFSET tps | OFFSET p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, http, keyset, offset in rows:
        ratio = http["rps"] / keyset["rps"]
        off = (f"{offset['rps']:,.0f} | {offset['p99']:.2f}" if offset else "- | -")
        lines.append(f"| {name} | {http['rps']:,.0f} | {http['p50']:.2f} | {http['p99']:.2f} | "
                     f"{keyset['rps']:,.0f} | {ratio:.0%} | {keyset['p99']:.2f} | {off} |")
    deep = [r for r in rows if r[0].startswith("scroll")]
    lines += [
        "",
        f"Deepest keyset page p50 / page 1 p50: {deep[-1][1]['p50'] / first:.2f}x (HTTP). "
        f"OFFSET at page {DEPTHS[-1]:,} vs keyset at the same page (pgbench tps): "
        f"{deep[-1][3]['rps'] / deep[-1][2]['rps']:.3f}x.",
    ]
    if seed_secs is not None:
        lines.append(f"Seeding {PROFILES:,} profiles took {seed_secs:.1f} s (`aurum seed`, release).")
    lines.append(END)
    block = "\n".join(lines)
    bench_common.write_block(ROOT, BEGIN, END, block)
    print(block)


if __name__ == "__main__":
    main()
