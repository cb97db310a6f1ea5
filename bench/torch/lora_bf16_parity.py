"""How close transformers itself gets to the engine fixtures' fp32 logits when it runs in bf16: the
calibration for `check-parity --device cuda` in bf16 (tolerance 2e-2 of the logits' scale), above all
for the LoRA logits of the cases with an adapter/ (PEFT adapters with enlarged random A and B).

For each case of test/fixtures/engine: the policy loaded with transformers on the GPU, the committed
pixel values and token ids; logits with and without the adapter in fp32 (a check of this script: they
should match expected.safetensors to ~1e-5) and in bf16 (weights and activations, as a model loaded with
torch_dtype=bfloat16; the adapter applied as PEFT does, in the adapter's dtype, added to the base output).
The adapter is applied with forward hooks (out += scale * B(A(x))): no peft needed.
Prints one line per case and measurement, then one JSON object.

  python3 bench/torch/lora_bf16_parity.py [test/fixtures/engine]
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file

from transformers import Qwen2VLForConditionalGeneration

IMAGE = 60  # the fixtures' image token id (scripts/gen/engine_fixtures.py)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def forward_kwargs(model, ids, pv, grid, device):
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    kw = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    import inspect
    for m in (model, getattr(model, "model", None)):
        if m is not None and "mm_token_type_ids" in inspect.signature(m.forward).parameters:
            kw["mm_token_type_ids"] = (input_ids == IMAGE).long()
            break
    if pv is not None:
        kw["pixel_values"] = pv
        kw["image_grid_thw"] = grid
    return kw


def add_adapter(model, adapter_dir, dtype):
    cfg = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    scale = cfg["lora_alpha"] / cfg["r"]
    sd = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    mods = dict(model.named_modules())
    hooks = []
    for k, a in sd.items():
        if not k.endswith(".lora_A.weight"):
            continue
        path = k[len("base_model.model."):-len(".lora_A.weight")]
        b = sd[k.replace(".lora_A.", ".lora_B.")]
        alts = [path, path.replace("model.language_model.", "model."), path.replace("model.visual.", "visual."),
                "model." + path]
        found = [p for p in alts if p in mods]
        if not found:
            raise KeyError(f"no module {path} in the model for {k}")
        mod = mods[found[0]]
        A = a.to(mod.weight.device, dtype)
        B = b.to(mod.weight.device, dtype)

        def hook(m, inp, out, A=A, B=B):
            x = inp[0].to(A.dtype)
            return out + (torch.nn.functional.linear(torch.nn.functional.linear(x, A), B) * scale).to(out.dtype)

        hooks.append(mod.register_forward_hook(hook))
    return hooks


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "test/fixtures/engine"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    res = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__, "cases": {}}
    for name in sorted(os.listdir(root)):
        case = os.path.join(root, name)
        if not os.path.exists(os.path.join(case, "meta.json")):
            continue
        meta = json.load(open(os.path.join(case, "meta.json")))
        exp = load_file(os.path.join(case, "expected.safetensors"))
        pv, grid = None, None
        if meta.get("model_images"):
            ins = load_file(os.path.join(case, "inputs.safetensors"))
            pv = torch.cat([ins[f"{n}.pixel_values"] for n in meta["model_images"]]).to(device)
            grid = torch.tensor([meta["images"][n]["grid_thw"] for n in meta["model_images"]], dtype=torch.long, device=device)
        adapter = os.path.join(case, "adapter")
        out = {}
        try:
            run_case(name, case, meta, exp, pv, grid, adapter, device, out)
        except Exception as e:  # noqa: BLE001 - one case failing leaves the others measured
            print(f"{name}: error {type(e).__name__}: {e}", flush=True)
            out["error"] = f"{type(e).__name__}: {e}"[:300]
        res["cases"][name] = out
    print(json.dumps(res))


def run_case(name, case, meta, exp, pv, grid, adapter, device, out):
    for dtype in (torch.float32, torch.bfloat16):
        tag = "fp32" if dtype == torch.float32 else "bf16"
        model = Qwen2VLForConditionalGeneration.from_pretrained(os.path.join(case, "policy")).to(device, dtype).eval()
        for lora in ([False, True] if os.path.isdir(adapter) else [False]):
            hooks = add_adapter(model, adapter, dtype) if lora else []
            key = "lora_logits" if lora else "logits"
            worst = 0.0
            for i, comp in enumerate(meta["completions"]):
                ids = meta["prefix"] + comp
                with torch.no_grad():
                    lg = model(**forward_kwargs(model, ids, None if pv is None else pv.to(dtype), grid, device)).logits[0]
                want = exp[f"seq{i}.{key}"].to(device)
                got = lg[-want.shape[0]:].float()
                v = float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
                worst = max(worst, v)
                print(f"{name} {tag} seq{i}.{key} max_abs/scale {v:.3e}", flush=True)
            out[f"{tag}.{key}"] = worst
            for h in hooks:
                h.remove()
        del model


if __name__ == "__main__":
    main()
