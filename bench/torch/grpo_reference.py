"""The PyTorch + transformers reference for issue 10's benchmark (run on the GPU machine only).

The usual GRPO recipe of TRL/verl, at Qwen2-VL-2B dimensions with random weights:
  - policy and reference model in bf16, SDPA attention;
  - every one of the 16 prompts x G = 8 completions is its own full sequence (prompt + image +
    completion), micro-batches of 16 sequences; per-token log-probs of the completion tokens
    (logits_to_keep, as TRL), a reference forward under no_grad for the KL term, the token-mean loss
    -A * ratio + beta * (exp(ref - logp) - (ref - logp) - 1), backward, gradient clipping at 1.0,
    torch.optim.AdamW;
  - the rollout: model.generate for the 16 prompts with num_return_sequences = 8, 16 new tokens each
    (sampling, temperature 1; min_new_tokens so that every sample has 16).
It also measures the card's bf16 GEMM rate (8192^3) for MFU, and FLOPs with torch's FlopCounterMode
on one micro-batch. Prints a table and, last, one JSON line.

  python3 bench/torch/grpo_reference.py [--prompts 16] [--steps 2] [--out result.json]
"""
import argparse
import inspect
import json
import time

import torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

IMAGE, VIDEO, VSTART, VEND = 151655, 151656, 151652, 151653


def config():
    vision = dict(depth=32, embed_dim=1280, hidden_size=1536, hidden_act="quick_gelu", mlp_ratio=4, num_heads=16,
                  in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    text = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                num_attention_heads=12, num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=32768,
                tie_word_embeddings=True,
                rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[16, 24, 24]),
                eos_token_id=151645)
    return Qwen2VLConfig(model_type="qwen2_vl", text_config=text, vision_config=vision, image_token_id=IMAGE,
                         video_token_id=VIDEO, vision_start_token_id=VSTART, vision_end_token_id=VEND,
                         tie_word_embeddings=True)


def build(cfg, device):
    with torch.device(device):
        try:
            m = Qwen2VLForConditionalGeneration._from_config(cfg, attn_implementation="sdpa", dtype=torch.bfloat16)
        except TypeError:
            m = Qwen2VLForConditionalGeneration._from_config(cfg, attn_implementation="sdpa", torch_dtype=torch.bfloat16)
    return m.to(device=device, dtype=torch.bfloat16)


def takes_mm(model):
    for m in (model, getattr(model, "model", None)):
        if m is not None and "mm_token_type_ids" in inspect.signature(m.forward).parameters:
            return True
    return False


def workload(prompts, G, comp, device, gen):
    """Prompt: 6 text tokens, vision_start, 256 image tokens (448x448 -> 32x32 patches), vision_end,
    34 text tokens = 298 (generate counts images by vision_start)."""
    ids, pix, adv, comps = [], [], [], []
    for _ in range(prompts):
        p = torch.cat([torch.randint(0, 150000, (6,), generator=gen), torch.tensor([VSTART]), torch.full((256,), IMAGE),
                       torch.tensor([VEND]), torch.randint(0, 150000, (34,), generator=gen)])
        ids.append(p)
        pix.append(torch.rand(1024, 1176, generator=gen) * 2 - 1)
        comps.append(torch.randint(0, 150000, (G, comp), generator=gen))
        adv.append(torch.rand(G, generator=gen) * 2 - 1)
    return ids, pix, comps, adv


def per_token_logps(model, input_ids, pixel_values, grid, keep, mm):
    kw = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pixel_values,
              image_grid_thw=grid, logits_to_keep=keep + 1)
    if mm:
        kw["mm_token_type_ids"] = (input_ids == IMAGE).long()
    logits = model(**kw).logits[:, :-1, :].float()
    targets = input_ids[:, -keep:]
    return torch.gather(logits.log_softmax(-1), 2, targets.unsqueeze(-1)).squeeze(-1)


def micro_batches(ids, pix, comps, adv, mb, device):
    """Sequences in order (prompt p, completion g); each micro-batch of mb sequences as tensors."""
    seqs = [(p, g) for p in range(len(ids)) for g in range(comps[p].shape[0])]
    for i in range(0, len(seqs), mb):
        chunk = seqs[i:i + mb]
        input_ids = torch.stack([torch.cat([ids[p], comps[p][g]]) for p, g in chunk]).to(device)
        pv = torch.cat([pix[p] for p, _ in chunk]).to(device=device, dtype=torch.bfloat16)
        grid = torch.tensor([[1, 32, 32]] * len(chunk), device=device)
        a = torch.stack([adv[p][g] for p, g in chunk]).to(device)
        yield input_ids, pv, grid, a


def grpo_step(policy, ref, opt, batches, comp, beta, mm, total_tokens):
    opt.zero_grad(set_to_none=True)
    for input_ids, pv, grid, a in batches:
        with torch.no_grad():
            ref_lp = per_token_logps(ref, input_ids, pv, grid, comp, mm)
        lp = per_token_logps(policy, input_ids, pv, grid, comp, mm)
        old = lp.detach()
        ratio = torch.exp(lp - old)
        d = ref_lp - lp
        kl = torch.exp(d) - d - 1
        loss = ((-a[:, None] * ratio + beta * kl).sum()) / total_tokens
        loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    opt.step()
    return float(gn)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--completion", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dev = "cuda"
    torch.manual_seed(0)
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    import transformers
    res["transformers"] = transformers.__version__

    # the card's bf16 GEMM rate
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(20):
        a @ b
    e1.record()
    torch.cuda.synchronize()
    res["gemm_tflops"] = 2 * 8192 ** 3 * 20 / (e0.elapsed_time(e1) / 1e3) / 1e12
    del a, b

    cfg = config()
    policy = build(cfg, dev)
    ref = build(cfg, dev)
    ref.load_state_dict(policy.state_dict())
    ref.eval().requires_grad_(False)
    res["params"] = sum(p.numel() for p in policy.parameters())
    mm = takes_mm(policy)
    gen = torch.Generator().manual_seed(1)
    ids, pix, comps, adv = workload(args.prompts, args.G, args.completion, dev, gen)
    total = args.prompts * args.G * args.completion
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6)

    # FLOPs of the step, counted analytically (torch's FlopCounterMode rejects SDPA with GQA): per
    # sequence a forward of 2 * params * rows for every linear (vision 1024 patches, LM 314 rows, the
    # head on logits_to_keep = 17 rows) plus attention (vision 4 N^2 E per block; LM causal
    # 2 L^2 H per layer); the policy's forward + backward is 3 forwards, the reference's 1.
    mbs = list(micro_batches(ids, pix, comps, adv, args.micro_batch, dev))
    vis_lin = sum(p.numel() for n, p in policy.named_parameters() if "visual" in n and p.dim() >= 2)
    lm_lin = sum(p.numel() for n, p in policy.named_parameters()
                 if "visual" not in n and p.dim() >= 2 and "embed_tokens" not in n)
    L = 298 + args.completion
    fwd = (2 * vis_lin * 1024 + 2 * lm_lin * L + 2 * 1536 * 151936 * (args.completion + 1)
           + 32 * 4 * 1024 ** 2 * 1280 + 28 * 2 * L ** 2 * 1536)
    res["step_flops"] = 4 * fwd * args.prompts * args.G
    res["step_flops_note"] = "analytical: 4 forwards (policy fwd+bwd = 3, reference 1) per sequence"

    # the step: warm-up, then timed (the warm-up also creates the optimizer state)
    policy.train()
    grpo_step(policy, ref, opt, mbs, args.completion, 0.04, mm, total)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        gn = grpo_step(policy, ref, opt, mbs, args.completion, 0.04, mm, total)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        print(f"reference step: {times[-1]:.3f} s (grad norm {gn:.4g})", flush=True)
    res["step_s"] = min(times)
    res["step_peak_bytes"] = torch.cuda.max_memory_allocated()
    res["step_mfu"] = res["step_flops"] / res["step_s"] / (res["gemm_tflops"] * 1e12)
    del opt
    policy.zero_grad(set_to_none=True)
    torch.cuda.empty_cache()

    # the rollout: generate for the 16 prompts, 8 samples each, 16 new tokens
    policy.eval()
    input_ids = torch.stack(ids).to(dev)
    pv = torch.cat(pix).to(device=dev, dtype=torch.bfloat16)
    grid = torch.tensor([[1, 32, 32]] * args.prompts, device=dev)
    kw = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pv, image_grid_thw=grid,
              do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=args.completion,
              min_new_tokens=args.completion, num_return_sequences=args.G, pad_token_id=0)
    if mm:
        kw["mm_token_type_ids"] = (input_ids == IMAGE).long()
    gtimes = []
    with torch.no_grad():
        for i in range(3):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = policy.generate(**kw)
            torch.cuda.synchronize()
            gtimes.append(time.perf_counter() - t0)
            new = (out.shape[1] - input_ids.shape[1]) * out.shape[0]
            print(f"generate: {gtimes[-1]:.3f} s, {new} new tokens ({new / gtimes[-1]:.0f} tokens/s)", flush=True)
    res["generate_s"] = min(gtimes[1:])
    res["generate_tokens"] = new
    print(json.dumps(res), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
