#!/usr/bin/env python3
"""Writes a `make fuzz-api` run's figures into docs/fuzz.md, between the
fuzz-api markers (the rest of the file is left as it is), from the JSON
report schemathesis wrote."""

import argparse
import datetime
import json
import pathlib

BEGIN = "<!-- fuzz-api:begin -->"
END = "<!-- fuzz-api:end -->"


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("json", "output", "status", "duration", "examples", "profiles", "version", "command", "doc"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args()
    try:
        report = json.loads(pathlib.Path(args.json).read_text())
    except (OSError, ValueError) as error:
        report = {}
        print(f"fuzz-api: no schemathesis report ({error}); figures left out")
    operations = report.get("operations", {})
    cases = report.get("test_cases", {})
    failures = report.get("failures", [])
    phases = report.get("phases", {})
    phase_list = ", ".join(f"{name} ({phase.get('status')})" for name, phase in phases.items()) or "?"
    warnings = [name for name, found in report.get("warnings", {}).items() if found]
    lines = [
        BEGIN,
        "## fuzz-api",
        "",
        f"Written by `make fuzz-api` (scripts/fuzz-api.sh) on "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: "
        f"{args.version} against a debug build of one node, driven by its own "
        f"`/api/v1/openapi.json`, {args.profiles} seeded profiles, an admin member's token.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| result | {'passed' if args.status == '0' else 'FAILED (exit ' + args.status + ')'} |",
        f"| operations tested | {operations.get('tested', '?')} of {operations.get('total', '?')} |",
        f"| test cases generated | {cases.get('generated', '?')} |",
        f"| max examples per operation and phase | {args.examples} |",
        f"| phases | {phase_list} |",
        f"| failures | {sum(f.get('count', 0) for f in failures)} |",
        f"| errors | {len(report.get('errors', []))} |",
        f"| duration | {args.duration} s |",
        "",
    ]
    if warnings:
        lines += [f"Warnings: {', '.join(warnings)} (see the run's output).", ""]
    for failure in failures:
        lines.append(
            f"- {failure.get('code')} {failure.get('title')}: {failure.get('count')} "
            f"({', '.join(failure.get('operations', []))})"
        )
    if failures:
        lines.append("")
    lines += [
        "Command (the token elided):",
        "",
        "```",
        args.command.replace("Authorization: Bearer $TOKEN", "Authorization: Bearer <token>"),
        "```",
        END,
    ]
    section = "\n".join(lines)
    doc = pathlib.Path(args.doc)
    text = doc.read_text() if doc.exists() else "# Fuzzing\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text)
    print(f"fuzz-api: figures written to {doc}")


if __name__ == "__main__":
    main()
