"""Per-family worst errors of `vqalab check-parity DIR --json` output (the engine checker's cases), for
docs/engine.md's parity table. Families by case name: q25_* Qwen2.5-VL, q3_* Qwen3-VL, the rest Qwen2-VL.

  node bin/vqalab.js check-parity test/fixtures/engine --json [--device cuda] > p.json
  python3 scripts/parity-table.py p.json [label]
"""
import json
import sys


def family(name):
    return "Qwen2.5-VL" if name.startswith("q25_") else "Qwen3-VL" if name.startswith("q3_") else "Qwen2-VL"


def kind(m):
    n = m["name"]
    if "lora_logits" in n:
        return "PEFT adapter logits"
    if "logits" in n or "logprobs" in n or "entropy" in n:
        return "logits, log-probs, entropy"
    if n.startswith("loss") or ".loss" in n or n == "loss":
        return "GRPO loss"
    if "grad" in n or n.startswith("grad.") or "rel_l2" in n or "cosine" in n:
        return "gradients"
    return None


def main():
    cases = json.load(open(sys.argv[1]))
    label = sys.argv[2] if len(sys.argv) > 2 else ""
    worst = {}
    counts = {}
    for c in cases:
        if c.get("checker") != "engine":
            continue
        fam = family(c["caseName"])
        counts[fam] = counts.get(fam, 0) + 1
        for m in c["measurements"]:
            k = kind(m)
            if k is None or m["tolerance"] == 0:
                continue
            key = (fam, k)
            if key not in worst or m["value"] / m["tolerance"] > worst[key][0] / worst[key][1]:
                worst[key] = (m["value"], m["tolerance"], m["name"], c["caseName"])
    kinds = ["logits, log-probs, entropy", "GRPO loss", "gradients", "PEFT adapter logits"]
    print(f"| family {label} | cases | " + " | ".join(kinds) + " |")
    print("|---|---|" + "---|" * len(kinds))
    for fam in ["Qwen2-VL", "Qwen2.5-VL", "Qwen3-VL"]:
        cells = []
        for k in kinds:
            w = worst.get((fam, k))
            cells.append("—" if w is None else f"{w[0]:.1e} (tol {w[1]:g})")
        print(f"| {fam} | {counts.get(fam, 0)} | " + " | ".join(cells) + " |")


main()
