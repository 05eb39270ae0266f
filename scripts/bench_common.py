"""What every benchmark script reports the same way."""

import os
import platform


def machine(pg_version):
    """One line naming the machine a figure was measured on."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Linux {platform.release()}{autogroup()}, "
            f"PostgreSQL {pg_version}")


# Linux's autogroup scheduling (on by default) shares the CPU fairly between
# sessions first and only then between the threads of a session. Started
# from this script's session, the server shared one slice with the load
# generator while PostgreSQL had its own: queries then took up to 1.9 s
# (PostgreSQL itself logged a 770 ms bind) and HTTP p99 swung from
# 4 ms to 120 ms between identical runs. Each process a benchmark starts
# gets a session of its own, as a service, the load generator and the
# database have when deployed (docs/benchmarks.md, "Sessions and the
# scheduler").
OWN_SESSION = {"start_new_session": True}


def autogroup():
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            return ", autogroup on" if f.read().strip() == "1" else ", autogroup off"
    except OSError:
        return ""


def docs_path(root):
    return os.path.join(root, "docs", "benchmarks.md")


def read_block(root, begin, end):
    """The block between `begin` and `end` in docs/benchmarks.md, or None."""
    import re

    path = docs_path(root)
    if not os.path.exists(path):
        return None
    found = re.search(re.escape(begin) + ".*?" + re.escape(end), open(path).read(), flags=re.S)
    return found.group(0) if found else None


def write_block(root, begin, end, block, after=None):
    """Puts `block` (which starts with `begin` and ends with `end`) into
    docs/benchmarks.md, replacing that benchmark's previous figures and
    leaving every other benchmark's untouched. A new block goes right after
    the marker `after` when given and present, else at the end."""
    import re

    path = docs_path(root)
    text = (open(path).read() if os.path.exists(path)
            else "# Benchmarks\n\nFigures written by the `make bench-*` targets.\n")
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    elif after is not None and after in text:
        head, tail = text.split(after, 1)
        text = head + after + "\n\n" + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)

# A load generator process stands for thousands of members from one
# 127.0.0.x address (a NAT address holds a few hundred at most), and the
# benchmarks call REST as one member far faster than a person could: the
# per-address socket cap and handshake rate, and the per-user REST rates,
# are off for them. WS_MAX_HANDSHAKES stays at its default, so every
# benchmark goes through the bound on handshakes in flight.
LOAD_TEST_LIMITS = {
    "WS_MAX_SOCKETS_PER_IP": "0",
    "WS_HANDSHAKE_RATE": "0",
    "SCROLL_RATE": "0",
    "BATCH_RATE": "0",
}
