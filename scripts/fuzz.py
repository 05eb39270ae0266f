#!/usr/bin/env python3
"""`make fuzz`: each cargo-fuzz target (fuzz/) for a bounded time, then the
figures into docs/fuzz.md between `<!-- fuzz:begin -->` and
`<!-- fuzz:end -->`; the rest of that file (other sections) is kept.

Each run reads the committed seeds (fuzz/corpus/<target>/) and grows a
corpus of its own under fuzz/work/ (not committed), so a second run starts
where the first stopped. A crash, a panic, a timeout, an allocation over
FUZZ_MALLOC_MB or a leak stops that target with its input written under
fuzz/artifacts/<target>/; the other targets still run, and the exit status
is 1. Every such input becomes a regression test in the crate it broke.

Environment: FUZZ_SECONDS (60) per target, FUZZ_TARGETS (all, comma
separated), FUZZ_MALLOC_MB (64), CARGO (cargo).
"""

import datetime
import os
import platform
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "fuzz.md")
BEGIN, END = "<!-- fuzz:begin -->", "<!-- fuzz:end -->"


def targets(cargo):
    listed = subprocess.run([cargo, "+nightly", "fuzz", "list"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.split()
    wanted = [t for t in os.environ.get("FUZZ_TARGETS", "").split(",") if t]
    unknown = set(wanted) - set(listed)
    if unknown:
        sys.exit(f"unknown fuzz targets: {', '.join(sorted(unknown))} (there are: {', '.join(listed)})")
    return wanted or listed


def run(cargo, target, seconds, malloc_mb):
    """Runs one target; its executions, corpus size, and the crash if any."""
    work = os.path.join(ROOT, "fuzz", "work", target)
    os.makedirs(work, exist_ok=True)
    seeds = os.path.join(ROOT, "fuzz", "corpus", target)
    command = [cargo, "+nightly", "fuzz", "run", target, work, seeds, "--",
               f"-max_total_time={seconds}", "-timeout=10", f"-malloc_limit_mb={malloc_mb}",
               "-print_final_stats=1"]
    print("+", " ".join(command), flush=True)
    done = subprocess.run(command, cwd=ROOT, stderr=subprocess.PIPE, text=True, errors="replace")
    log = done.stderr
    sys.stderr.write(log[-4000:] if done.returncode == 0 else log[-20000:])
    executions = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    if executions is None:
        # Stopped by a crash before the final stats: the last status line.
        statuses = re.findall(r"^#(\d+)\s", log, re.MULTILINE)
        executions = int(statuses[-1]) if statuses else 0
    else:
        executions = int(executions.group(1))
    artifact = re.findall(r"Test unit written to (\S+)", log)
    corpus = len(os.listdir(work))
    crash = None
    if done.returncode != 0:
        reason = re.search(r"(ERROR: libFuzzer: [^\n]+|panicked at [^\n]+|==\d+==ERROR: [^\n]+)", log)
        crash = (reason.group(1) if reason else f"exit status {done.returncode}",
                 artifact[-1] if artifact else "no input written")
    return executions, corpus, crash


def write_doc(rows, seconds):
    lines = [
        BEGIN,
        "## Decoders (make fuzz)",
        "",
        "`make fuzz`: libFuzzer with AddressSanitizer (cargo +nightly fuzz), "
        f"on {platform.node()} ({os.cpu_count()} cores, shared). Targets are in fuzz/fuzz_targets/, "
        "seeds in fuzz/corpus/; each crash found is a regression test in the crate it broke.",
        "",
        f"Command: `{command()}`. Rows of targets left out of a run keep their last run's figures.",
        "",
        "| target | what it drives | run (UTC) | seconds | executions | executions/s | corpus | crashes |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    now = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"
    old = open(DOC).read() if os.path.exists(DOC) else "# Fuzzing\n"
    # Rows of targets not run this time stay, with the date of their run.
    kept = {}
    if BEGIN in old and END in old:
        for line in old.split(BEGIN, 1)[1].split(END, 1)[0].splitlines():
            cells = line.split(" | ")
            if line.startswith("| ") and len(cells) > 2 and cells[0][2:] in DRIVES:
                kept[cells[0][2:]] = line
    for target, what, executions, corpus, crash in rows:
        found = "none" if crash is None else f"{crash[0]} ({crash[1]})".replace("|", "\\|")
        kept[target] = (f"| {target} | {what} | {now} | {seconds} | {executions:,} | "
                        f"{executions // max(seconds, 1):,} | {corpus:,} | {found} |")
    lines += [kept[target] for target in sorted(kept)]
    lines += ["", END]
    section = "\n".join(lines)
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + section + rest.split(END, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    with open(DOC, "w") as out:
        out.write(new)


def command():
    knobs = [f"{name}={os.environ[name]}" for name in ("FUZZ_SECONDS", "FUZZ_TARGETS", "FUZZ_MALLOC_MB")
             if os.environ.get(name)]
    return " ".join(knobs + ["make fuzz"])


DRIVES = {
    "engine_text": "Engine.IO text and binary frames (codec::engine decode_text, decode_binary)",
    "engine_payload": "long-polling bodies (codec::engine decode_payload)",
    "socket_packet": "Socket.IO packets (codec::socket decode) and binary assembly",
    "ws_reader": "WebSocket frames (ws::WsReader) in random reads, beside tungstenite",
    "cursor": "scroll and conversation cursors (ScrollCursor / ListCursor decode)",
}


def main():
    cargo = os.environ.get("CARGO", "cargo")
    seconds = int(os.environ.get("FUZZ_SECONDS", "60"))
    malloc_mb = int(os.environ.get("FUZZ_MALLOC_MB", "64"))
    chosen = targets(cargo)
    subprocess.run([cargo, "+nightly", "fuzz", "build"], cwd=ROOT, check=True)
    rows = []
    for target in chosen:
        executions, corpus, crash = run(cargo, target, seconds, malloc_mb)
        rows.append((target, DRIVES.get(target, ""), executions, corpus, crash))
        print(f"{target}: {executions:,} executions, corpus {corpus}, "
              f"{'no crash' if crash is None else 'CRASH: ' + ' '.join(crash)}", flush=True)
    write_doc(rows, seconds)
    crashed = [row[0] for row in rows if row[4] is not None]
    if crashed:
        sys.exit(f"fuzzing found crashes in: {', '.join(crashed)} (inputs under fuzz/artifacts/)")


if __name__ == "__main__":
    main()
