"""petit_nvfp4 must keep working (and keep its import path) after the series.

Runs on unpatched trees too: the old module ``quantization.petit`` is the
upstream home of PetitNvFp4Config."""

from __future__ import annotations

import importlib

import pytest
import torch

import layer_cases as lc
import mxfp4_ref as mx
import sgl_cpu

QUANT = "sglang.srt.layers.quantization"


def test_old_import_path():
    old = importlib.import_module(f"{QUANT}.petit")
    assert hasattr(old, "PetitNvFp4Config") and hasattr(old, "PetitNvFp4LinearMethod")
    if sgl_cpu.module_available(f"{QUANT}.petit_nvfp4"):
        new = importlib.import_module(f"{QUANT}.petit_nvfp4")
        assert old.PetitNvFp4Config is new.PetitNvFp4Config
        assert old.PetitNvFp4LinearMethod is new.PetitNvFp4LinearMethod
    from sglang.srt.layers.quantization import QUANTIZATION_METHODS

    assert QUANTIZATION_METHODS["petit_nvfp4"] is old.PetitNvFp4Config
    assert old.PetitNvFp4Config.get_name() == "petit_nvfp4"
    assert torch.float16 in old.PetitNvFp4Config.get_supported_act_dtypes()


def test_config_parsing():
    from sglang.srt.layers.quantization.petit import PetitNvFp4Config

    cfg = PetitNvFp4Config.from_config(mx.modelopt_nvfp4_nested(exclude=["lm_head"]))
    assert cfg.is_checkpoint_nvfp4_serialized and cfg.group_size == 16
    assert cfg.exclude_modules == ["lm_head"]
    with pytest.raises(ValueError):
        PetitNvFp4Config.from_config(mx.modelopt_mxfp4_nested())


def test_override_claims_modelopt_nvfp4_on_rocm(rocm):
    from sglang.srt.layers.quantization.petit import PetitNvFp4Config

    assert PetitNvFp4Config.override_quantization_method(mx.modelopt_nvfp4_flat(), None) == "petit_nvfp4"
    assert PetitNvFp4Config.override_quantization_method(mx.modelopt_nvfp4_flat(), "petit_nvfp4") == "petit_nvfp4"


def test_override_not_off_rocm(monkeypatch):
    mod = importlib.import_module(f"{QUANT}.petit_nvfp4" if sgl_cpu.module_available(f"{QUANT}.petit_nvfp4") else f"{QUANT}.petit")
    monkeypatch.setattr(mod, "_is_hip", False)
    assert mod.PetitNvFp4Config.override_quantization_method(mx.modelopt_nvfp4_flat(), None) is None


def test_excluded_layer_unquantized():
    from sglang.srt.layers.linear import LinearBase
    from sglang.srt.layers.quantization.petit import PetitNvFp4Config
    from sglang.srt.layers.quantization.unquant import UnquantizedLinearMethod

    cfg = PetitNvFp4Config.from_config(mx.modelopt_nvfp4_nested(exclude=["lm_head", "model.layers.0.mlp.down_proj"]))
    base = LinearBase(256, 256)
    assert isinstance(cfg.get_quant_method(base, "lm_head"), UnquantizedLinearMethod)
    assert isinstance(cfg.get_quant_method(base, "model.layers.0.mlp.down_proj"), UnquantizedLinearMethod)
    assert type(cfg.get_quant_method(base, "model.layers.0.mlp.gate_up_proj")).__name__ == "PetitNvFp4LinearMethod"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_nvfp4_layer_through_reference_kernel(dist_tp1, rocm, dtype):
    from sglang.srt.layers.linear import MergedColumnParallelLinear
    from sglang.srt.layers.quantization.petit import PetitNvFp4Config

    cfg = PetitNvFp4Config.from_config(mx.modelopt_nvfp4_nested())
    k, inter = 256, 128
    layer = MergedColumnParallelLinear(k, [inter, inter], bias=False, params_dtype=dtype, quant_config=cfg, prefix="model.layers.0.mlp.gate_up_proj")
    g = torch.Generator().manual_seed(3)
    shards = []
    for sid in (0, 1):
        w = torch.randn(inter, k, generator=g) * 0.05
        packed, sc, gs = mx.quantize_nvfp4(w)
        shards.append((sid, packed, sc, gs))
    # ModelOpt checkpoints carry a per-shard weight_scale_2; both shards of a
    # fused layer must share it for petit (it takes the max), so use one value.
    gs = max(s[3] for s in shards)
    params = dict(layer.named_parameters())
    for sid, packed, sc, _ in shards:
        w_deq = mx.dequantize_nvfp4(packed, sc, shards[sid][3])
        packed, sc, _ = _requant_with_global(w_deq, gs)
        shards[sid] = (sid, packed, sc, gs)
        for name, t in (("weight", packed), ("weight_scale", sc), ("weight_scale_2", gs.reshape(())), ("input_scale", torch.tensor(1.0))):
            params[name].weight_loader(params[name], t, sid)
    layer.quant_method.process_weights_after_loading(layer)
    x = lc.rand_x(6, k).to(dtype)
    out = lc.run(layer, x)
    ref = x.float() @ torch.cat([mx.dequantize_nvfp4(p, s, g_) for _, p, s, g_ in shards]).t()
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2 * ref.abs().max().item())


def _requant_with_global(w: torch.Tensor, gscale: torch.Tensor):
    n, k = w.shape
    blocks = w.reshape(n, k // 16, 16)
    bs8 = (blocks.abs().amax(-1) / 6.0 / gscale).clamp(max=448.0).to(torch.float8_e4m3fn)
    eff = bs8.float() * gscale
    eff = torch.where(eff > 0, eff, torch.ones_like(eff))
    scaled = (blocks / eff.unsqueeze(-1)).clamp(-6, 6).reshape(n, k)
    # nearest E2M1 through the encoder's rounding helper
    mag = mx._round_to_e2m1(scaled.abs())
    neg = (scaled < 0) & (mag != 0)
    codes = mag | (neg.to(torch.uint8) << 3)
    return mx.pack_codes(codes), bs8.contiguous(), gscale


# What the unpatched releases resolve on ROCm, per docs/sglang-on-cpu.md
# pitfall 4: a ModelOpt NVFP4 config.json -> petit_nvfp4 on older releases; on
# newer ones ModelConfig turns it into modelopt_fp4 first and rejects it on
# ROCm.  The series must not change either outcome.
NVFP4_NOFLAG_OK = ("petit_nvfp4", "rejected: modelopt_fp4 quantization is currently not supported in ROCm.")


def test_verify_quantization_nvfp4_unchanged(rocm, monkeypatch, tmp_path):
    res = sgl_cpu.verify_quantization(monkeypatch, tmp_path, mx.modelopt_nvfp4_flat(), None)
    assert res in NVFP4_NOFLAG_OK, res
    # (unpatched 0.5.23 rejects even an explicit --quantization petit_nvfp4 here)
    res = sgl_cpu.verify_quantization(monkeypatch, tmp_path, mx.modelopt_nvfp4_flat(), "petit_nvfp4")
    assert res in NVFP4_NOFLAG_OK, res


@pytest.mark.slow
def test_nvfp4_llama_from_real_modelopt_export(dist_tp1, rocm, capsys):
    """petit_nvfp4 end to end on a real ModelOpt 0.47 NVFP4 export (reference
    kernel), as before the series."""
    import json

    from test_model_llama import ckpt_dir, load_tensors, postprocess

    from transformers import LlamaConfig

    from sglang.srt.layers.quantization.petit import PetitNvFp4Config

    sgl_cpu.ensure_fused_moe_importable()
    d = ckpt_dir("modelopt_nvfp4")
    tensors = load_tensors(d)
    qc = PetitNvFp4Config.from_config(json.loads((d / "hf_quant_config.json").read_text()))
    hf_config = LlamaConfig.from_pretrained(str(d))
    model = sgl_cpu.build_llama(hf_config, qc)
    model.load_weights(iter(list(tensors.items())))
    postprocess(model)
    fused = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}
    n = 0
    for prefix, module in model.named_modules():
        if type(getattr(module, "quant_method", None)).__name__ != "PetitNvFp4LinearMethod":
            continue
        leaf = prefix.rsplit(".", 1)[-1]
        base = prefix[: -len(leaf)]
        w = torch.cat(
            [
                mx.dequantize_nvfp4(tensors[f"{base}{p}.weight"], tensors[f"{base}{p}.weight_scale"], tensors[f"{base}{p}.weight_scale_2"])
                for p in fused.get(leaf, [leaf])
            ]
        )
        x = lc.rand_x(4, w.shape[1], seed=n)
        lc.assert_matches(lc.run(module, x), x.float() @ w.t(), f"nvfp4 {prefix}")
        n += 1
    assert n == 4 * hf_config.num_hidden_layers
    assert torch.equal(model.lm_head.weight.data, tensors["lm_head.weight"])
    with capsys.disabled():
        print(f"\n[model] modelopt_nvfp4 via petit_nvfp4: {n} linears match")
