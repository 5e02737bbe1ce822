"""SGLang's real linear classes with PetitMxfp4Config, TP=1 (see layer_cases.py
for the tolerance rationale)."""

from __future__ import annotations

import pytest
import torch

import layer_cases as lc
import mxfp4_ref as mx

pytestmark = [pytest.mark.petit_mxfp4, pytest.mark.usefixtures("dist_tp1", "rocm")]

KINDS = ["replicated", "qkv", "merged", "row"]


@pytest.fixture
def cfg():
    return lc.petit_mxfp4_config()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False])
def test_layer_matches_reference(kind, bias, cfg):
    case = lc.build(kind, cfg, bias=bias, seed=hash(kind) % 97)
    layer = case.layer
    assert type(layer.quant_method).__name__ == "PetitMxfp4LinearMethod"
    assert layer.weight.dtype == torch.uint8 and layer.weight_scale.dtype == torch.uint8
    n = sum(s.n for s in case.shards)
    assert tuple(layer.weight.shape) == (n, case.k_full // 2)
    assert tuple(layer.weight_scale.shape) == (n, case.k_full // 32)
    lc.finalize(layer)
    for m in (1, 7, 33):
        x = lc.rand_x(m, case.k_full, seed=m)
        lc.assert_matches(lc.run(layer, x), lc.reference_column(case, x), f"{kind} M={m}")


def test_3d_input_and_empty_batch(cfg):
    case = lc.build("merged", cfg, bias=True)
    lc.finalize(case.layer)
    x = lc.rand_x(2 * 5, case.k_full).reshape(2, 5, case.k_full)
    out = lc.run(case.layer, x)
    assert out.shape == (2, 5, 512)
    lc.assert_matches(out.reshape(10, -1), lc.reference_column(case, x.reshape(10, -1)), "3-D input")
    out0 = lc.run(case.layer, x[:0].reshape(0, case.k_full))
    assert out0.shape == (0, 512)


def test_non_contiguous_input(cfg):
    """A row-strided activation (e.g. a slice of a wider tensor).  Petit reads
    ``a`` with row stride K without checking, so apply() must make it
    contiguous; the reference kernel raises instead of reading garbage."""
    case = lc.build("replicated", cfg, bias=False)
    lc.finalize(case.layer)
    wide = lc.rand_x(9, case.k_full + 64)
    x = wide[:, : case.k_full]
    assert not x.is_contiguous()
    lc.assert_matches(lc.run(case.layer, x), lc.reference_column(case, x), "non-contiguous input")


def test_wrong_scale_shard_fails_tolerance(cfg):
    """Loading k's scales into the v slot (and vice versa) must be detected by
    the comparison: proves the tolerance is tight enough to catch shard bugs."""
    case = lc.build("qkv", cfg, bias=False, load_weights=False)
    q, k, v = case.shards
    for sh in case.shards:
        lc.load(case.layer, "weight", sh.packed, sh.shard_id)
    lc.load(case.layer, "weight_scale", q.scales, "q")
    lc.load(case.layer, "weight_scale", v.scales, "k")  # swapped
    lc.load(case.layer, "weight_scale", k.scales, "v")
    lc.finalize(case.layer)
    x = lc.rand_x(8, case.k_full)
    out = lc.run(case.layer, x)
    with pytest.raises(AssertionError):
        lc.assert_matches(out, lc.reference_column(case, x), "swapped scales")
    print(f"swapped k/v scale shards: max rel err {lc.max_rel_err(out, lc.reference_column(case, x)):.3f} (tolerance 1e-2)")


def test_scale_off_by_one_binade_fails_tolerance(cfg):
    case = lc.build("replicated", cfg, bias=False, load_weights=False)
    sh = case.shards[0]
    lc.load(case.layer, "weight", sh.packed)
    bad = sh.scales.clone()
    bad[: sh.n // 2] += 1  # half the rows x2
    lc.load(case.layer, "weight_scale", bad)
    lc.finalize(case.layer)
    x = lc.rand_x(4, case.k_full)
    with pytest.raises(AssertionError):
        lc.assert_matches(lc.run(case.layer, x), lc.reference_column(case, x), "scale +1")


def test_nibble_order_matters(cfg):
    """Swapping the nibbles of every byte (high/low element order) must fail."""
    case = lc.build("replicated", cfg, bias=False, load_weights=False)
    sh = case.shards[0]
    swapped = ((sh.packed & 0x0F) << 4) | (sh.packed >> 4)
    lc.load(case.layer, "weight", swapped)
    lc.load(case.layer, "weight_scale", sh.scales)
    lc.finalize(case.layer)
    x = lc.rand_x(4, case.k_full)
    with pytest.raises(AssertionError):
        lc.assert_matches(lc.run(case.layer, x), lc.reference_column(case, x), "nibble swap")


def test_quark_encoded_weights(cfg):
    """Weights quantized by our OCP encoder from a float matrix: the layer
    output approximates the float matmul and equals the decoded one."""
    g = torch.Generator().manual_seed(7)
    w = torch.randn(64, 512, generator=g) * 0.05
    packed, scales = mx.quantize_mxfp4(w, negative_zero=True)
    assert mx.count_negative_zeros(packed) > 0
    from sglang.srt.layers.linear import ReplicatedLinear

    layer = ReplicatedLinear(512, 64, bias=False, params_dtype=torch.bfloat16, quant_config=cfg, prefix="model.layers.0.self_attn.o_proj")
    lc.load(layer, "weight", packed)
    lc.load(layer, "weight_scale", scales)
    lc.finalize(layer)
    x = lc.rand_x(5, 512)
    ref = x.float() @ mx.dequantize_mxfp4(packed, scales).t()
    lc.assert_matches(lc.run(layer, x), ref, "encoded")
    # and it is a decent approximation of the unquantized matmul
    approx = x.float() @ w.t()
    assert lc.max_rel_err(ref.to(torch.bfloat16), approx) < 0.25
