"""Model level: SGLang's own LlamaForCausalLM built with PetitMxfp4Config from
tiny REAL Quark / ModelOpt exports (tests/series/checkpoints/export_tiny.py),
loaded through its own load_weights(); every quantized linear is compared with
the independent decoder (tolerance: see layer_cases.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import layer_cases as lc
import mxfp4_ref as mx
import sgl_cpu

pytestmark = [pytest.mark.petit_mxfp4, pytest.mark.slow, pytest.mark.usefixtures("dist_tp1", "rocm")]


def ckpt_dir(name: str) -> Path:
    d = sgl_cpu.CHECKPOINTS / name
    if (d / "EXPORT_OK").exists():
        return d
    for failed in (sgl_cpu.CHECKPOINTS / f"{name}.FAILED", sgl_cpu.CHECKPOINTS / "EXPORTERS_ENV.FAILED"):
        if failed.exists():
            first = failed.read_text().strip().splitlines()[0][:300]
            pytest.skip(f"checkpoint {name} could not be produced: {first} (see {failed})")
    pytest.skip(f"checkpoint {name} not built in {sgl_cpu.CHECKPOINTS}: run `python3 -m petit_series.harness exporters`")


def load_tensors(d: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def raw_quant_config(d: Path, shape: str) -> dict:
    cfg = json.loads((d / "config.json").read_text())
    if shape == "nested":
        return json.loads((d / "hf_quant_config.json").read_text())
    return cfg["quantization_config"]


def build_model(d: Path, raw: dict):
    from transformers import LlamaConfig

    sgl_cpu.ensure_fused_moe_importable()

    hf_config = LlamaConfig.from_pretrained(str(d))
    qc = lc.petit_mxfp4_config(raw)
    return sgl_cpu.build_llama(hf_config, qc), hf_config, qc


def postprocess(model) -> int:
    n = 0
    for _, module in model.named_modules():
        qm = getattr(module, "quant_method", None)
        if qm is not None:
            qm.process_weights_after_loading(module)
            n += 1
    return n


FUSED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}


def ref_weight(tensors: dict, prefix: str, leaf: str) -> torch.Tensor:
    parts = FUSED.get(leaf, [leaf])
    base = prefix[: -len(leaf)]
    ws = [mx.dequantize_mxfp4(tensors[f"{base}{p}.weight"], tensors[f"{base}{p}.weight_scale"]) for p in parts]
    return torch.cat(ws, 0)


CASES = [
    ("quark_mxfp4", "flat"),
    ("quark_mxfp4_kvfp8", "flat"),
    ("quark_mxfp4_wo", "flat"),
    ("modelopt_mxfp4", "flat"),
    ("modelopt_mxfp4", "nested"),
]


@pytest.mark.parametrize("name,shape", CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_llama_from_real_export(name, shape, capsys):
    d = ckpt_dir(name)
    tensors = load_tensors(d)
    raw = raw_quant_config(d, shape)
    model, hf_config, qc = build_model(d, raw)
    model.load_weights(iter(list(tensors.items())))
    n_post = postprocess(model)

    checked, negz = [], 0
    for prefix, module in model.named_modules():
        qm = getattr(module, "quant_method", None)
        if qm is None or type(qm).__name__ != "PetitMxfp4LinearMethod":
            continue
        leaf = prefix.rsplit(".", 1)[-1]
        w = ref_weight(tensors, prefix, leaf)
        for p in FUSED.get(leaf, [leaf]):
            negz += mx.count_negative_zeros(tensors[f"{prefix[: -len(leaf)]}{p}.weight"])
        x = lc.rand_x(5, w.shape[1], seed=len(checked))
        out = lc.run(module, x)
        lc.assert_matches(out, x.float() @ w.t(), f"{name}:{prefix}")
        checked.append(prefix)
    L = hf_config.num_hidden_layers
    assert len(checked) == 4 * L, checked  # qkv, o, gate_up, down per layer

    # excluded modules stay unquantized and hold the checkpoint's bf16 weights

    lm_qm = getattr(model.lm_head, "quant_method", None)
    assert lm_qm is None or type(lm_qm).__name__.startswith("Unquantized"), lm_qm
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert torch.equal(model.lm_head.weight.data, tensors["lm_head.weight"])
    assert torch.equal(model.model.embed_tokens.weight.data, tensors["model.embed_tokens.weight"])

    # FP8 KV cache scales (Quark k/v_proj.output_scale) end up on the attention
    kv_names = [k for k in tensors if k.endswith("_proj.output_scale")]
    if kv_names:
        attn = model.model.layers[0].self_attn.attn
        assert hasattr(attn, "k_scale"), "k/v output scales present but attention has no k_scale"
        k_ck = float(tensors["model.layers.0.self_attn.k_proj.output_scale"].float())
        assert abs(float(torch.as_tensor(attn.k_scale).float().reshape(-1)[0]) - k_ck) <= 1e-6 * max(1.0, abs(k_ck)) or getattr(attn, "k_scale_float", None) == pytest.approx(k_ck)

    with capsys.disabled():
        print(f"\n[model] {name} ({shape}): {len(checked)} quantized linears match, -0 nibbles in checkpoint: {negz}, post-processed modules: {n_post}, kv scales: {len(kv_names)}")


def test_modelopt_export_has_negative_zeros():
    d = ckpt_dir("modelopt_mxfp4")
    t = load_tensors(d)
    n = sum(mx.count_negative_zeros(v) for k, v in t.items() if k.endswith(".weight") and v.dtype == torch.uint8)
    assert n > 0, "ModelOpt 0.47 writes -0 for small negatives; the export should contain some"


def test_exports_decode_consistently():
    """Our decoder on both exporters' tensors gives finite weights with the
    scale bytes seen in real checkpoints (119..122 region)."""
    for name in ("quark_mxfp4", "modelopt_mxfp4"):
        d = ckpt_dir(name)
        t = load_tensors(d)
        for k, v in t.items():
            if k.endswith(".weight_scale") and v.dtype == torch.uint8:
                assert int(v.max()) < 0xFF and int(v.min()) > 100, (name, k, int(v.min()), int(v.max()))
                w = mx.dequantize_mxfp4(t[k[: -len("_scale")]], v)
                assert torch.isfinite(w).all()
