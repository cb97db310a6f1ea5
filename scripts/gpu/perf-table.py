#!/usr/bin/env python3
"""Issue 13's open rows from scripts/gpu/call-perf.sh's logs: python3 scripts/gpu/perf-table.py OUT_DIR.

Each trainer log ends with a {"summary": ...} line (bench/trainer.ts); evaluate runs add {"evaluate": ...} and
one {"evaluateAt": ...} line per extra evalBatchSize. Prints one markdown row per log: the LoRA step against
its 0.4 s goal, evaluate() per question against one at a time (goal 10x)."""
import json
import pathlib
import sys


def lines(path):
    for raw in path.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            try:
                yield json.loads(raw)
            except json.JSONDecodeError:
                pass


def main(out):
    rows = ["| log | what | value | against | ratio / goal |", "|---|---|---|---|---|"]
    for path in sorted(pathlib.Path(out).glob("*.log")):
        recs = list(lines(path))
        summ = next((r["summary"] for r in recs if "summary" in r), None)
        if summ and summ.get("lora"):
            met = "met" if summ["stepSeconds"] <= 0.4 else "not met"
            rows.append(f"| {path.name} | LoRA r {summ['lora']} step (rollout + update) | "
                        f"{summ['stepSeconds']:.3f} s ({summ['rolloutSeconds']:.3f} + {summ['trainSeconds']:.3f}), "
                        f"peak {summ['peakMiB']} MiB | 0.4 s, 12 GB | {met} |")
        ev = next((r["evaluate"] for r in recs if "evaluate" in r), None)
        if ev:
            one = ev["oneAtATime"]["perQuestion"]
            b = ev["batched"]
            rows.append(f"| {path.name} | evaluate() default chunk, {b['questions']} q | {1000 * b['perQuestion']:.2f} ms/q | "
                        f"{1000 * one:.1f} ms/q one at a time | {one / b['perQuestion']:.1f}x / 10x |")
            for r in recs:
                if "evaluateAt" in r:
                    a = r["evaluateAt"]
                    rows.append(f"| {path.name} | evaluate() evalBatchSize {a['evalBatchSize']} | {1000 * a['perQuestion']:.2f} ms/q | "
                                f"{1000 * one:.1f} ms/q one at a time | {a['vsOne']:.1f}x / 10x |")
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
