"""The model dims and prompt shapes of bench/torch/grpo_reference.py, per family (no torch needed).

Each family's dims are those `vqalab model init --preset NAME` writes (src/model/presets.ts,
src/model/presets-family.ts), as keyword arguments of transformers 5.17's nested config classes
(Qwen2VLConfig, Qwen2_5_VLConfig, Qwen3VLConfig: text_config / vision_config, rope in
rope_parameters, as scripts/gen/engine_fixtures.py builds them). The prompt shape is the Trainer's
for one 448² image (bench/trainer.ts prints it: promptTokens, imageTokens): text tokens before
<|vision_start|>, the image pads, <|vision_end|>, text tokens after; Qwen2-VL keeps the reference's
earlier 6 + 34 (issue 10/13's tables).

  python3 bench/torch/family_dims.py --check-config DIR [--family F]
      compares DIR/config.json (a folder of `vqalab model init` / `node trainer.mjs make-model`) with
      the family's dims here; prints each difference, exits 1 on any (family from config.json if not given).
"""
import argparse
import json
import os
import sys

IMAGE, VIDEO, VSTART, VEND = 151655, 151656, 151652, 151653
EOS, BOS = 151645, 151643

FAMILIES = {
    # Qwen2-VL-2B (--preset qwen2-vl-2b): the reference of issues 10 and 13
    "qwen2_vl": dict(
        preset="qwen2-vl-2b",
        config_class="Qwen2VLConfig",
        model_class="Qwen2VLForConditionalGeneration",
        vision=dict(depth=32, embed_dim=1280, hidden_size=1536, hidden_act="quick_gelu", mlp_ratio=4, num_heads=16,
                    in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        text=dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=32768,
                  tie_word_embeddings=True,
                  rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[16, 24, 24]),
                  eos_token_id=EOS),
        tied=True,
        # config.json leaves it out: the class default (Qwen2VLVisionConfig.hidden_act) is this value
        omitted=dict(vision=("hidden_act",)),
        before=6, after=34,
    ),
    # Qwen2.5-VL-3B-Instruct (--preset qwen2.5-vl-3b): window attention (112 px), full attention at 7/15/23/31
    "qwen2_5_vl": dict(
        preset="qwen2.5-vl-3b",
        config_class="Qwen2_5_VLConfig",
        model_class="Qwen2_5_VLForConditionalGeneration",
        vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                    hidden_act="silu", in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                    window_size=112, fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
        text=dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                  num_attention_heads=16, num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=128000,
                  tie_word_embeddings=True, hidden_act="silu", max_window_layers=70, use_sliding_window=False,
                  sliding_window=32768,
                  rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[16, 24, 24]),
                  bos_token_id=BOS, eos_token_id=EOS),
        tied=True,
        # the Qwen2.5-VL template's default system prompt, then the user turn (14 + 256 + 12 = 284 with the pads)
        before=14, after=12,
    ),
    # Qwen3-VL-2B-Instruct (--preset qwen3-vl-2b): patch 16, DeepStack at 5/11/17, q/k norms, interleaved M-RoPE
    "qwen3_vl": dict(
        preset="qwen3-vl-2b",
        config_class="Qwen3VLConfig",
        model_class="Qwen3VLForConditionalGeneration",
        vision=dict(depth=24, hidden_size=1024, hidden_act="gelu_pytorch_tanh", intermediate_size=4096, num_heads=16,
                    in_channels=3, patch_size=16, spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=2048,
                    num_position_embeddings=2304, deepstack_visual_indexes=[5, 11, 17]),
        text=dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, hidden_act="silu", rms_norm_eps=1e-6,
                  max_position_embeddings=262144, tie_word_embeddings=True, attention_bias=False,
                  rope_parameters=dict(rope_type="default", rope_theta=5e6, mrope_section=[24, 20, 20],
                                       mrope_interleaved=True),
                  bos_token_id=BOS, eos_token_id=EOS),
        tied=True,
        # no default system prompt in the Qwen3-VL template (3 + 196 + 12 = 213 with the pads)
        before=3, after=12,
    ),
}


def nested_config(family):
    """Keyword arguments of the family's transformers config class."""
    f = FAMILIES[family]
    return dict(model_type=family, text_config=dict(f["text"]), vision_config=dict(f["vision"]),
                image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VSTART, vision_end_token_id=VEND,
                tie_word_embeddings=f["tied"])


def image_shape(family, side=448):
    """(grid t, h, w in patches; values per patch row; image tokens after the 2 x 2 merge) of one side² image."""
    v = FAMILIES[family]["vision"]
    p, m, tp = v["patch_size"], v["spatial_merge_size"], v["temporal_patch_size"]
    if side % (p * m):
        raise ValueError(f"{family}: a {side}² image is not a multiple of {p * m} px (patch {p}, merge {m})")
    g = side // p
    return (1, g, g), v["in_channels"] * tp * p * p, g * g // (m * m)


def prompt_tokens(family, side=448):
    f = FAMILIES[family]
    return f["before"] + 1 + image_shape(family, side)[2] + 1 + f["after"]


# Keys whose names differ between config.json and the config classes' keyword arguments.
ALIASES = {"in_channels": ("in_channels", "in_chans")}


def check_config(folder, family=None):
    """(family, differences between FOLDER/config.json and the family's dims as lines: [] when they agree)."""
    with open(os.path.join(folder, "config.json")) as fh:
        cfg = json.load(fh)
    family = family or cfg.get("model_type")
    if family not in FAMILIES:
        return family, [f"model_type {cfg.get('model_type')!r}: not one of {', '.join(FAMILIES)}"]
    f = FAMILIES[family]
    text_file = cfg.get("text_config") or {}  # nested (Qwen3-VL); flat files keep the text fields at the top
    vision_file = cfg.get("vision_config") or {}
    out = []
    if cfg.get("model_type") != family:
        out.append(f"model_type: config.json {cfg.get('model_type')!r}, reference {family!r}")

    def same(a, b):
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, bool) or isinstance(b, bool):
            return a is b
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1)
        return a == b

    def compare(where, key, want, *sources, may_omit=False):
        names = ALIASES.get(key, (key,))
        for src in sources:
            for n in names:
                if n in src:
                    if not same(src[n], want):
                        out.append(f"{where}.{key}: config.json {src[n]!r}, reference {want!r}")
                    return
        if not may_omit:
            out.append(f"{where}.{key}: not in config.json (reference {want!r})")

    omitted = f.get("omitted", {})
    for k, want in f["vision"].items():
        compare("vision_config", k, want, vision_file, may_omit=k in omitted.get("vision", ()))
    for k, want in f["text"].items():
        if k == "rope_parameters":
            rope = text_file.get("rope_scaling") or cfg.get("rope_scaling") or text_file.get("rope_parameters") or {}
            compare("text", "rope_theta", want["rope_theta"], text_file, cfg, rope)
            compare("text", "mrope_section", want["mrope_section"], rope)
            if want.get("mrope_interleaved"):
                compare("text", "mrope_interleaved", True, rope)
            continue
        compare("text", k, want, text_file, cfg)
    for k, want in (("image_token_id", IMAGE), ("video_token_id", VIDEO), ("vision_start_token_id", VSTART),
                    ("vision_end_token_id", VEND), ("tie_word_embeddings", f["tied"])):
        compare("config", k, want, cfg)
    return family, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-config", required=True, metavar="DIR")
    ap.add_argument("--family", choices=sorted(FAMILIES), default=None)
    args = ap.parse_args()
    family, diffs = check_config(args.check_config, args.family)
    for d in diffs:
        print(f"config differs ({family}): {d}")
    if not diffs:
        print(f"config.json of {args.check_config} = the reference's {family} dims")
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
