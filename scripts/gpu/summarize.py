"""Summarises a run-all.sh output folder: our GRPO step and rollout against the PyTorch reference
measured in the same call on the same card, as ratios, with MFU, memory and the rollout roofline.

  python3 scripts/gpu/summarize.py OUT_DIR   (reads torch.log and ours.log: JSON lines; the fullest of each)
"""
import json
import os
import sys


def last_json(path):
    """The fullest JSON line of a log (a log may end with a shorter one: the profile run's)."""
    try:
        with open(path) as f:
            objs = []
            for l in f.read().splitlines():
                if l.startswith("{"):
                    try:
                        objs.append(json.loads(l))
                    except ValueError:
                        pass
        return max(objs, key=len) if objs else {}
    except OSError:
        return {}


def main():
    out = sys.argv[1]
    ref = last_json(os.path.join(out, "torch.log"))
    our = last_json(os.path.join(out, "ours.log"))
    card = ref.get("device", "?")
    peak = ref.get("gemm_tflops", 0.0) * 1e12
    bw = 4.8e12 if "H200" in card else 3.35e12  # HBM bandwidth by the vendor's datasheet
    gib = 1024 ** 3
    print(f"# CUDA GRPO benchmark: {card}")
    print()
    print(f"bf16 GEMM rate measured (8192^3, torch): {peak / 1e12:.0f} TFLOP/s; HBM (datasheet) {bw / 1e12:.2f} TB/s")
    print(f"workload: Qwen2-VL-2B dims, random weights ({ref.get('params', our.get('params', 0)):,.0f} parameters), "
          "16 prompts x G=8, 448x448 image (1024 patches, 256 tokens) + 42 text tokens, 16-token completions")
    print()
    rows = []
    if ref.get("step_s"):
        rows.append(("reference GRPO step (transformers, bf16, SDPA, micro-batch 16)", f"{ref['step_s']:.3f} s",
                     f"{ref['step_flops'] / 1e15:.3f} PFLOP counted, MFU {100 * ref['step_mfu']:.1f}%",
                     f"peak {ref['step_peak_bytes'] / gib:.1f} GiB"))
    if our.get("step_s"):
        mfu = our["step_gemm_flops"] / our["step_s"] / peak if peak else float("nan")
        mb = int(our.get("micro_batch", 1))
        packs = f", packRows {int(our['pack_rows'])}" if our.get("pack_rows") else ""
        rows.append((f"our GRPO step (shared prefix, full fine-tune, {mb} prompts per packed micro-batch{packs})", f"{our['step_s']:.3f} s",
                     f"{our['step_gemm_flops'] / 1e15:.3f} PFLOP (GEMMs + attention), MFU {100 * mfu:.1f}%",
                     f"peak {our['step_peak_bytes'] / gib:.1f} GiB"))
    if our.get("step_mb8_s"):
        mfu8 = our["step_mb8_flops"] / our["step_mb8_s"] / peak if peak else float("nan")
        rows.append(("our GRPO step, 8 prompts per packed micro-batch", f"{our['step_mb8_s']:.3f} s",
                     f"{our['step_mb8_flops'] / 1e15:.3f} PFLOP, MFU {100 * mfu8:.1f}%",
                     f"peak {our['step_mb8_peak_bytes'] / gib:.1f} GiB"))
    if our.get("step_mb4_s"):
        mfu4 = our["step_mb4_flops"] / our["step_mb4_s"] / peak if peak else float("nan")
        rows.append(("our GRPO step, 4 prompts per packed micro-batch", f"{our['step_mb4_s']:.3f} s",
                     f"{our['step_mb4_flops'] / 1e15:.3f} PFLOP, MFU {100 * mfu4:.1f}%",
                     f"peak {our['step_mb4_peak_bytes'] / gib:.1f} GiB"))
    if our.get("mem_step_s"):
        rows.append(("our step, optimizer state offloaded to host + activation checkpointing (micro-batch 4)", f"{our['mem_step_s']:.3f} s",
                     f"{our['mem_step_flops'] / 1e15:.3f} PFLOP", f"peak {our['mem_step_peak_bytes'] / gib:.1f} GiB "
                     f"({our['mem_step_peak_bytes'] / 1e9:.1f} GB)"))
    if our.get("lora_step_s"):
        rows.append(("our step, LoRA r=64 (LM linears, no reference model, micro-batch 4)", f"{our['lora_step_s']:.3f} s", "",
                     f"peak {our['lora_step_peak_bytes'] / gib:.1f} GiB"))
    if our.get("lora1_step_s"):
        rows.append(("our step, LoRA r=64, one-rounding LoRA path (VQALAB_CUDA_LORA_PAIRS=1)", f"{our['lora1_step_s']:.3f} s", "",
                     f"peak {our['lora1_step_peak_bytes'] / gib:.1f} GiB"))
    if ref.get("generate_s"):
        rows.append(("reference rollout: generate (128 samples x 16 tokens)", f"{ref['generate_s']:.3f} s",
                     f"{ref['generate_tokens'] / ref['generate_s']:.0f} new tokens/s", ""))
    if our.get("rollout_s"):
        rows.append(("our rollout: sample_many, 16 prompts x 8 in one batch, prefix once", f"{our['rollout_s']:.3f} s",
                     f"{our['rollout_tokens'] / our['rollout_s']:.0f} new tokens/s", ""))
    if our.get("rollout_prefill_s"):
        rows.append(("our rollout's prefill + first token (sample_many, maxTokens 1)", f"{our['rollout_prefill_s']:.3f} s", "", ""))
    if our.get("rollout_per_prompt_s"):
        rows.append(("our rollout: sample(n=8) one prompt at a time", f"{our['rollout_per_prompt_s']:.3f} s",
                     f"{our['rollout_tokens'] / our['rollout_per_prompt_s']:.0f} new tokens/s", ""))
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |")
    print()
    res = {"card": card, "reference": ref, "ours": our}
    if ref.get("step_s") and our.get("step_s"):
        res["step_speedup"] = ref["step_s"] / our["step_s"]
        print(f"step: ours is {res['step_speedup']:.2f}x the reference's speed (goal >= 5x); "
              f"MFU {100 * our['step_gemm_flops'] / our['step_s'] / peak:.1f}% (goal >= 35%)")
    if our.get("step_mb8_s") and ref.get("step_s"):
        res["step_mb8_speedup"] = ref["step_s"] / our["step_mb8_s"]
        print(f"step with 8-prompt packs: {res['step_mb8_speedup']:.2f}x the reference's speed; "
              f"MFU {100 * our['step_mb8_flops'] / our['step_mb8_s'] / peak:.1f}%")
    if our.get("step_mb4_s") and ref.get("step_s"):
        res["step_mb4_speedup"] = ref["step_s"] / our["step_mb4_s"]
        print(f"step with 4-prompt packs: {res['step_mb4_speedup']:.2f}x the reference's speed; "
              f"MFU {100 * our['step_mb4_flops'] / our['step_mb4_s'] / peak:.1f}%")
    if our.get("mem_step_s") and ref.get("step_s"):
        res["mem_step_speedup"] = ref["step_s"] / our["mem_step_s"]
        print(f"memory mode: peak {our['mem_step_peak_bytes'] / 1e9:.1f} GB (goal <= 24 GB), "
              f"{res['mem_step_speedup']:.2f}x the reference's speed")
    if ref.get("generate_s") and our.get("rollout_s"):
        res["rollout_speedup"] = ref["generate_s"] / our["rollout_s"]
        # roofline: prefill once per prompt at the GEMM rate; decode reads the LM weights once per step
        # for all 128 samples (bf16); LM weights ~ params - vision (vision 32 x 12.5M + merger ~ 0.67B)
        p = our.get("params", ref.get("params", 2.2e9))
        vision = 32 * (1280 * 3840 + 1280 * 1280 + 2 * 1280 * 5120) + 5120 * 5120 + 5120 * 1536
        lm = p - vision
        prefill = 16 * (2 * vision * 1024 + 2 * lm * 298)
        roof = prefill / peak + 15 * 2 * lm / bw if peak else float("nan")
        res["rollout_roofline_s"] = roof
        print(f"rollout: ours is {res['rollout_speedup']:.2f}x generate's speed (goal >= 5x); roofline {roof:.3f} s, "
              f"ours {our['rollout_s'] / roof:.1f}x it (goal <= 3x)")
    print()
    print("```json")
    print(json.dumps(res, indent=1))
    print("```")


if __name__ == "__main__":
    main()
