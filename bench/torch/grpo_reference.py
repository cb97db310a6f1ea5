"""The PyTorch + transformers reference for issue 10's benchmark (run on the GPU machine only).

The usual GRPO recipe of TRL/verl, at Qwen2-VL-2B dimensions with random weights (--family qwen2_5_vl:
Qwen2.5-VL-3B's, --family qwen3_vl: Qwen3-VL-2B's; issue 14), as `vqalab model init --preset` makes them
(bench/torch/family_dims.py; its --check-config compares a made folder's config.json):
  - policy and reference model in bf16, SDPA attention;
  - every one of the 16 prompts x G = 8 completions is its own full sequence (prompt + image +
    completion: the Trainer's prompt length for the family, family_dims.prompt_tokens), micro-batches of
    16 sequences (halved until one fits the card: --micro-batch is the first tried); per-token log-probs
    of the completion tokens (logits_to_keep, as TRL), a reference forward under no_grad for the KL term,
    the token-mean loss
    -A * ratio + beta * (exp(ref - logp) - (ref - logp) - 1), backward, gradient clipping at 1.0,
    torch.optim.AdamW;
  - the rollout: model.generate for the 16 prompts with num_return_sequences = 8, 16 new tokens each
    (sampling, temperature 1; min_new_tokens so that every sample has 16).
It also measures the card's bf16 GEMM rate (8192^3) for MFU, and counts the step's FLOPs analytically
(step_flops). Prints a table and, last, one JSON line.

  python3 bench/torch/grpo_reference.py [--family qwen2_vl] [--prompts 16] [--steps 2] [--out result.json]
"""
import argparse
import gc
import inspect
import json
import time

import torch
import transformers

from family_dims import FAMILIES, IMAGE, VSTART, VEND, image_shape, nested_config, prompt_tokens


def config(family):
    """(the family's config, its model class): transformers' nested config of family_dims."""
    f = FAMILIES[family]
    return getattr(transformers, f["config_class"])(**nested_config(family)), getattr(transformers, f["model_class"])


def build(cfg, model_cls, device):
    with torch.device(device):
        try:
            m = model_cls._from_config(cfg, attn_implementation="sdpa", dtype=torch.bfloat16)
        except TypeError:
            m = model_cls._from_config(cfg, attn_implementation="sdpa", torch_dtype=torch.bfloat16)
    return m.to(device=device, dtype=torch.bfloat16)


def takes_mm(model):
    for m in (model, getattr(model, "model", None)):
        if m is not None and "mm_token_type_ids" in inspect.signature(m.forward).parameters:
            return True
    return False


def workload(family, prompts, G, comp, device, gen):
    """Prompt: the family's text tokens before, vision_start, the image tokens of a 448x448 image, vision_end,
    text tokens after (Qwen2-VL and Qwen2.5-VL: 32x32 patches of 14 -> 256 image tokens; Qwen3-VL: 28x28
    patches of 16 -> 196; generate counts images by vision_start)."""
    f = FAMILIES[family]
    (_, gh, gw), patch_dim, n_image = image_shape(family)
    ids, pix, adv, comps = [], [], [], []
    for _ in range(prompts):
        p = torch.cat([torch.randint(0, 150000, (f["before"],), generator=gen), torch.tensor([VSTART]),
                       torch.full((n_image,), IMAGE), torch.tensor([VEND]),
                       torch.randint(0, 150000, (f["after"],), generator=gen)])
        ids.append(p)
        pix.append(torch.rand(gh * gw, patch_dim, generator=gen) * 2 - 1)
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


def micro_batches(ids, pix, comps, adv, mb, grid_thw, device):
    """Sequences in order (prompt p, completion g); each micro-batch of mb sequences as tensors."""
    seqs = [(p, g) for p in range(len(ids)) for g in range(comps[p].shape[0])]
    for i in range(0, len(seqs), mb):
        chunk = seqs[i:i + mb]
        input_ids = torch.stack([torch.cat([ids[p], comps[p][g]]) for p, g in chunk]).to(device)
        pv = torch.cat([pix[p] for p, _ in chunk]).to(device=device, dtype=torch.bfloat16)
        grid = torch.tensor([list(grid_thw)] * len(chunk), device=device)
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


def is_out_of_memory(e):
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e) or "ALLOC_FAILED" in str(e)


def step_flops(policy, cfg, family, n_patches, L, comp):
    """FLOPs of one sequence's forward, counted analytically (torch's FlopCounterMode rejects SDPA with
    GQA): 2 * params * rows for every linear (the vision blocks on every patch, the mergers on the merged
    rows, the LM on L rows, the head on logits_to_keep = comp + 1 rows) plus attention (vision 4 N w E per
    block, w = N or Qwen2.5-VL's window of patches; LM causal 2 L^2 Q per layer, Q = heads * head_dim)."""
    vis_lin = merger_lin = lm_lin = 0
    for n, p in policy.named_parameters():
        if p.dim() < 2 or "embed_tokens" in n or "pos_embed" in n or "lm_head" in n:
            continue
        if "visual" not in n:
            lm_lin += p.numel()
        elif "merger" in n:
            merger_lin += p.numel()
        else:
            vis_lin += p.numel()
    v, t = cfg.vision_config, cfg.text_config
    E = getattr(v, "embed_dim", None) or v.hidden_size
    window = n_patches
    full = set(range(v.depth))
    if family == "qwen2_5_vl":
        window = min(n_patches, (v.window_size // v.patch_size) ** 2)
        full = set(v.fullatt_block_indexes)
    vis_attn = sum(4 * n_patches * (n_patches if b in full else window) * E for b in range(v.depth))
    q_dim = t.num_attention_heads * (getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads)
    merged = n_patches // v.spatial_merge_size ** 2
    return (2 * vis_lin * n_patches + 2 * merger_lin * merged + 2 * lm_lin * L
            + 2 * t.hidden_size * t.vocab_size * (comp + 1) + vis_attn + t.num_hidden_layers * 2 * L ** 2 * q_dim)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", choices=sorted(FAMILIES), default="qwen2_vl")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--completion", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dev = "cuda"
    torch.manual_seed(0)
    res = {"family": args.family, "preset": FAMILIES[args.family]["preset"], "device": torch.cuda.get_device_name(0),
           "torch": torch.__version__}
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

    cfg, model_cls = config(args.family)
    policy = build(cfg, model_cls, dev)
    ref = build(cfg, model_cls, dev)
    ref.load_state_dict(policy.state_dict())
    ref.eval().requires_grad_(False)
    res["params"] = sum(p.numel() for p in policy.parameters())
    mm = takes_mm(policy)
    gen = torch.Generator().manual_seed(1)
    ids, pix, comps, adv = workload(args.family, args.prompts, args.G, args.completion, dev, gen)
    grid_thw, _, n_image = image_shape(args.family)
    n_patches = grid_thw[0] * grid_thw[1] * grid_thw[2]
    res["prompt_tokens"], res["image_tokens"] = prompt_tokens(args.family), n_image
    total = args.prompts * args.G * args.completion
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6)

    # FLOPs of the step: the policy's forward + backward is 3 forwards, the reference's 1.
    L = prompt_tokens(args.family) + args.completion
    res["step_flops"] = 4 * step_flops(policy, cfg, args.family, n_patches, L, args.completion) * args.prompts * args.G
    res["step_flops_note"] = "analytical: 4 forwards (policy fwd+bwd = 3, reference 1) per sequence"

    # the step: warm-up, then timed (the warm-up also creates the optimizer state). A micro-batch that
    # does not fit the card is halved (the 3B's activations at 16 sequences need more than an H100 holds
    # beside its weights, gradients and AdamW state); the memory is freed outside the except clause, whose
    # traceback holds the failed pass's tensors.
    policy.train()
    mb = args.micro_batch
    while True:
        mbs = list(micro_batches(ids, pix, comps, adv, mb, grid_thw, dev))
        oom = False
        try:
            grpo_step(policy, ref, opt, mbs, args.completion, 0.04, mm, total)
            torch.cuda.synchronize()
        except RuntimeError as e:  # torch.cuda.OutOfMemoryError, or a library's failed workspace allocation
            if mb == 1 or not is_out_of_memory(e):
                raise
            oom = True
        if not oom:
            break
        del mbs
        opt.zero_grad(set_to_none=True)
        gc.collect()
        torch.cuda.empty_cache()
        print(f"reference: out of memory at micro-batch {mb}; trying {mb // 2}", flush=True)
        mb //= 2
    res["micro_batch"] = mb
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        gn = grpo_step(policy, ref, opt, mbs, args.completion, 0.04, mm, total)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        print(f"reference step: {times[-1]:.3f} s (grad norm {gn:.4g})", flush=True)
    print(f"reference {args.family}: micro-batches of {mb} sequences, {res['prompt_tokens']}-token prompts "
          f"({n_image} image tokens)", flush=True)
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
    grid = torch.tensor([list(grid_thw)] * args.prompts, device=dev)
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
