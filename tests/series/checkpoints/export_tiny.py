"""Produce tiny REAL MXFP4 (and NVFP4) checkpoints with the real exporters, on CPU.

Runs in its own venv (build/venv/exporters: torch 2.13.0+cpu, amd-quark 0.13,
nvidia-modelopt 0.47.0, transformers 5.24.0); the harness builds it:

    PYTHONPATH=scripts python3 -m petit_series.harness exporters [NAME ...]

or directly:

    build/venv/exporters/bin/python tests/series/checkpoints/export_tiny.py --out build/checkpoints [NAME ...]

Each export goes to <out>/<name>/ and is skipped when <out>/<name>/EXPORT_OK
exists (cached).  A failed export writes <out>/<name>.FAILED with the error, so
that the tests that need it skip with that reason.

The model: a random LlamaForCausalLM, hidden 256, intermediate 512, 4 heads of
64 (2 KV heads), 2 layers, vocab 512 -- every linear has N%32 == 0 and
K%256 == 0 at TP=1 (and TP=2 for the MLP / o_proj).

Exports (same flows as docs/mxfp4-and-petit.md sections 3 and 4):
  quark_mxfp4          LLMTemplate("llama").get_config("mxfp4", exclude lm_head)
  quark_mxfp4_kvfp8    ... with kv_cache_scheme="fp8" (k/v_proj output_scale)
  quark_mxfp4_wo       "mxfp4_weight_only"
  modelopt_mxfp4       mtq.MXFP4_DEFAULT_CFG + export_hf_checkpoint
  modelopt_nvfp4       mtq.NVFP4_DEFAULT_CFG + export_hf_checkpoint (petit_nvfp4 regression)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

TINY = dict(
    hidden_size=256,
    intermediate_size=512,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    num_hidden_layers=2,
    vocab_size=512,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
)
SEED = 1234


def tiny_llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    cfg = LlamaConfig(**TINY)
    cfg.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    # Spread the weights a little so that the scales differ between blocks.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.mul_(1.0 + torch.rand(p.shape[0], 1, dtype=p.dtype))
    return model


def calib_batches(n=4, seq=32):
    import torch

    g = torch.Generator().manual_seed(SEED)
    return [torch.randint(3, TINY["vocab_size"], (1, seq), generator=g) for _ in range(n)]


def export_quark(out: Path, scheme: str, kv_fp8: bool) -> None:
    import torch
    from quark.torch import LLMTemplate, ModelQuantizer, export_safetensors

    model = tiny_llama()
    template = LLMTemplate.get("llama")
    kwargs = dict(scheme=scheme, exclude_layers=["lm_head"])
    if kv_fp8:
        kwargs["kv_cache_scheme"] = "fp8"
    qcfg = template.get_config(**kwargs)
    quantizer = ModelQuantizer(qcfg)
    batches = calib_batches()
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    with torch.no_grad():
        model = quantizer.quantize_model(model, loader)
        model = quantizer.freeze(model)
        export_safetensors(model, str(out), custom_mode="quark", weight_format="real_quantized", pack_method="reorder")


def export_modelopt(out: Path, algo: str) -> None:
    import torch
    import modelopt.torch.quantization as mtq
    from modelopt.torch.export import export_hf_checkpoint

    model = tiny_llama()
    cfg = {"mxfp4": mtq.MXFP4_DEFAULT_CFG, "nvfp4": mtq.NVFP4_DEFAULT_CFG}[algo]
    batches = calib_batches()

    def forward_loop(m):
        for b in batches:
            m(b)

    with torch.no_grad():
        model = mtq.quantize(model, cfg, forward_loop)
    export_hf_checkpoint(model, export_dir=str(out))


EXPORTS = {
    "quark_mxfp4": lambda out: export_quark(out, "mxfp4", kv_fp8=False),
    "quark_mxfp4_kvfp8": lambda out: export_quark(out, "mxfp4", kv_fp8=True),
    "quark_mxfp4_wo": lambda out: export_quark(out, "mxfp4_weight_only", kv_fp8=False),
    "modelopt_mxfp4": lambda out: export_modelopt(out, "mxfp4"),
    "modelopt_nvfp4": lambda out: export_modelopt(out, "nvfp4"),
}


def summarize(out: Path) -> dict:
    from safetensors import safe_open

    tensors = {}
    for f in sorted(out.glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():
                t = fh.get_slice(k)
                tensors[k] = [str(t.get_dtype()), list(t.get_shape())]
    cfg = json.loads((out / "config.json").read_text())
    return {"tensors": tensors, "quantization_config": cfg.get("quantization_config")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args(argv)
    names = args.names or list(EXPORTS)
    args.out.mkdir(parents=True, exist_ok=True)
    rc = 0
    for name in names:
        out = args.out / name
        failed = args.out / f"{name}.FAILED"
        if (out / "EXPORT_OK").exists() and not args.force:
            print(f"[export] {name}: cached")
            continue
        if out.exists():
            shutil.rmtree(out)
        if failed.exists():
            failed.unlink()
        tmp = args.out / f".{name}.tmp{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        t0 = time.time()
        try:
            EXPORTS[name](tmp)
            summary = summarize(tmp)
            (tmp / "EXPORT_SUMMARY.json").write_text(json.dumps(summary, indent=1))
            (tmp / "EXPORT_OK").write_text(f"{time.time() - t0:.1f}s\n")
            os.replace(tmp, out)
            print(f"[export] {name}: ok in {time.time() - t0:.0f}s")
        except Exception as e:  # record and go on
            rc = 1
            failed.write_text(f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"[export] {name}: FAILED ({type(e).__name__}: {e}); see {failed}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
