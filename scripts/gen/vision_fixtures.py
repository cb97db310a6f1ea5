#!/usr/bin/env python3
"""Make the vision parity fixtures with transformers' Qwen2-VL image processor (PIL backend).

Run where transformers, PIL, numpy, torch and safetensors are installed (no GPU needed):

    python3 scripts/gen/vision_fixtures.py --out test/fixtures/vision

Writes, under OUT:
  qwen2vl-pil/images/<name>.png|.jpg     the input images (made here from a fixed seed)
  qwen2vl-pil/inputs.safetensors         <name>.pixel_values: float32 [n_patches, 1176]
  qwen2vl-pil/meta.json                  {"images": {<name>: {grid_thw, min_pixels, max_pixels, ...}},
                                          "generator": {...versions...}}
      An image whose processing must fail has {"error": "<transformers' message>"} instead.
  smart_resize.json                      smart_resize outputs (or errors) over a table of sizes
  ../safetensors/reference.safetensors   tensors of several dtypes written by the safetensors library,
  ../safetensors/reference.json          with their values, to test our reader on a file we did not write

The layout is the one `vqalab check-parity DIR` reads; add a case by adding a folder like it.
Also reports how far transformers' default (torchvision) processor is from the PIL one.
"""
import argparse
import json
import os
import sys
import traceback

import numpy as np
from PIL import Image

REPORT = {"errors": []}


def note_error(what):
    REPORT["errors"].append({"what": what, "traceback": traceback.format_exc()})
    print(f"ERROR in {what}:\n{traceback.format_exc()}", file=sys.stderr)


def make_pixels(rng, h, w, channels=3):
    """Smooth colour waves plus noise: like a photo, with detail at every scale."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = []
    for c in range(channels):
        fx, fy = rng.uniform(5, 30, 2)
        planes.append(128 + 90 * np.sin(x / fx + 1.7 * c) * np.cos(y / fy - c))
    img = np.stack(planes, -1) + rng.normal(0, 18, (h, w, channels))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# name -> (height, width, kind, min_pixels, max_pixels). kind: rgb | gray | rgba | jpeg | flat
DEFAULT_MIN, DEFAULT_MAX = 56 * 56, 28 * 28 * 1280
IMAGES = {
    "plain_56x84": (56, 84, "rgb", DEFAULT_MIN, DEFAULT_MAX),          # no resize
    "plain_112x112": (112, 112, "rgb", DEFAULT_MIN, DEFAULT_MAX),      # the synth default size, no resize
    "gray_28x140": (28, 140, "gray", DEFAULT_MIN, DEFAULT_MAX),        # greyscale PNG, no resize
    "alpha_56x56": (56, 56, "rgba", DEFAULT_MIN, DEFAULT_MAX),         # alpha over white, no resize
    "photo_84x112": (84, 112, "jpeg", DEFAULT_MIN, DEFAULT_MAX),       # JPEG decode, no resize
    "odd_61x47": (61, 47, "rgb", DEFAULT_MIN, DEFAULT_MAX),            # down in h, up in w -> 56x56
    "small_33x45": (33, 45, "rgb", DEFAULT_MIN, DEFAULT_MAX),          # below min_pixels -> upscaled
    "big_150x201": (150, 201, "rgb", 28 * 28 * 4, 28 * 28 * 12),       # above max_pixels -> downscaled
    "half_70x98": (70, 98, "rgb", DEFAULT_MIN, DEFAULT_MAX),           # 2.5 and 3.5 patches: round half to even
    "wide_31x600": (31, 600, "rgb", DEFAULT_MIN, DEFAULT_MAX),         # aspect ratio 19 -> 28x588
    "toowide_30x6100": (30, 6100, "flat", DEFAULT_MIN, DEFAULT_MAX),   # aspect ratio 203: an error
}


def write_images(img_dir, rng):
    os.makedirs(img_dir, exist_ok=True)
    paths = {}
    for name, (h, w, kind, _, _) in IMAGES.items():
        if kind == "rgb":
            im, ext = Image.fromarray(make_pixels(rng, h, w)), "png"
        elif kind == "gray":
            im, ext = Image.fromarray(make_pixels(rng, h, w, 1)[:, :, 0]), "png"
        elif kind == "rgba":
            px = make_pixels(rng, h, w, 3)
            alpha = np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))
            alpha[: h // 4] = 255
            alpha[h // 4: h // 2] = 0
            im, ext = Image.fromarray(np.dstack([px, alpha])), "png"
        elif kind == "jpeg":
            im, ext = Image.fromarray(make_pixels(rng, h, w)), "jpg"
        elif kind == "flat":
            im, ext = Image.new("RGB", (w, h), (40, 120, 200)), "png"
        path = os.path.join(img_dir, f"{name}.{ext}")
        if ext == "jpg":
            im.save(path, quality=90, subsampling=2)
        else:
            im.save(path, optimize=False, compress_level=9)
        paths[name] = path
    return paths


def pil_processor_class():
    """transformers 5 names the PIL backend Qwen2VLImageProcessorPil; before, Qwen2VLImageProcessor was it."""
    import transformers
    cls = getattr(transformers, "Qwen2VLImageProcessorPil", None)
    if cls is None:
        try:
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil as cls
        except ImportError:
            from transformers import Qwen2VLImageProcessor as cls
    return cls


def make_processor(cls, min_px, max_px):
    # A fresh size dict each time: some versions mutate the class-level default in __init__.
    try:
        return cls(size={"shortest_edge": min_px, "longest_edge": max_px}, min_pixels=min_px, max_pixels=max_px)
    except (TypeError, ValueError):
        return cls(min_pixels=min_px, max_pixels=max_px)


def vision_case(case_dir, rng):
    import torch
    from safetensors.numpy import save_file
    import transformers
    import PIL

    paths = write_images(os.path.join(case_dir, "images"), rng)
    cls = pil_processor_class()
    meta = {
        "images": {},
        "generator": {
            "script": "scripts/gen/vision_fixtures.py",
            "processor": cls.__name__,
            "transformers": transformers.__version__,
            "pil": PIL.__version__,
            "numpy": np.__version__,
            "torch": torch.__version__,
            "backend": getattr(cls, "backend", None) if isinstance(getattr(cls, "backend", None), str) else None,
        },
    }
    tensors = {}
    tv_report = {}
    for name, (h, w, kind, min_px, max_px) in IMAGES.items():
        entry = {"min_pixels": min_px, "max_pixels": max_px, "original_size": [h, w]}
        try:
            proc = make_processor(cls, min_px, max_px)
            with Image.open(paths[name]) as im:
                im.load()
                out = proc(images=im, return_tensors="np")
            pv = np.asarray(out["pixel_values"], dtype=np.float32)
            grid = [int(v) for v in np.asarray(out["image_grid_thw"]).reshape(-1)]
            entry["grid_thw"] = grid
            entry["resized_size"] = [grid[1] * 14, grid[2] * 14]
            tensors[f"{name}.pixel_values"] = np.ascontiguousarray(pv)
        except Exception as e:  # the processor's own refusal is the fixture for error cases
            entry["error"] = f"{type(e).__name__}: {e}"
            entry["grid_thw"] = None
        meta["images"][name] = entry
        # How far is transformers' default processor (torchvision backend) from the PIL one?
        if "error" not in entry:
            try:
                from transformers import Qwen2VLImageProcessor
                tv = make_processor(Qwen2VLImageProcessor, min_px, max_px)
                with Image.open(paths[name]) as im:
                    im.load()
                    o2 = tv(images=im, return_tensors="np")
                d = np.abs(np.asarray(o2["pixel_values"], dtype=np.float32) - tensors[f"{name}.pixel_values"])
                tv_report[name] = {"class": type(tv).__name__, "max_abs": float(d.max()), "mean_abs": float(d.mean())}
            except Exception:
                note_error(f"torchvision comparison for {name}")
    # Several images in one call: the processor concatenates per-image patches in order.
    try:
        proc = make_processor(cls, DEFAULT_MIN, DEFAULT_MAX)
        ims = [Image.open(paths["plain_56x84"]), Image.open(paths["odd_61x47"])]
        out = proc(images=ims, return_tensors="np")
        cat = np.concatenate([tensors["plain_56x84.pixel_values"], tensors["odd_61x47.pixel_values"]])
        meta["multi_image"] = {
            "images": ["plain_56x84", "odd_61x47"],
            "grid_thw": np.asarray(out["image_grid_thw"]).tolist(),
            "equals_concatenation": bool(np.array_equal(np.asarray(out["pixel_values"], dtype=np.float32), cat)),
        }
    except Exception:
        note_error("multi-image call")
    meta["torchvision_vs_pil"] = tv_report
    # Debug aid, outside the case: PIL's RGB conversion and bicubic resize of each image as uint8,
    # to tell a resize difference from a normalisation or ordering difference.
    try:
        from transformers.image_transforms import convert_to_rgb
        debug = {}
        for name, entry in meta["images"].items():
            if entry.get("grid_thw") is None:
                continue
            with Image.open(paths[name]) as im:
                rgb = convert_to_rgb(im)
                rh, rw = entry["resized_size"]
                debug[f"{name}.rgb"] = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
                debug[f"{name}.resized"] = np.ascontiguousarray(np.asarray(rgb.resize((rw, rh), Image.BICUBIC), dtype=np.uint8))
        save_file(debug, os.path.join(os.path.dirname(case_dir), "debug_pil.safetensors"))
    except Exception:
        note_error("debug dump")
    print(json.dumps({k: v for k, v in meta.items() if k != "images"}, indent=1))
    for k, v in meta["images"].items():
        print(k, json.dumps(v))
    save_file(tensors, os.path.join(case_dir, "inputs.safetensors"))
    with open(os.path.join(case_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")


def smart_resize_table(path):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize
    rows = []
    sizes = [(28, 28), (27, 100), (10, 10), (56, 84), (61, 47), (33, 45), (70, 98), (42, 42), (14 * 5, 14 * 7),
             (480, 640), (640, 480), (333, 500), (1000, 1500), (4000, 3000), (31, 900), (30, 6100), (28, 5600),
             (28, 5601), (100, 20001), (224, 224), (1, 1000), (99, 99), (127, 255), (2048, 2048), (3000, 28)]
    limits = [(56 * 56, 28 * 28 * 1280), (28 * 28 * 4, 28 * 28 * 12), (256 * 28 * 28, 1280 * 28 * 28), (3136, 3136)]
    for h, w in sizes:
        for mn, mx in limits:
            row = {"height": h, "width": w, "min_pixels": mn, "max_pixels": mx}
            try:
                rh, rw = smart_resize(h, w, factor=28, min_pixels=mn, max_pixels=mx)
                row["resized"] = [int(rh), int(rw)]
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
    with open(path, "w") as f:
        json.dump({"factor": 28, "rows": rows}, f, indent=0)
        f.write("\n")


def safetensors_reference(out_dir):
    import torch
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    base = torch.randn(3, 5, generator=g) * 10
    tensors = {
        "model.embed.weight": base.clone(),
        "model.half": base.to(torch.float16),
        "model.brain": base.to(torch.bfloat16),
        "ids.i32": torch.arange(-3, 9, dtype=torch.int32).reshape(3, 4),
        "ids.i64": torch.tensor([-(2 ** 40), 0, 2 ** 53 + 1], dtype=torch.int64),
        "scalar": torch.tensor(1.5),
        "u8": torch.tensor([0, 7, 255], dtype=torch.uint8),
        "f64": torch.tensor([1 / 3], dtype=torch.float64),
    }
    save_file(tensors, os.path.join(out_dir, "reference.safetensors"), metadata={"format": "pt", "made_by": "safetensors.torch"})
    values = {}
    for k, t in tensors.items():
        if t.dtype == torch.int64:
            vals = [str(int(v)) for v in t.reshape(-1).tolist()]
        else:
            vals = t.to(torch.float64).reshape(-1).tolist()
        values[k] = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape), "values": vals}
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(values, f, indent=1, sort_keys=True)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="test/fixtures/vision")
    ap.add_argument("--seed", type=int, default=20241127)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    for what, fn in [
        ("vision case", lambda: vision_case(os.path.join(args.out, "qwen2vl-pil"), rng)),
        ("smart_resize table", lambda: smart_resize_table(os.path.join(args.out, "smart_resize.json"))),
        ("safetensors reference", lambda: safetensors_reference(os.path.join(args.out, "..", "safetensors"))),
    ]:
        try:
            fn()
        except Exception:
            note_error(what)
    with open(os.path.join(args.out, "generation_report.json"), "w") as f:
        json.dump(REPORT, f, indent=1)
    print(json.dumps({"errors": len(REPORT["errors"])}))
    return 1 if REPORT["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
