"""Run the benchmarks and print one table: every figure beside its same-run baseline and target.

    .venv/bin/python -m bench                  # everything (about 11 minutes; the first run also builds
                                               # the 1M-job databases, about 3 minutes, cached)
    .venv/bin/python -m bench --quick          # shorter runs, fewer repetitions (~3 minutes)
    .venv/bin/python -m bench webhooks store   # only some of: webhooks images startup store imagine postgres
    .venv/bin/python -m bench --update-docs    # also rewrite the results block of docs/benchmarks.md

These are measurements, not tests: the exit status is 0 whether targets pass or not (it is 1
only when a benchmark could not run). Results are also written to bench/results/ (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime

from bench._common import ROOT, Row, Section, code_version, machine, markdown_table, source_hash, text_table

BENCHMARKS = ("webhooks", "images", "startup", "store", "imagine", "postgres")
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"


def _runner(name: str) -> Callable[[bool], Section]:
    if name == "webhooks":
        from bench import webhooks

        return webhooks.run
    if name == "images":
        from bench import images

        return images.run
    if name == "startup":
        from bench import startup

        return startup.run
    if name == "imagine":
        from bench import imagine

        return imagine.run
    if name == "postgres":
        from bench import postgres

        return postgres.run
    from bench import store

    return store.run


def _results_markdown(sections: list[Section], command: str, seconds: float, load_before: str, code: str) -> str:
    facts = machine()
    rows = [row for s in sections for row in s.rows]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Run of {when}, `{command}`, {seconds / 60:.1f} minutes; code measured: {code}.",
        "",
        f"Machine: {facts['nproc']} CPUs ({facts['cpu']}), {facts['ram']} RAM, {facts['python']}, "
        f"{facts['os']}; {facts['libraries']}. Other load on the machine: {load_before} before the run, "
        f"{facts['load']} after.",
        "",
        markdown_table(rows),
    ]
    for section in sections:
        for detail in section.details:
            lines += ["", "```text", detail, "```"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "only", nargs="*", metavar="BENCHMARK", help=f"run only these ({', '.join(BENCHMARKS)}); default: all"
    )
    parser.add_argument("--quick", action="store_true", help="short runs, fewer repetitions (~3 minutes)")
    parser.add_argument("--update-docs", action="store_true", help=f"rewrite the results block of {DOCS.name}")
    args = parser.parse_args(argv)
    unknown = [b for b in args.only if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    selected = [b for b in BENCHMARKS if not args.only or b in args.only]
    command = "python -m bench" + (" --quick" if args.quick else "") + "".join(f" {b}" for b in args.only)

    facts = machine()
    print(f"lorabot benchmarks: {', '.join(selected)}{' (quick)' if args.quick else ''}")
    print(
        f"machine: {facts['nproc']} CPUs ({facts['cpu']}), {facts['ram']} RAM, {facts['python']}; {facts['libraries']}"
    )
    print(f"before the run: {facts['load']} (anything above ~0 is another program competing for the CPUs)")
    code, source = code_version(), source_hash()
    print(f"code: {code}")
    started = time.perf_counter()
    sections: list[Section] = []
    failed = False
    for name in selected:
        print(f"\n== {name} ...", flush=True)
        began = time.perf_counter()
        try:
            section = _runner(name)(args.quick)
        except Exception:
            traceback.print_exc()
            failed = True
            section = Section(
                name,
                [
                    Row(
                        name,
                        "benchmark failed to run",
                        "error",
                        passed=False,
                        note=traceback.format_exc().strip().splitlines()[-1],
                    )
                ],
            )
        section.seconds = time.perf_counter() - began
        sections.append(section)
        print(text_table(section.rows))
        print(f"({section.seconds:.0f} s)", flush=True)
    total = time.perf_counter() - started

    if source_hash() != source:  # other people edit the tree: say so rather than mix two versions silently
        code_after = code_version()
        print(f"WARNING: bot/, cogs/ or migrations/ changed during the run; now {code_after}", file=sys.stderr)
        code = f"{code} at the start, {code_after} at the end (it changed during the run)"
    rows = [row for s in sections for row in s.rows]
    print("\n== results\n")
    print(text_table(rows))
    for section in sections:
        for detail in section.details:
            print("\n" + detail)
    missed = [r for r in rows if r.passed is False]
    print(
        f"\n{sum(r.passed is True for r in rows)} PASS, {len(missed)} MISS, in {total / 60:.1f} minutes; "
        f"after the run: {machine()['load']}"
    )

    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    markdown = _results_markdown(sections, command, total, facts["load"], code)
    (out / "latest.md").write_text(markdown + "\n", encoding="utf-8")
    (out / "latest.json").write_text(
        json.dumps({"command": command, "machine": facts, "sections": [asdict(s) for s in sections]}, indent=2),
        encoding="utf-8",
    )
    print(f"written: {out / 'latest.md'}")
    if args.update_docs:
        if args.quick or args.only:
            print("not updating the docs: they hold a full run (no --quick, no selection)", file=sys.stderr)
        else:
            _update_docs(markdown)
    return 1 if failed else 0


def _update_docs(markdown: str) -> None:
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else ""
    if BEGIN not in text or END not in text:
        print(f"{DOCS} has no {BEGIN} ... {END} block; not updated", file=sys.stderr)
        return
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOCS.write_text(f"{head}{BEGIN}\n{markdown}\n{END}{tail}", encoding="utf-8")
    print(f"updated: {DOCS}")


if __name__ == "__main__":
    raise SystemExit(main())
