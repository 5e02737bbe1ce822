"""The REAL petit_kernel MoE (``fused_moe_bf16_mxfp4`` + ``repack_moe_kernel_layout``,
petit-kernel >= 0.0.5) on a ROCm GPU, against the independent float reference
``moe_ref`` and against the CPU reference in ``petit_kernel_ref``.

Skipped (with the reason) unless conftest selected the real kernel
(``PETIT_REQUIRE_ROCM=1`` turns the skip into a failure, as on the AMD job).
This is where the open questions of the CPU reference get settled on hardware:
the bias byte layout of the wheel's helper, whether the routing weight
multiplies ``b2``, the [gate; up] halves, the compiled-in SwiGLU constants,
and that the wrapper raises what the CPU reference raises.
No SGLang needed.
"""

from __future__ import annotations

import pytest
import torch

import moe_ref
import test_reference_moe as trm

pytestmark = [pytest.mark.rocm]

_DEVICE = torch.device("cuda")


def _real():
    import petit_kernel  # the autouse fixture put the real module in sys.modules

    assert not getattr(petit_kernel, "IS_REFERENCE", False), petit_kernel.__file__
    if not hasattr(petit_kernel, "fused_moe_bf16_mxfp4"):
        pytest.fail(f"petit_kernel {getattr(petit_kernel, '__version__', '?')} has no fused_moe_bf16_mxfp4 "
                    "(the MoE needs petit-kernel >= 0.0.5)")
    return petit_kernel


def _reference():
    return trm.pk  # the CPU reference, imported by test_reference_moe at collection


def _run(pk, x, halves, ids, w, e, dim_pad, device, bias=True):
    lay = pk.MoeKernelLayout.native_mxfp4
    w13, s13 = pk.repack_moe_kernel_layout(halves["w13"], halves["w13_scale"], layout=lay)
    w2, s2 = pk.repack_moe_kernel_layout(halves["w2"], halves["w2_scale"], layout=lay)
    kw = {}
    if bias:
        kw = dict(
            w13_bias=pk.repack_moe_kernel_layout(halves["w13_bias"], layout=lay).to(device),
            w2_bias=pk.repack_moe_kernel_layout(halves["w2_bias"], layout=lay).to(device),
        )
    routing = [r.to(device) for r in moe_ref.build_sorted_routing(ids, w, e)]
    y = pk.fused_moe_bf16_mxfp4(
        moe_ref.pad_last(x, dim_pad).to(device), w13.to(device), w2.to(device), *routing, ids.shape[1],
        s13.to(device), s2.to(device), **kw,
    )
    return y.cpu()[:, : x.shape[1]].float()


# + gpt-oss-sized experts (2880, padded to 3072)
@pytest.mark.parametrize("e,k,t,dim,inter", trm.CASES + [(8, 4, 100, 2880, 2880)])
@pytest.mark.parametrize("bias", [True, False])
def test_real_fused_moe_matches_references(e, k, t, dim, inter, bias):
    real = _real()
    device = _DEVICE
    experts = trm.random_experts(e, dim, inter, seed=e * 1000 + t)
    dim_pad, inter_pad = moe_ref.round_up(dim, 256), moe_ref.round_up(inter, 256)
    x = torch.randn(t, dim, generator=torch.Generator().manual_seed(t)).to(torch.bfloat16)
    w, ids = trm.random_routes(t, e, k, seed=t)
    halves = moe_ref.checkpoint_to_petit_halves(experts, dim_pad, inter_pad)
    got = _run(real, x, halves, ids, w, e, dim_pad, device, bias)
    ref = trm.float_ref(x, experts, ids, w, bias=bias)
    # per-route bf16 rounding + bf16 atomics on the GPU: a little looser than the CPU tests
    trm.assert_close(got, ref, rel=2e-2)
    cpu = _run(_reference(), x, halves, ids, w, e, dim_pad, torch.device("cpu"), bias)
    trm.assert_close(got, cpu, rel=2e-2)


def test_real_kernel_skipping_the_repack_gives_wrong_numbers():
    real = _real()
    e, k, t, dim, inter = 4, 2, 12, 256, 256
    experts = trm.random_experts(e, dim, inter, seed=21)
    x = torch.randn(t, dim, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    w, ids = trm.random_routes(t, e, k, seed=8)
    h = moe_ref.checkpoint_to_petit_halves(experts, dim, inter)
    dev = _DEVICE
    routing = [r.to(dev) for r in moe_ref.build_sorted_routing(ids, w, e)]
    y = real.fused_moe_bf16_mxfp4(x.to(dev), h["w13"].to(dev), h["w2"].to(dev), *routing, k,
                                  h["w13_scale"].to(dev), h["w2_scale"].to(dev))
    assert trm.max_rel_err(y.cpu().float(), trm.float_ref(x, experts, ids, w, bias=False)) > 0.05


@pytest.mark.parametrize("name,make,exc,msg", [b for b in trm.BAD if "petit_kernel reference" not in b[3]],
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(trm.BAD) if "petit_kernel reference" not in b[3]])
def test_real_wrapper_raises_like_the_reference(name, make, exc, msg):
    real = _real()
    dev = _DEVICE
    a = trm._good_args()
    a[name] = make(a)
    a = {key: (v.to(dev) if isinstance(v, torch.Tensor) else v) for key, v in a.items()}
    # (weights repacked by the CPU reference: only the checks matter here)
    with pytest.raises(exc, match=msg):
        real.fused_moe_bf16_mxfp4(**a)
