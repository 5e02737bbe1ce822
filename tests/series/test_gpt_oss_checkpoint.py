"""The tiny gpt-oss MXFP4 checkpoint writer (checkpoints/gpt_oss_tiny.py),
checked against transformers' own gpt-oss code on CPU:

* its MXFP4 dequantization (``integrations.mxfp4.convert_moe_packed_tensors``
  and ``from_pretrained(..., Mxfp4Config(dequantize=True))``) equals
  ``mxfp4_ref``'s decoding, so the format is not only ours;
* transformers' ``GptOssMLP`` (router + experts) on the loaded model equals
  the independent float reference ``moe_ref.moe_forward`` and the Petit CPU
  reference fed through the checkpoint -> [gate; up] halves -> padding ->
  repack pipeline.

No SGLang needed (transformers from the test venv)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "checkpoints"))

import gpt_oss_tiny  # noqa: E402
import moe_ref  # noqa: E402
import mxfp4_ref as mx  # noqa: E402

import petit_kernel as pk  # noqa: E402  (conftest: the CPU reference)

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return gpt_oss_tiny.write_gpt_oss_tiny(tmp_path_factory.mktemp("gpt_oss_tiny"), seed=0)


@pytest.fixture(scope="module")
def hf_model(ckpt):
    return gpt_oss_tiny.load_hf_dequantized(ckpt)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ------------------------------------------------------------------ writer


def test_writer_is_deterministic(tmp_path, ckpt):
    again = gpt_oss_tiny.write_gpt_oss_tiny(tmp_path / "a", seed=0)
    other = gpt_oss_tiny.write_gpt_oss_tiny(tmp_path / "b", seed=1)
    for f in ("config.json", "model.safetensors"):
        assert _sha(again / f) == _sha(ckpt / f)
    assert _sha(other / "model.safetensors") != _sha(ckpt / "model.safetensors")
    assert (other / "config.json").read_text() == (ckpt / "config.json").read_text()


def test_config_is_the_published_shape(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["model_type"] == "gpt_oss" and cfg["architectures"] == ["GptOssForCausalLM"]
    assert cfg["quantization_config"] == {
        "modules_to_not_convert": [
            "model.layers.*.self_attn",
            "model.layers.*.mlp.router",
            "model.embed_tokens",
            "lm_head",
        ],
        "quant_method": "mxfp4",
    }
    assert cfg["swiglu_limit"] == 7.0 and "swiglu_alpha" not in cfg
    assert cfg["layer_types"] == ["sliding_attention", "full_attention"]
    assert cfg["hidden_size"] == 192 and cfg["intermediate_size"] == 320
    # both need padding for Petit (multiples of 256), by different amounts
    assert moe_ref.round_up(192, 256) == 256 and moe_ref.round_up(320, 256) == 512
    assert cfg["experts_per_token"] == cfg["num_experts_per_tok"] == 2
    assert cfg["rope_scaling"]["rope_type"] == "yarn" and cfg["attention_bias"] is True
    alt = gpt_oss_tiny.gpt_oss_tiny_config(swiglu_alpha=1.5, swiglu_limit=8.0)
    assert alt["swiglu_alpha"] == alt["hidden_act_alpha"] == 1.5 and alt["swiglu_limit"] == 8.0


def test_tensor_inventory(ckpt):
    from safetensors import safe_open

    cfg = json.loads((ckpt / "config.json").read_text())
    h, i_, e = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_local_experts"]
    nh, nkv, hd, v = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["vocab_size"]
    want = {
        "model.embed_tokens.weight": ((v, h), torch.bfloat16),
        "model.norm.weight": ((h,), torch.bfloat16),
        "lm_head.weight": ((v, h), torch.bfloat16),
    }
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        want.update({
            p + "input_layernorm.weight": ((h,), torch.bfloat16),
            p + "post_attention_layernorm.weight": ((h,), torch.bfloat16),
            p + "self_attn.q_proj.weight": ((nh * hd, h), torch.bfloat16),
            p + "self_attn.q_proj.bias": ((nh * hd,), torch.bfloat16),
            p + "self_attn.k_proj.weight": ((nkv * hd, h), torch.bfloat16),
            p + "self_attn.k_proj.bias": ((nkv * hd,), torch.bfloat16),
            p + "self_attn.v_proj.weight": ((nkv * hd, h), torch.bfloat16),
            p + "self_attn.v_proj.bias": ((nkv * hd,), torch.bfloat16),
            p + "self_attn.o_proj.weight": ((h, nh * hd), torch.bfloat16),
            p + "self_attn.o_proj.bias": ((h,), torch.bfloat16),
            p + "self_attn.sinks": ((nh,), torch.bfloat16),
            p + "mlp.router.weight": ((e, h), torch.bfloat16),
            p + "mlp.router.bias": ((e,), torch.bfloat16),
            p + "mlp.experts.gate_up_proj_blocks": ((e, 2 * i_, h // 32, 16), torch.uint8),
            p + "mlp.experts.gate_up_proj_scales": ((e, 2 * i_, h // 32), torch.uint8),
            p + "mlp.experts.gate_up_proj_bias": ((e, 2 * i_), torch.bfloat16),
            p + "mlp.experts.down_proj_blocks": ((e, h, i_ // 32, 16), torch.uint8),
            p + "mlp.experts.down_proj_scales": ((e, h, i_ // 32), torch.uint8),
            p + "mlp.experts.down_proj_bias": ((e, h), torch.bfloat16),
        })
    assert len(want) == 3 + 19 * cfg["num_hidden_layers"]
    with safe_open(str(ckpt / "model.safetensors"), framework="pt") as f:
        assert set(f.keys()) == set(want)
        for k, (shape, dtype) in want.items():
            t = f.get_tensor(k)
            assert tuple(t.shape) == shape and t.dtype == dtype, k
    ex = gpt_oss_tiny.load_expert_tensors(ckpt, 1)
    codes = mx.unpack_codes(ex["gate_up_proj_blocks"].reshape(-1, h // 2))
    assert set(codes.unique().tolist()) == set(range(16))  # every E2M1 code, -0 included


# ------------------------------------------------------------------ transformers' dequantization


def test_transformers_convert_moe_packed_tensors_matches_mxfp4_ref(ckpt):
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    for layer in (0, 1):
        ex = gpt_oss_tiny.load_expert_tensors(ckpt, layer)
        for proj in ("gate_up_proj", "down_proj"):
            blocks, scales = ex[proj + "_blocks"], ex[proj + "_scales"]
            hf = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)  # [E, K, N]
            ours = moe_ref.dequantize_experts(blocks, scales)  # [E, N, K]
            assert hf.shape == ours.transpose(1, 2).shape
            assert torch.equal(hf, ours.transpose(1, 2)), (layer, proj)
            # and a corrupted byte is visible
            b2 = blocks.clone()
            b2.view(-1)[5] ^= 0x11
            assert not torch.equal(convert_moe_packed_tensors(b2, scales, dtype=torch.float32), hf)


def test_manual_load_equals_from_pretrained(ckpt, hf_model):
    if hf_model.petit_loaded_via != "from_pretrained":
        pytest.skip(f"from_pretrained(Mxfp4Config(dequantize=True)) unavailable here: "
                    f"{hf_model.petit_from_pretrained_error}")
    manual = gpt_oss_tiny.load_hf_dequantized(ckpt, via="manual")
    a, b = hf_model.state_dict(), manual.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_transformers_load_dequantized_matches_mxfp4_ref(ckpt, hf_model):
    if hf_model.petit_loaded_via != "from_pretrained":
        pytest.skip(f"from_pretrained(Mxfp4Config(dequantize=True)) unavailable here: "
                    f"{hf_model.petit_from_pretrained_error} (the other tests use transformers' "
                    "convert_moe_packed_tensors directly)")
    for layer in (0, 1):
        ex = gpt_oss_tiny.load_expert_tensors(ckpt, layer)
        experts = hf_model.model.layers[layer].mlp.experts
        w13 = moe_ref.dequantize_experts(ex["gate_up_proj_blocks"], ex["gate_up_proj_scales"])
        w2 = moe_ref.dequantize_experts(ex["down_proj_blocks"], ex["down_proj_scales"])
        assert torch.equal(experts.gate_up_proj.float(), w13.transpose(1, 2))
        assert torch.equal(experts.down_proj.float(), w2.transpose(1, 2))
        assert torch.equal(experts.gate_up_proj_bias.float(), ex["gate_up_proj_bias"].float())
        assert torch.equal(experts.down_proj_bias.float(), ex["down_proj_bias"].float())
        assert (experts.limit, experts.alpha) == (7.0, 1.702)


def _layer_inputs(hf_model, layer, t, seed):
    h = hf_model.config.hidden_size
    return (torch.randn(t, h, generator=torch.Generator().manual_seed(seed)) * 1.5).to(torch.bfloat16)


@pytest.mark.parametrize("layer,t", [(0, 1), (0, 37), (1, 20)])
def test_float_reference_matches_transformers_mlp(ckpt, hf_model, layer, t):
    """Routing (top-k, softmax over the selected), even/odd gate/up, clamp,
    biases, weighted sum: moe_ref == transformers' GptOssMLP (float32)."""
    x = _layer_inputs(hf_model, layer, t, seed=layer * 100 + t)
    mlp = hf_model.model.layers[layer].mlp
    mlp32 = type(mlp)(hf_model.config)
    mlp32.load_state_dict({k: v.float() for k, v in mlp.state_dict().items()})
    with torch.no_grad():
        hf_out, _ = mlp32(x.float().reshape(1, t, -1))
    ex = gpt_oss_tiny.load_expert_tensors(ckpt, layer)
    rw, rb = gpt_oss_tiny.load_router(ckpt, layer)
    assert torch.equal(rw.float(), mlp.router.weight.float()) and torch.equal(rb.float(), mlp.router.bias.float())
    ref = moe_ref.moe_forward(x, rw, rb, ex, top_k=hf_model.config.num_experts_per_tok)
    hf_out = hf_out.reshape(t, -1)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(ref, hf_out, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    # the clamp matters for this checkpoint's activations, for some layer/t
    # (checked in test_reference_moe); here: a wrong interleave is visible
    swapped = dict(ex)
    swapped["gate_up_proj_blocks"] = moe_ref.deinterleave_rows(ex["gate_up_proj_blocks"])
    bad = moe_ref.moe_forward(x, mlp.router.weight, mlp.router.bias, swapped, top_k=2)
    assert (bad - hf_out).abs().max() > 0.05 * hf_out.abs().max()


@pytest.mark.parametrize("layer,t", [(0, 5), (1, 33)])
def test_petit_reference_pipeline_matches_transformers_mlp(ckpt, hf_model, layer, t):
    """checkpoint -> [gate; up] halves, padded 192 -> 256 / 320 -> 512 ->
    repack (native) -> sorted routing -> fused_moe_bf16_mxfp4 == transformers'
    GptOssMLP on the same bf16 input (within bf16 output tolerance)."""
    x = _layer_inputs(hf_model, layer, t, seed=7 + t)
    mlp = hf_model.model.layers[layer].mlp
    cfg = hf_model.config
    mlp32 = type(mlp)(cfg)
    mlp32.load_state_dict({k: v.float() for k, v in mlp.state_dict().items()})
    with torch.no_grad():
        hf_out, _ = mlp32(x.float().reshape(1, t, -1))
        logits = x.float() @ mlp.router.weight.float().t() + mlp.router.bias.float()
    weights, ids = moe_ref.route(logits, cfg.num_experts_per_tok)

    dim_pad, inter_pad = moe_ref.round_up(cfg.hidden_size, 256), moe_ref.round_up(cfg.intermediate_size, 256)
    h = moe_ref.checkpoint_to_petit_halves(gpt_oss_tiny.load_expert_tensors(ckpt, layer), dim_pad, inter_pad)
    lay = pk.MoeKernelLayout.native_mxfp4
    w13, s13 = pk.repack_moe_kernel_layout(h["w13"], h["w13_scale"], layout=lay)
    w2, s2 = pk.repack_moe_kernel_layout(h["w2"], h["w2_scale"], layout=lay)
    b13 = pk.repack_moe_kernel_layout(h["w13_bias"], layout=lay)
    b2 = pk.repack_moe_kernel_layout(h["w2_bias"], layout=lay)
    routing = moe_ref.build_sorted_routing(ids, weights, cfg.num_local_experts)
    y = pk.fused_moe_bf16_mxfp4(moe_ref.pad_last(x, dim_pad), w13, w2, *routing, cfg.num_experts_per_tok,
                                s13, s2, w13_bias=b13, w2_bias=b2)
    got = y[:, : cfg.hidden_size].float()
    ref = hf_out.reshape(t, -1)
    tol = 1e-2 * ref.abs().max().item()
    assert (got - ref).abs().max().item() <= tol
    assert (y[:, cfg.hidden_size:] == 0).all()  # padded output columns stay 0 (zero bias padding)


def test_transformers_runs_the_whole_model(hf_model):
    """A whole-model reference for SGLang's logits: transformers' forward on
    CPU works, is finite and depends on the input."""
    ids = torch.tensor([[1, 5, 9, 100, 300, 7, 8, 2]])
    with torch.no_grad():
        a = hf_model(ids).logits
        b = hf_model(ids.flip(1)).logits
    assert a.shape == (1, 8, hf_model.config.vocab_size) and torch.isfinite(a).all()
    assert a.float().std() > 0.1 and not torch.equal(a[0, -1], b[0, -1])
