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
DURATION = int(os.environ.get("BENCH_SECONDS", "5"))
# HTTP and pgbench alternate this many times per case and each figure is
# the median of its rounds, so a burst of noise on this shared machine
# moves one round, not the comparison.
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
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
               f"http://127.0.0.1:{PORT}{path}"], **bench_common.OWN_SESSION)
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


def side_by_side(path, token, statement):
    """(HTTP, pgbench, rounds) on the same query, alternating: the medians
    of ROUNDS and each round's pair, so the report shows the spread."""
    http, sql_side = [], []
    for _ in range(ROUNDS):
        http.append(wrk(path, token))
        sql_side.append(pgbench(statement))
    return median_of(http), median_of(sql_side), list(zip(http, sql_side))


def median_of(results):
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def pgbench(statement):
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "q.sql")
        with open(script, "w") as f:
            f.write(statement + ";\n")
        out = run(["pgbench", "-n", "-M", "prepared", "-c", str(CONNECTIONS), "-j", "2", "-T", str(DURATION),
                   "-l", "--log-prefix", os.path.join(tmp, "log"), "-f", script, DB_URL], cwd=tmp,
                  **bench_common.OWN_SESSION)
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


# The main table runs the server as shipped: one HTTP worker per core and
# the default pool. Until the processes had sessions of their own
# (bench_common.OWN_SESSION), the server shared its CPU slice with wrk and
# four workers with a 16-connection pool did best; since then the defaults
# do (docs/benchmarks.md, "Sessions and the scheduler"). The settings table
# below keeps the others side by side.
SETTINGS = {}
SETTINGS_COMPARED = [
    SETTINGS,
    {"MAX_CONNECTIONS": "16"},
    {"HTTP_WORKERS": "4", "MAX_CONNECTIONS": "16"},
]


class Server:
    """The release binary serving on PORT with `settings` over the defaults."""

    def __init__(self, settings):
        self.env = dict(os.environ, DATABASE_URL=DB_URL, JWT_SECRET=SECRET, BIND=f"127.0.0.1:{PORT}",
                        RUST_LOG="warn", **{**bench_common.LOAD_TEST_LIMITS, **settings})
        for key in ("HTTP_WORKERS", "MAX_CONNECTIONS"):
            if key not in settings:
                self.env.pop(key, None)

    def __enter__(self):
        self.process = subprocess.Popen([AURUM, "serve"], env=self.env, **bench_common.OWN_SESSION)
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health/live")
                break
            except OSError:
                time.sleep(0.1)
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(timeout=30)

    def token(self):
        return run([AURUM, "token", "--user", str(VIEWER), "--ttl", "7200"], env=self.env).strip()


def describe(settings):
    if not settings:
        return "defaults (workers = cores, `MAX_CONNECTIONS` 50)"
    return ", ".join(f"`{k}={v}`" for k, v in settings.items())


def main():
    seed_secs = prepare_database()
    today = dt.datetime.now(dt.timezone.utc).date()
    rows = []
    with Server(SETTINGS) as server:
        token = server.token()
        first_page = f"/api/v1/matching/profiles/scroll?limit={LIMIT}&{FILTER}"
        for depth in DEPTHS:
            log(f"page {depth}: walking to it")
            cursor = cursor_at(depth, token)
            path = first_page if cursor is None else f"/api/v1/matching/profiles/scroll?limit={LIMIT}&cursor={cursor}"
            key = None if cursor is None else decode_cursor(cursor)["after"]
            log(f"page {depth}: HTTP and pgbench keyset, {ROUNDS} rounds; pgbench OFFSET")
            http, keyset, rounds = side_by_side(path, token, scroll_sql(key, today))
            offset = pgbench(scroll_sql(None, today, offset=(depth - 1) * LIMIT))
            rows.append((f"scroll page {depth:,}", http, keyset, offset, rounds))
        ids = [int(x) for x in sql_rows(
            "SELECT id FROM profiles WHERE verification_status = 'approved' ORDER BY random() LIMIT 50")]
        log("batch-50")
        id_list = ",".join(map(str, ids))
        batch_sql = (f'SELECT {COLUMNS} FROM "profiles" WHERE (("profiles"."id" = ANY(\'{{{id_list}}}\'::int8[])) '
                     f'AND "profiles"."verification_status" = \'approved\')')
        http, sql_side, rounds = side_by_side(f"/api/v1/matching/profiles/batch?profile_ids={id_list}", token,
                                              batch_sql)
        rows.append(("batch 50 ids", http, sql_side, None, rounds))
    compared = []
    for settings in SETTINGS_COMPARED:
        log(f"page 1 with {describe(settings)}")
        with Server(settings) as server:
            token = server.token()
            compared.append((settings, median_of([wrk(first_page, token) for _ in range(ROUNDS)])))
    write_report(rows, compared, seed_secs)


def write_report(rows, compared, seed_secs):
    first = rows[0][1]["p50"]
    lines = [
        BEGIN,
        "## Profile API (`make bench-profiles`)",
        "",
        f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}.",
        f"Command: `make bench-profiles` ({PROFILES:,} profiles, release build, wrk and pgbench "
        f"`-M prepared` at {CONNECTIONS} connections, {DURATION} s each, "
        f"HTTP and pgbench alternating {ROUNDS} times per case with the median of each reported, limit {LIMIT}, filter `{FILTER}`; "
        f"server with {describe(SETTINGS)}; server, wrk and pgbench each in a session of its own). "
        "Server, PostgreSQL and the load generator share the 2 cores, so absolute figures are noisy; "
        "the ratios within one run are what to compare.",
        "",
        "| case | HTTP req/s | HTTP p50 ms | HTTP p99 ms | pgbench same SQL tps | HTTP / pgbench | pgbench p99 ms "
        "| OFFSET tps | OFFSET p99 ms | HTTP / pgbench, each round | HTTP p99 ms, each round |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, http, keyset, offset, rounds in rows:
        ratio = http["rps"] / keyset["rps"]
        off = (f"{offset['rps']:,.0f} | {offset['p99']:.2f}" if offset else "- | -")
        each_ratio = ", ".join(f"{h['rps'] / q['rps']:.0%}" for h, q in rounds)
        each_p99 = ", ".join(f"{h['p99']:.1f}" for h, _ in rounds)
        lines.append(f"| {name} | {http['rps']:,.0f} | {http['p50']:.2f} | {http['p99']:.2f} | "
                     f"{keyset['rps']:,.0f} | {ratio:.0%} | {keyset['p99']:.2f} | {off} | {each_ratio} | {each_p99} |")
    deep = [r for r in rows if r[0].startswith("scroll")]
    lines += [
        "",
        f"Deepest keyset page p50 / page 1 p50: {deep[-1][1]['p50'] / first:.2f}x (HTTP). "
        f"OFFSET at page {DEPTHS[-1]:,} vs keyset at the same page (pgbench tps): "
        f"{deep[-1][3]['rps'] / deep[-1][2]['rps']:.3f}x.",
    ]
    page1 = rows[0][2]["rps"]
    lines += [
        "",
        f"Page 1 under other server settings, same run (pgbench on the same SQL: {page1:,.0f} tps):",
        "",
        "| server settings | HTTP req/s | HTTP p50 ms | HTTP p99 ms | HTTP / pgbench |",
        "|---|---:|---:|---:|---:|",
    ]
    for settings, http in compared:
        lines.append(f"| {describe(settings)} | {http['rps']:,.0f} | {http['p50']:.2f} | {http['p99']:.2f} | "
                     f"{http['rps'] / page1:.0%} |")
    if seed_secs is not None:
        lines.append(f"Seeding {PROFILES:,} profiles took {seed_secs:.1f} s (`aurum seed`, release).")
    lines.append(END)
    block = "\n".join(lines)
    bench_common.write_block(ROOT, BEGIN, END, block)
    print(block)


if __name__ == "__main__":
    main()
