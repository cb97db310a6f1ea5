#!/usr/bin/env python3
"""Engine parity fixtures: tiny random Qwen2-VL, Qwen2.5-VL and Qwen3-VL models run through transformers in fp32.

Usage: python3 scripts/gen/engine_fixtures.py OUT_DIR [--device cpu|cuda] [--dump-sources DIR]
                                              [--family qwen2_vl,qwen2_5_vl,qwen3_vl] [--only NAME]

Writes one folder per case (the layout of issues 2 and 4, checked by `vqalab check-parity DIR`):
  policy/, reference/        Hugging Face checkpoint folders (config.json + model.safetensors);
                             policy in F32, reference in BF16 (so BF16 loading is exercised too)
  images/<name>.png          the images, sized so that the processor does not resize them
  inputs.safetensors         <name>.pixel_values: the image processor's float32 output
  meta.json                  prefix, completions, advantages, beta, model_images, images{grid_thw,
                             min_pixels, max_pixels}, and facts about the run
  expected.safetensors       seq{i}.logits (prompt + completion i), seq{i}.logprobs, seq{i}.entropy,
                             seq{i}.ref_logprobs, seq{i}.position_ids (3, L) as transformers computed
                             them, loss, grad.<name> for every tensor of policy/model.safetensors
                             (under the checkpoint's own names)
  adapter/ (some cases)      a PEFT LoRA adapter saved by peft, with seq{i}.lora_logits expected
  debug.safetensors          the vision tower's output (image_embeds) and DeepStack features, for
                             locating a mismatch (not read by the checker)

The loss is (1/N) sum over all completion tokens of -A_i exp(lp - sg(lp)) + beta (exp(ref - lp) -
(ref - lp) - 1), N = total completion tokens. Runs in fp32 with TF32 off; CPU by default (exact and
deterministic; these models are tiny).
"""
import argparse
import inspect
import json
import os
import shutil
import sys
import traceback

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import transformers

FAMILIES = {
    # model_type: (config class, model class, description)
    "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", "Qwen2-VL"),
    "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "Qwen2.5-VL"),
    "qwen3_vl": ("Qwen3VLConfig", "Qwen3VLForConditionalGeneration", "Qwen3-VL"),
}


def family_classes(family):
    cfg_name, model_name, _ = FAMILIES[family]
    return getattr(transformers, cfg_name), getattr(transformers, model_name)

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

VOCAB = 64
EOS, VSTART, VEND, IMAGE, VIDEO = 57, 58, 59, 60, 61
TEXT_IDS = 57  # ordinary text tokens are drawn from [0, 57)

# name, text dims, vision dims, images (grid h, w in patches), completions, options
CASES = [
    dict(name="tied_gqa2_one_image", form="flat", naming="published", tied=True,
         hidden=32, inter=48, layers=2, heads=4, kv=2, section=[2, 1, 1], theta=10000.0,
         vdepth=2, vembed=16, vheads=2, vratio=2, images=[(4, 6)], completions=[5, 3], beta=0.04, adapter=True),
    dict(name="untied_mqa_two_images", form="nested", naming="internal", tied=False,
         hidden=32, inter=40, layers=2, heads=2, kv=1, section=[4, 2, 2], theta=1000000.0,
         vdepth=1, vembed=16, vheads=2, vratio=2, images=[(2, 2), (2, 6)], completions=[4, 6, 2], beta=0.1),
    dict(name="mha_odd_grid_text_after", form="nested", naming="published", tied=False,
         hidden=32, inter=32, layers=3, heads=2, kv=2, section=[2, 3, 3], theta=10000.0,
         vdepth=2, vembed=16, vheads=2, vratio=4, images=[(6, 2)], completions=[3, 3, 5, 1], beta=0.0),
    dict(name="gqa3_text_only", form="flat", naming="published", tied=True,
         hidden=48, inter=64, layers=2, heads=6, kv=2, section=[1, 2, 1], theta=10000.0,
         vdepth=1, vembed=16, vheads=2, vratio=2, images=[], completions=[6, 2], beta=0.04),
    # Qwen2.5-VL: RMSNorm + gated SiLU vision MLP, window attention (window_size 56 = 2x2 merged tokens
    # per window with 14-pixel patches; 112 = 4x4), full attention at fullatt_block_indexes
    dict(name="q25_tied_gqa2_windows", family="qwen2_5_vl", form="flat", naming="published", tied=True,
         hidden=32, inter=48, layers=2, heads=4, kv=2, section=[2, 1, 1], theta=10000.0,
         vdepth=3, vembed=16, vheads=2, vinter=24, window=56, fullatt=[1],
         images=[(8, 12)], completions=[5, 3], beta=0.04, adapter=True),
    dict(name="q25_untied_mqa_two_images_padded_windows", family="qwen2_5_vl", form="nested", naming="internal",
         tied=False, hidden=32, inter=40, layers=2, heads=2, kv=1, section=[4, 2, 2], theta=1000000.0,
         vdepth=2, vembed=16, vheads=2, vinter=32, window=56, fullatt=[0],
         images=[(6, 10), (2, 2)], completions=[4, 6, 2], beta=0.1),
    dict(name="q25_gqa3_window112_text_after", family="qwen2_5_vl", form="nested", naming="published", tied=False,
         hidden=48, inter=64, layers=2, heads=6, kv=2, section=[1, 2, 1], theta=10000.0,
         vdepth=2, vembed=16, vheads=2, vinter=24, window=112, fullatt=[],
         images=[(10, 6)], completions=[3, 3, 5, 1], beta=0.0),
    # Qwen3-VL (dense): q/k RMSNorm, explicit head_dim, interleaved M-RoPE, patch 16, learned position
    # embeddings interpolated to the grid, DeepStack
    dict(name="q3_tied_gqa2_deepstack", family="qwen3_vl", form="hub", naming="internal", tied=True,
         hidden=32, inter=48, layers=3, heads=4, kv=2, head_dim=16, section=[3, 3, 2], theta=5000000.0,
         vdepth=3, vembed=16, vheads=2, vinter=24, npos=16, deepstack=[0, 2],
         images=[(6, 8)], completions=[5, 3], beta=0.04, adapter=True),
    dict(name="q3_untied_mqa_two_images", family="qwen3_vl", form="nested", naming="internal", tied=False,
         hidden=32, inter=40, layers=2, heads=2, kv=1, head_dim=16, section=[2, 3, 3], theta=1000000.0,
         vdepth=2, vembed=16, vheads=2, vinter=32, npos=36, deepstack=[1],
         images=[(4, 4), (2, 6)], completions=[4, 6, 2], beta=0.1),
    dict(name="q3_mha_text_only", family="qwen3_vl", form="nested", naming="published", tied=False,
         hidden=32, inter=32, layers=2, heads=2, kv=2, head_dim=24, section=[4, 4, 4], theta=10000.0,
         vdepth=1, vembed=16, vheads=2, vinter=16, npos=16, deepstack=[0],
         images=[], completions=[6, 2], beta=0.04),
]

MIN_PIXELS = 28 * 28
MAX_PIXELS = 28 * 28 * 64


def fam(c):
    return c.get("family", "qwen2_vl")


def patch_size(c):
    return 16 if fam(c) == "qwen3_vl" else 14


def pixel_bounds(c):
    f = patch_size(c) * 2
    return f * f, f * f * 64


def processor_settings(c):
    """What the image processor of the family uses (also written to meta.json for src/vision)."""
    if fam(c) == "qwen3_vl":
        return dict(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5, 0.5, 0.5],
                    image_std=[0.5, 0.5, 0.5])
    return dict(patch_size=14, merge_size=2, temporal_patch_size=2,
                image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])


def to_published(n):
    if n.startswith("model.visual."):
        return n[len("model."):]
    if n.startswith("model.language_model."):
        return "model." + n[len("model.language_model."):]
    return n


def to_internal(n):
    p = to_published(n)
    if p.startswith("visual."):
        return "model." + p
    if p.startswith("model."):
        return "model.language_model." + p[len("model."):]
    return p


def config_dicts(c):
    """(nested dict for the family's config class, the file form named by c["form"] or None)."""
    if fam(c) == "qwen2_5_vl":
        return config_dicts_q25(c)
    if fam(c) == "qwen3_vl":
        return config_dicts_q3(c)
    vision = dict(depth=c["vdepth"], embed_dim=c["vembed"], hidden_size=c["hidden"], hidden_act="quick_gelu",
                  mlp_ratio=c["vratio"], num_heads=c["vheads"], in_channels=3, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    text = dict(vocab_size=VOCAB, hidden_size=c["hidden"], intermediate_size=c["inter"],
                num_hidden_layers=c["layers"], num_attention_heads=c["heads"], num_key_value_heads=c["kv"],
                rms_norm_eps=1e-6, max_position_embeddings=256, tie_word_embeddings=c["tied"],
                rope_parameters=dict(rope_type="default", rope_theta=c["theta"], mrope_section=c["section"]),
                eos_token_id=EOS)
    nested = dict(model_type="qwen2_vl", text_config=text, vision_config=vision, image_token_id=IMAGE,
                  video_token_id=VIDEO, vision_start_token_id=VSTART, vision_end_token_id=VEND,
                  tie_word_embeddings=c["tied"])
    flat = dict(architectures=["Qwen2VLForConditionalGeneration"], model_type="qwen2_vl", vocab_size=VOCAB,
                hidden_size=c["hidden"], intermediate_size=c["inter"], num_hidden_layers=c["layers"],
                num_attention_heads=c["heads"], num_key_value_heads=c["kv"], rms_norm_eps=1e-6,
                rope_theta=c["theta"], max_position_embeddings=256, use_sliding_window=False, sliding_window=256,
                max_window_layers=c["layers"], rope_scaling=dict(type="mrope", mrope_section=c["section"]),
                tie_word_embeddings=c["tied"], hidden_act="silu", image_token_id=IMAGE, video_token_id=VIDEO,
                vision_start_token_id=VSTART, vision_end_token_id=VEND, eos_token_id=EOS, torch_dtype="float32",
                vision_config=dict(depth=c["vdepth"], embed_dim=c["vembed"], mlp_ratio=c["vratio"],
                                   num_heads=c["vheads"], in_chans=3, hidden_size=c["hidden"], patch_size=14,
                                   spatial_merge_size=2, temporal_patch_size=2))
    return nested, flat


def config_dicts_q25(c):
    vision = dict(depth=c["vdepth"], hidden_size=c["vembed"], intermediate_size=c["vinter"], num_heads=c["vheads"],
                  out_hidden_size=c["hidden"], hidden_act="silu", in_channels=3, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=c["window"],
                  fullatt_block_indexes=c["fullatt"], tokens_per_second=2)
    text = dict(vocab_size=VOCAB, hidden_size=c["hidden"], intermediate_size=c["inter"],
                num_hidden_layers=c["layers"], num_attention_heads=c["heads"], num_key_value_heads=c["kv"],
                rms_norm_eps=1e-6, max_position_embeddings=256, tie_word_embeddings=c["tied"],
                rope_parameters=dict(rope_type="default", rope_theta=c["theta"], mrope_section=c["section"]),
                eos_token_id=EOS)
    nested = dict(model_type="qwen2_5_vl", text_config=text, vision_config=vision, image_token_id=IMAGE,
                  video_token_id=VIDEO, vision_start_token_id=VSTART, vision_end_token_id=VEND,
                  tie_word_embeddings=c["tied"])
    # the published Qwen2.5-VL config.json form (language model fields at the top)
    flat = dict(architectures=["Qwen2_5_VLForConditionalGeneration"], model_type="qwen2_5_vl", vocab_size=VOCAB,
                hidden_size=c["hidden"], intermediate_size=c["inter"], num_hidden_layers=c["layers"],
                num_attention_heads=c["heads"], num_key_value_heads=c["kv"], rms_norm_eps=1e-6,
                rope_theta=c["theta"], max_position_embeddings=256, use_sliding_window=False, sliding_window=256,
                max_window_layers=c["layers"], rope_scaling=dict(type="mrope", mrope_section=c["section"]),
                tie_word_embeddings=c["tied"], hidden_act="silu", image_token_id=IMAGE, video_token_id=VIDEO,
                vision_start_token_id=VSTART, vision_end_token_id=VEND, eos_token_id=EOS, torch_dtype="float32",
                vision_config=dict(depth=c["vdepth"], hidden_act="silu", hidden_size=c["vembed"],
                                   intermediate_size=c["vinter"], num_heads=c["vheads"], in_chans=3,
                                   out_hidden_size=c["hidden"], patch_size=14, spatial_merge_size=2,
                                   spatial_patch_size=14, window_size=c["window"],
                                   fullatt_block_indexes=c["fullatt"], tokens_per_second=2,
                                   temporal_patch_size=2))
    return nested, flat


def config_dicts_q3(c):
    vision = dict(depth=c["vdepth"], hidden_size=c["vembed"], hidden_act="gelu_pytorch_tanh",
                  intermediate_size=c["vinter"], num_heads=c["vheads"], in_channels=3, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=c["hidden"],
                  num_position_embeddings=c["npos"], deepstack_visual_indexes=c["deepstack"])
    text = dict(vocab_size=VOCAB, hidden_size=c["hidden"], intermediate_size=c["inter"],
                num_hidden_layers=c["layers"], num_attention_heads=c["heads"], num_key_value_heads=c["kv"],
                head_dim=c["head_dim"], hidden_act="silu", rms_norm_eps=1e-6, max_position_embeddings=256,
                tie_word_embeddings=c["tied"], attention_bias=False,
                rope_parameters=dict(rope_type="default", rope_theta=c["theta"], mrope_section=c["section"],
                                     mrope_interleaved=True),
                eos_token_id=EOS)
    nested = dict(model_type="qwen3_vl", text_config=text, vision_config=vision, image_token_id=IMAGE,
                  video_token_id=VIDEO, vision_start_token_id=VSTART, vision_end_token_id=VEND,
                  tie_word_embeddings=c["tied"])
    # the released Qwen3-VL config.json form: nested, rope in text_config.rope_scaling + rope_theta
    hub_text = dict(text, model_type="qwen3_vl_text", rope_theta=c["theta"], dtype="float32",
                    rope_scaling=dict(mrope_interleaved=True, mrope_section=c["section"], rope_type="default"))
    del hub_text["rope_parameters"]
    hub = dict(architectures=["Qwen3VLForConditionalGeneration"], model_type="qwen3_vl", text_config=hub_text,
               vision_config=dict(vision, model_type="qwen3_vl", initializer_range=0.02), image_token_id=IMAGE,
               video_token_id=VIDEO, vision_start_token_id=VSTART, vision_end_token_id=VEND,
               tie_word_embeddings=c["tied"], transformers_version="4.57.0")
    return nested, hub


def randomize(model, gen):
    """Weights large enough that logits spread (the default init makes them nearly uniform)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / (fan_in ** 0.5))
                if "embed_tokens" in name or "lm_head" in name:
                    p.mul_(fan_in ** 0.5 * 0.5)
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:  # norm weights
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))


def make_image(rng, h, w):
    """A smooth colourful image with a few rectangles, h x w pixels."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), dtype=np.float64)
    for ch in range(3):
        a, b, c = rng.uniform(-1, 1, 3)
        img[..., ch] = 128 + 60 * np.sin(a * x / 7 + b * y / 5 + c * 3)
    for _ in range(3):
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[y0:y0 + rng.integers(4, h // 2 + 4), x0:x0 + rng.integers(4, w // 2 + 4)] = rng.integers(0, 256, 3)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def image_processor(case=None):
    errors = []
    mn, mx = pixel_bounds(case) if case else (MIN_PIXELS, MAX_PIXELS)
    extra = {}
    if case is not None and fam(case) != "qwen2_vl":
        ps = processor_settings(case)
        extra = dict(patch_size=ps["patch_size"], merge_size=ps["merge_size"],
                     temporal_patch_size=ps["temporal_patch_size"], image_mean=ps["image_mean"],
                     image_std=ps["image_std"])
    for cls_name in ("Qwen2VLImageProcessor", "Qwen2VLImageProcessorFast"):
        cls = getattr(transformers, cls_name, None)
        if cls is None:
            continue
        for kwargs in (dict(size={"shortest_edge": mn, "longest_edge": mx}, **extra),
                       dict(min_pixels=mn, max_pixels=mx, **extra)):
            try:
                return cls(**kwargs), f"{cls_name}({kwargs})"
            except Exception as e:  # noqa: BLE001
                errors.append(f"{cls_name}{kwargs}: {e}")
    raise RuntimeError("no Qwen2-VL image processor: " + "; ".join(errors))


def takes_mm_token_type_ids(model):
    base = getattr(model, "base_model", model)
    for m in (model, getattr(base, "model", None), getattr(model, "model", None)):
        if m is not None and "mm_token_type_ids" in inspect.signature(m.forward).parameters:
            return True
    return False


def forward_logits(model, ids, pv, grid, device):
    """Logits (L, V) of one sequence, as transformers computes them (mm_token_type_ids for M-RoPE)."""
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    kw = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    if takes_mm_token_type_ids(model):
        kw["mm_token_type_ids"] = (input_ids == IMAGE).long()
    if pv is not None:
        kw["pixel_values"] = pv
        kw["image_grid_thw"] = grid
    return model(**kw).logits[0]


def rope_index_ours(ids, grids):
    """get_rope_index as understood from transformers' docs, for a cross-check of the fixture."""
    pos, st, cur = [[], [], []], 0, 0
    L = len(ids)
    for (t, h, w) in grids:
        ed = ids.index(IMAGE, st)
        for i in range(st, ed):
            for a in range(3):
                pos[a].append(cur + i - st)
        base = cur + ed - st
        gh, gw = h // 2, w // 2
        for ti in range(t):
            for hi in range(gh):
                for wi in range(gw):
                    pos[0].append(base + ti)
                    pos[1].append(base + hi)
                    pos[2].append(base + wi)
        cur = base + max(t - 1, gh - 1, gw - 1) + 1
        st = ed + t * gh * gw
    for i in range(st, L):
        for a in range(3):
            pos[a].append(cur + i - st)
    return torch.tensor(pos, dtype=torch.long)


def transformers_rope_index(model, ids, grid, device):
    """transformers' own positions for the sequence; (3, L) or None with the reason."""
    inner = model.model
    fn = getattr(inner, "get_rope_index", None)
    if fn is None:
        return None, "no get_rope_index"
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    sig = inspect.signature(fn)
    kw = {}
    if "input_ids" in sig.parameters:
        kw["input_ids"] = input_ids
    if "image_grid_thw" in sig.parameters:
        kw["image_grid_thw"] = grid
    if "attention_mask" in sig.parameters:
        kw["attention_mask"] = torch.ones_like(input_ids)
    if "mm_token_type_ids" in sig.parameters:
        kw["mm_token_type_ids"] = (input_ids == IMAGE).long()
    try:
        out = fn(**kw)
        pos = out[0] if isinstance(out, tuple) else out
        return pos[:, 0, :].cpu(), f"get_rope_index{tuple(kw)}"
    except Exception as e:  # noqa: BLE001
        return None, f"get_rope_index failed: {e}"


def save_checkpoint(model, folder, case, dtype, config_json):
    os.makedirs(folder, exist_ok=True)
    sd = {}
    for n, p in model.state_dict().items():
        if case["tied"] and n == "lm_head.weight":
            continue
        key = to_published(n) if case["naming"] == "published" else to_internal(n)
        sd[key] = p.detach().to(dtype).contiguous().cpu()
    save_file(sd, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write(config_json)
    return sd


def run_case(case, out, device, report):
    name = case["name"]
    folder = os.path.join(out, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(os.path.join(folder, "images"))
    seed = sum(ord(ch) * (i + 1) for i, ch in enumerate(name)) % (2 ** 31)  # stable across runs
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    nested, flat = config_dicts(case)
    ConfigCls, ModelCls = family_classes(fam(case))
    config = ConfigCls(**nested)
    model = ModelCls(config).to(torch.float32)
    randomize(model, gen)
    model.eval()
    tied_actual = model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()

    # reference: the policy perturbed, rounded to bf16
    ref = ModelCls(config).to(torch.float32)
    with torch.no_grad():
        ref.load_state_dict(model.state_dict())
        for p in ref.parameters():
            p.add_(0.05 * p.abs().mean() * torch.randn(p.shape, generator=gen))
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    ref.eval()

    if case["form"] in ("flat", "hub"):
        config_json = json.dumps(flat, indent=2) + "\n"
    else:
        tmp = os.path.join(folder, "_cfg")
        config.save_pretrained(tmp)
        with open(os.path.join(tmp, "config.json")) as f:
            config_json = f.read()
        shutil.rmtree(tmp)
    policy_sd = save_checkpoint(model, os.path.join(folder, "policy"), case, torch.float32, config_json)
    save_checkpoint(ref, os.path.join(folder, "reference"), case, torch.bfloat16, config_json)

    # images through the processor
    proc, proc_desc = image_processor(case)
    P = patch_size(case)
    mn_px, mx_px = pixel_bounds(case)
    images_meta, model_images, pvs, grids = {}, [], [], []
    tensors_in = {}
    for k, (gh, gw) in enumerate(case["images"]):
        iname = f"img{k}"
        img = make_image(rng, gh * P, gw * P)
        img.save(os.path.join(folder, "images", iname + ".png"))
        enc = proc(images=[img], return_tensors="pt")
        pv = enc["pixel_values"].to(torch.float32)
        grid = enc["image_grid_thw"][0].tolist()
        assert grid == [1, gh, gw], f"{name}: processor resized {iname}: grid {grid}, wanted {[1, gh, gw]}"
        tensors_in[f"{iname}.pixel_values"] = pv.contiguous()
        images_meta[iname] = dict(grid_thw=grid, min_pixels=mn_px, max_pixels=mx_px)
        if fam(case) != "qwen2_vl":
            images_meta[iname].update(processor_settings(case))
        model_images.append(iname)
        pvs.append(pv)
        grids.append(grid)
    if tensors_in:
        save_file(tensors_in, os.path.join(folder, "inputs.safetensors"))
    pv_all = torch.cat(pvs).to(device) if pvs else None
    grid_all = torch.tensor(grids, dtype=torch.long, device=device) if grids else None

    # prompt: text, then each image as <vision_start> pads <vision_end>, text between and after
    prefix = [int(x) for x in rng.integers(0, TEXT_IDS, 3)]
    for (gh, gw) in case["images"]:
        prefix += [VSTART] + [IMAGE] * (gh * gw // 4) + [VEND]
        prefix += [int(x) for x in rng.integers(0, TEXT_IDS, 2)]
    prefix += [int(x) for x in rng.integers(0, TEXT_IDS, 3)]
    completions = []
    for L in case["completions"]:
        comp = [int(x) for x in rng.integers(0, TEXT_IDS, L)]
        if L >= 3:
            comp[-1] = EOS
        completions.append(comp)
    advantages = [float(x) for x in rng.normal(0, 1, len(completions))]
    beta = case["beta"]

    model.to(device)
    ref.to(device)
    expected = {}
    total_tokens = sum(len(c) for c in completions)
    loss = torch.zeros((), device=device)
    checks = {}
    for i, comp in enumerate(completions):
        ids = prefix + comp
        Lp = len(prefix)
        logits = forward_logits(model, ids, pv_all, grid_all, device)
        with torch.no_grad():
            ref_logits = forward_logits(ref, ids, pv_all, grid_all, device)
        tgt = torch.tensor(comp, dtype=torch.long, device=device)
        lsm = torch.log_softmax(logits[Lp - 1:Lp - 1 + len(comp)], dim=-1)
        lp = lsm.gather(1, tgt[:, None])[:, 0]
        ent = -(lsm.exp() * lsm).sum(-1)
        ref_lp = torch.log_softmax(ref_logits[Lp - 1:Lp - 1 + len(comp)], dim=-1).gather(1, tgt[:, None])[:, 0]
        per_tok = -advantages[i] * torch.exp(lp - lp.detach())
        if beta != 0.0:
            d = ref_lp - lp
            per_tok = per_tok + beta * (torch.exp(d) - d - 1)
        loss = loss + per_tok.sum() / total_tokens
        expected[f"seq{i}.logits"] = logits.detach().cpu().contiguous()
        expected[f"seq{i}.logprobs"] = lp.detach().cpu().contiguous()
        expected[f"seq{i}.entropy"] = ent.detach().cpu().contiguous()
        expected[f"seq{i}.ref_logprobs"] = ref_lp.detach().cpu().contiguous()
        pos_tf, how = transformers_rope_index(model, ids, grid_all, device)
        pos_ours = rope_index_ours(ids, grids)
        if pos_tf is not None:
            expected[f"seq{i}.position_ids"] = pos_tf.to(torch.float32).contiguous()
            checks[f"seq{i}.positions_match_ours"] = bool(torch.equal(pos_tf.long(), pos_ours))
        else:
            expected[f"seq{i}.position_ids"] = pos_ours.to(torch.float32).contiguous()
        checks[f"seq{i}.positions_from"] = how
        # does the default forward use M-RoPE? compare with explicit position_ids from our reading
        try:
            with torch.no_grad():
                input_ids = torch.tensor([ids], dtype=torch.long, device=device)
                kw = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                          position_ids=pos_ours[:, None, :].to(device))
                if pv_all is not None:
                    kw["pixel_values"] = pv_all
                    kw["image_grid_thw"] = grid_all
                lg2 = model(**kw).logits[0]
            checks[f"seq{i}.explicit_positions_max_diff"] = float((lg2 - logits).abs().max())
        except Exception as e:  # noqa: BLE001
            checks[f"seq{i}.explicit_positions_error"] = str(e)[:300]
    loss.backward()
    expected["loss"] = loss.detach().cpu().reshape(1)
    named = dict(model.named_parameters())
    for n, p in named.items():
        key = to_published(n) if case["naming"] == "published" else to_internal(n)
        if key not in policy_sd:
            raise RuntimeError(f"{name}: parameter {n} ({key}) is not in the saved checkpoint")
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        expected[f"grad.{key}"] = g.detach().cpu().contiguous()
    missing = [k for k in policy_sd if f"grad.{k}" not in expected]
    if missing:
        raise RuntimeError(f"{name}: no gradient for {missing}")
    save_file(expected, os.path.join(folder, "expected.safetensors"))
    if pv_all is not None:
        try:
            save_file(vision_debug(model, pv_all, grid_all), os.path.join(folder, "debug.safetensors"))
        except Exception as e:  # noqa: BLE001
            checks["debug_error"] = f"{type(e).__name__}: {e}"[:500]

    # transformers reads our files the same way (naming scheme, flat/nested config)
    try:
        kw = {}
        try:
            reloaded = ModelCls.from_pretrained(os.path.join(folder, "policy"), dtype=torch.float32)
        except TypeError:
            reloaded = ModelCls.from_pretrained(os.path.join(folder, "policy"), torch_dtype=torch.float32)
        reloaded.to(device).eval()
        with torch.no_grad():
            lg = forward_logits(reloaded, prefix + completions[0], pv_all, grid_all, device)
        checks["reload_max_diff"] = float((lg - expected["seq0.logits"].to(device)).abs().max())
        checks["reload_tied"] = reloaded.lm_head.weight.data_ptr() == reloaded.get_input_embeddings().weight.data_ptr()
    except Exception as e:  # noqa: BLE001
        checks["reload_error"] = f"{type(e).__name__}: {e}"[:500]

    # greedy continuation (for the sampler at temperature 0)
    try:
        input_ids = torch.tensor([prefix], dtype=torch.long, device=device)
        kw = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=6,
                  do_sample=False, eos_token_id=None, pad_token_id=0)
        if takes_mm_token_type_ids(model):
            kw["mm_token_type_ids"] = (input_ids == IMAGE).long()
        if pv_all is not None:
            kw["pixel_values"] = pv_all
            kw["image_grid_thw"] = grid_all
        with torch.no_grad():
            g = model.generate(**kw)
        greedy = [int(x) for x in g[0, len(prefix):].tolist()]
    except Exception as e:  # noqa: BLE001
        greedy = None
        checks["generate_error"] = f"{type(e).__name__}: {e}"[:500]

    meta = dict(
        family=fam(case),
        description=f"tiny random {FAMILIES[fam(case)][2]}, {case['form']} config, {case['naming']} tensor names, "
                    f"{'tied' if case['tied'] else 'untied'} head, heads {case['heads']}/{case['kv']}, "
                    f"mrope_section {case['section']}, {len(case['images'])} image(s)",
        prefix=prefix, completions=completions, advantages=advantages, beta=beta,
        model_images=model_images, images=images_meta, greedy_completion=greedy,
        tie_word_embeddings=bool(tied_actual), naming=case["naming"], config_form=case["form"],
        loss=float(loss), transformers_version=transformers.__version__, torch_version=torch.__version__,
        device=device, dtype="float32", processor=proc_desc, checks=checks,
    )

    if case.get("adapter"):
        try:
            meta["adapter"] = make_adapter(model, case, folder, prefix, completions, pv_all, grid_all, device, gen, expected)
            save_file(expected, os.path.join(folder, "expected.safetensors"))
        except Exception as e:  # noqa: BLE001
            checks["adapter_error"] = f"{type(e).__name__}: {e}"[:800]
            shutil.rmtree(os.path.join(folder, "adapter"), ignore_errors=True)

    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    report[name] = dict(loss=float(loss), tied_actual=bool(tied_actual), checks=checks)
    print(f"{name}: loss {float(loss):.6f} tied {tied_actual} checks {json.dumps(checks)}", flush=True)


def vision_debug(model, pv, grid):
    """The vision tower's outputs (merger output in the image-token order, DeepStack features)."""
    out = {}
    with torch.no_grad():
        r = model.model.visual(pv, grid_thw=grid)

    def put(name, v):
        if isinstance(v, torch.Tensor):
            out[name] = v.detach().to(torch.float32).cpu().contiguous()
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                put(f"{name}.{i}", x)

    if isinstance(r, (torch.Tensor, list, tuple)):
        put("visual", r)
    else:  # a ModelOutput
        for k, v in r.items():
            put(k, v)
    return out


def make_adapter(model, case, folder, prefix, completions, pv_all, grid_all, device, gen, expected):
    """A PEFT LoRA adapter (random A and B) saved by peft, and the logits with it."""
    import peft
    from peft import LoraConfig, get_peft_model
    targets = {"qwen2_vl": ["q_proj", "v_proj", "down_proj", "qkv", "fc2"],
               "qwen2_5_vl": ["q_proj", "v_proj", "down_proj", "qkv", "up_proj"],
               "qwen3_vl": ["q_proj", "k_proj", "down_proj", "qkv"]}[fam(case)]  # "proj" would also match patch_embed.proj
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, bias="none")
    pm = get_peft_model(model, cfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    pm.eval()
    pm.save_pretrained(os.path.join(folder, "adapter"))
    with torch.no_grad():
        for i, comp in enumerate(completions):
            expected[f"seq{i}.lora_logits"] = forward_logits(pm, prefix + comp, pv_all, grid_all, device).detach().cpu().contiguous()
    keys = sorted(n for n, _ in pm.named_parameters() if "lora_" in n)
    return dict(r=4, alpha=8, target_modules=targets, peft_version=peft.__version__, module_keys_sample=keys[:6])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dump-sources", default=None)
    ap.add_argument("--only", default=None)
    ap.add_argument("--family", default=None, help="comma-separated model types (default: all)")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, device {args.device}", flush=True)
    for f in FAMILIES:
        try:
            _, M = family_classes(f)
            print(f"{M.__name__}.forward takes mm_token_type_ids:",
                  "mm_token_type_ids" in inspect.signature(M.forward).parameters, flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"{f}: {type(e).__name__}: {e}", flush=True)
    if args.dump_sources:
        os.makedirs(args.dump_sources, exist_ok=True)
        import importlib
        for f in FAMILIES:
            q = importlib.import_module(f"transformers.models.{f}")
            base = os.path.dirname(q.__file__)
            os.makedirs(os.path.join(args.dump_sources, f), exist_ok=True)
            for fn in os.listdir(base):
                if fn.endswith(".py"):
                    shutil.copy(os.path.join(base, fn), os.path.join(args.dump_sources, f, fn))
    report, failed = {}, []
    for case in CASES:
        if args.only and case["name"] not in args.only.split(","):
            continue
        if args.family and fam(case) not in args.family.split(","):
            continue
        try:
            run_case(case, args.out, args.device, report)
        except Exception:  # noqa: BLE001
            failed.append(case["name"])
            traceback.print_exc()
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(dict(report=report, failed=failed), f, indent=2)
    print("failed:", failed)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
