"""The CPU reference petit_kernel and the independent MXFP4 encoder/decoder,
checked against each other (no SGLang needed)."""

from __future__ import annotations

import pytest
import torch

import mxfp4_ref as mx

import petit_kernel as pk  # conftest made this the CPU reference

assert getattr(pk, "IS_REFERENCE", False), pk.__file__


def _prep(packed, scales):
    n, k = packed.shape[0], packed.shape[1] * 2
    b = pk.repack_mxfp4(packed.view(torch.int32).contiguous(), n, k)
    s = pk.process_mxfp4_scales(scales.contiguous(), n, k)
    return b, s, n, k


# ------------------------------------------------------------------ encoder


def test_e2m1_codes_and_packing():
    codes = torch.arange(16, dtype=torch.uint8).repeat(1, 4)  # [1, 64]
    packed = mx.pack_codes(codes)
    assert packed[0, 0] == 0x10  # element 0 low nibble, element 1 high nibble
    assert packed[0, 7] == 0xFE
    scales = torch.full((1, 2), 127, dtype=torch.uint8)
    vals = mx.dequantize_mxfp4(packed, scales)[0, :16].tolist()
    assert vals[:8] == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    assert vals[8:] == [-0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
    assert str(vals[8]) == "-0.0"


def test_e8m0_decoding():
    s = torch.tensor([[0, 1, 127, 128, 254, 255]], dtype=torch.uint8)
    f = mx.e8m0_to_float(s)[0]
    assert f[2] == 1.0 and f[3] == 2.0 and f[1] == 2.0**-126
    assert f[0] == 2.0**-127  # spec: 2^-127, not 0
    assert torch.isnan(f[5])


def test_quantize_roundtrip_exact_on_representable():
    packed, scales = mx.random_mxfp4(32, 256, seed=3, allow_negative_zero=False)
    w = mx.dequantize_mxfp4(packed, scales)
    # blocks whose max code is 6 re-quantize to the same codes; force that
    w[:, ::32] = 6.0 * mx.e8m0_to_float(scales)
    p2, s2 = mx.quantize_mxfp4(w)
    assert torch.equal(mx.dequantize_mxfp4(p2, s2), w)


def test_quantize_error_bound():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(64, 256, generator=g)
    packed, scales = mx.quantize_mxfp4(w)
    deq = mx.dequantize_mxfp4(packed, scales)
    blk = w.abs().reshape(64, 8, 32).amax(-1).repeat_interleave(32, 1)
    # OCP scaling: elements may clip at 6*scale, error < 1/3 of the block max
    assert ((deq - w).abs() <= blk / 3 + 1e-6).all()
    assert mx.count_negative_zeros(packed) == 0
    assert mx.count_negative_zeros(mx.quantize_mxfp4(w, negative_zero=True)[0]) > 0


# ------------------------------------------------------------------ kernel


@pytest.mark.parametrize("n,k", [(32, 256), (64, 512), (96, 768)])
def test_reference_kernel_matches_decoder(n, k):
    packed, scales = mx.random_mxfp4(n, k, seed=n + k)
    b, s, n, k = _prep(packed, scales)
    assert b.dtype == torch.int32 and tuple(b.shape) == (n // 16, 2 * k)
    assert s.dtype == torch.uint8 and tuple(s.shape) == (n // 32, k)
    a = torch.randn(5, k).to(torch.bfloat16)
    out = pk.mul_mxfp4_a16(a, b, s, torch.ones(1), 5, n, k, -1)
    assert out.dtype == torch.bfloat16 and tuple(out.shape) == (5, n)
    ref = a.float() @ mx.dequantize_mxfp4(packed, scales).t()
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2 * ref.abs().max().item())
    # global scale multiplies
    out2 = pk.mul_mxfp4_a16(a, b, s, torch.full((1,), 2.0), 5, n, k, -1)
    torch.testing.assert_close(out2.float(), 2 * out.float(), rtol=1e-2, atol=1e-3)


def test_repacked_layout_differs_from_checkpoint():
    packed, scales = mx.random_mxfp4(32, 256, seed=5)
    b, s, n, k = _prep(packed, scales)
    assert not torch.equal(b.reshape(-1), packed.view(torch.int32).reshape(-1))
    assert not torch.equal(s.reshape(-1), scales.reshape(-1))
    # feeding the checkpoint tensors themselves is refused (shape checks)
    with pytest.raises(RuntimeError):
        pk.mul_mxfp4_a16(torch.zeros(1, k, dtype=torch.bfloat16), packed.view(torch.int32), scales, torch.ones(1), 1, n, k, -1)


def test_negative_zero_canonicalised_by_repack():
    packed, scales = mx.random_mxfp4(32, 256, seed=6)
    negz = mx.with_negative_zeros(packed)
    assert mx.count_negative_zeros(negz) > 0
    b1, *_ = _prep(packed, scales)
    b2, *_ = _prep(negz, scales)
    # -0 and +0 produce the same repacked words once every 0 is +0
    pos = mx.pack_codes(torch.where(mx.unpack_codes(negz) == 8, 0, mx.unpack_codes(negz)))
    b3, *_ = _prep(pos, scales)
    assert torch.equal(b2, b3)


def test_kernel_checks():
    qw = torch.zeros(64, 512 // 8, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="int32"):
        pk.repack_mxfp4(qw.to(torch.int64), 64, 512)
    with pytest.raises(RuntimeError, match="128"):
        pk.repack_mxfp4(torch.zeros(64, 200 // 8, dtype=torch.int32), 64, 200)
    with pytest.raises(RuntimeError, match="16"):
        pk.repack_mxfp4(torch.zeros(40, 64, dtype=torch.int32), 40, 512)
    with pytest.raises(RuntimeError, match="size_n"):
        pk.repack_mxfp4(qw, 32, 512)
    with pytest.raises(RuntimeError, match="contiguous"):
        pk.repack_mxfp4(torch.zeros(64 // 8 * 8, 128, dtype=torch.int32)[:, ::2], 64, 512)
    sc = torch.zeros(64, 16, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="256"):
        pk.process_mxfp4_scales(torch.zeros(64, 12, dtype=torch.uint8), 64, 384)
    with pytest.raises(RuntimeError, match="uint8"):
        pk.process_mxfp4_scales(sc.float(), 64, 512)
    with pytest.raises(RuntimeError, match="32"):
        pk.process_mxfp4_scales(torch.zeros(64, 8, dtype=torch.uint8), 64, 512)


def test_fp16_activation_refused_like_real():
    packed, scales = mx.random_mxfp4(32, 256, seed=8)
    b, s, n, k = _prep(packed, scales)
    a = torch.randn(2, k).to(torch.float16)
    with pytest.raises(RuntimeError, match="bad optional access"):
        pk.mul_mxfp4_a16(a, b, s, torch.ones(1), 2, n, k, -1)
    with pytest.raises(RuntimeError, match="No kernel implementation for solution_id=5"):
        pk.mul_mxfp4_a16(a, b, s, torch.ones(1), 2, n, k, 5)
    with pytest.raises(RuntimeError):
        pk.mul_mxfp4_a16(a.float(), b, s, torch.ones(1), 2, n, k, -1)


def test_effective_tile_requirement_gives_wrong_numbers():
    """K%128 / N%16 pass the wrapper checks but the (K/256, N/32) grid leaves
    part of the output unwritten: wrong numbers, like on the GPU."""
    n, k = 48, 512  # N%32 != 0
    packed, scales = mx.random_mxfp4(n, k, seed=9)
    b = pk.repack_mxfp4(packed.view(torch.int32).contiguous(), n, k)
    s = pk.process_mxfp4_scales(scales, n, k)
    a = torch.randn(3, k).to(torch.bfloat16)
    out = pk.mul_mxfp4_a16(a, b, s, torch.ones(1), 3, n, k, -1)
    ref = a.float() @ mx.dequantize_mxfp4(packed, scales).t()
    assert not torch.allclose(out.float(), ref, rtol=1e-2, atol=1e-2 * ref.abs().max().item())
    with pytest.raises(RuntimeError, match="256"):  # K%256 caught by the scale kernel
        pk.process_mxfp4_scales(torch.zeros(64, 12, dtype=torch.uint8), 64, 384)


def test_scale_edge_bytes_as_kernel():
    packed = mx.pack_codes(torch.full((32, 256), 2, dtype=torch.uint8))  # all 1.0
    scales = torch.full((32, 8), 127, dtype=torch.uint8)
    scales[0, 0] = 0xFF
    scales[1, 0] = 0x00
    b, s, n, k = _prep(packed, scales)
    w = pk.dequantize_repacked_mxfp4(b, s, n, k)
    assert torch.isinf(w[0, 0]) and w[1, 0] == 0.0 and w[2, 0] == 1.0


def test_empty_m():
    packed, scales = mx.random_mxfp4(32, 256, seed=10)
    b, s, n, k = _prep(packed, scales)
    out = pk.mul_mxfp4_a16(torch.empty(0, k, dtype=torch.bfloat16), b, s, torch.ones(1), 0, n, k, -1)
    assert out.shape == (0, n)


def test_nvfp4_reference_roundtrip():
    g = torch.Generator().manual_seed(11)
    w = torch.randn(64, 256, generator=g)
    packed, sc, gs = mx.quantize_nvfp4(w)
    n, k = 64, 256
    b = pk.repack_nvfp4(packed.view(torch.int32).contiguous(), n, k)
    s = pk.process_nvfp4_scales(sc, n, k)
    assert s.dtype == torch.float8_e4m3fn and s.shape == sc.shape
    a = torch.randn(4, k).to(torch.float16)
    out = pk.mul_nvfp4_a16(a, b, s, gs, 4, n, k, -1)
    ref = a.float() @ mx.dequantize_nvfp4(packed, sc, gs).t()
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2 * ref.abs().max().item())
