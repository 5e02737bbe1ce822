"""The layer tests again, with the REAL petit_kernel on a ROCm GPU.

Skipped (with the reason) unless conftest selected the real kernel, i.e. a
ROCm build of torch sees a GPU and ``petit_kernel`` imports.  On such a box
run e.g.::

    python -m pytest tests/series -m rocm

(inside any env where the patched SGLang tree and petit-kernel are importable;
set SGLANG_PETIT_TREE/SGLANG_PETIT_VERSION as the harness does).
"""

from __future__ import annotations

import pytest
import torch

import layer_cases as lc
import mxfp4_ref as mx

pytestmark = [pytest.mark.rocm, pytest.mark.petit_mxfp4, pytest.mark.usefixtures("dist_tp1")]

KINDS = ["replicated", "qkv", "merged", "row"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False])
def test_real_kernel_layer(kind, bias, device, rocm):
    cfg = lc.petit_mxfp4_config()
    case = lc.build(kind, cfg, bias=bias, seed=5)  # loaded on the CPU, then moved
    layer = case.layer.to(device)
    lc.finalize(layer)
    assert layer.weight.is_cuda and layer.weight.dtype == torch.int32
    for m in (1, 16, 100):
        x = lc.rand_x(m, case.k_full, seed=m)
        out = lc.run(layer, x.to(device)).cpu()
        lc.assert_matches(out, lc.reference_column(case, x), f"real {kind} M={m}")


def test_real_kernel_negative_zero_and_shapes(device, rocm):
    """-0 nibbles in the checkpoint (ModelOpt writes them) must not change the
    result with the real kernel either."""
    from sglang.srt.layers.linear import ReplicatedLinear

    cfg = lc.petit_mxfp4_config()
    packed, scales = mx.random_mxfp4(256, 1024, seed=9)
    negz = mx.with_negative_zeros(packed)
    layer = ReplicatedLinear(1024, 256, bias=False, params_dtype=torch.bfloat16, quant_config=cfg, prefix="model.layers.0.mlp.down_proj")
    lc.load(layer, "weight", negz)
    lc.load(layer, "weight_scale", scales)
    layer = layer.to(device)
    lc.finalize(layer)
    x = lc.rand_x(33, 1024)
    ref = x.float() @ mx.dequantize_mxfp4(packed, scales).t()
    lc.assert_matches(lc.run(layer, x.to(device)).cpu(), ref, "real -0")


def test_real_kernel_fp16_refused(device):
    import petit_kernel

    packed, scales = mx.random_mxfp4(32, 256, seed=1)
    b = petit_kernel.repack_mxfp4(packed.view(torch.int32).contiguous().to(device), 32, 256)
    s = petit_kernel.process_mxfp4_scales(scales.to(device), 32, 256)
    with pytest.raises(RuntimeError):
        petit_kernel.mul_mxfp4_a16(torch.zeros(2, 256, dtype=torch.float16, device=device), b, s, torch.ones(1, device=device), 2, 32, 256, -1)
