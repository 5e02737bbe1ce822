"""CPU reference implementation of the dense ``petit_kernel`` API (test-only).

The real ``petit_kernel`` is a ROCm build (gfx90a/gfx942/gfx950).  This module
mimics its *dense* Python API closely enough that SGLang's petit code paths can
be exercised on a CPU:

* the same functions, arguments, output shapes and dtypes
  (docs: mxfp4-and-petit.md section 1);
* the same argument checks, raising ``RuntimeError`` like the pybind/TORCH_CHECK
  errors of the real extension;
* a real computation: the weights are repacked into a layout of our own
  (invertible, but different from the checkpoint layout), the scales are
  reordered, and ``mul_*_a16`` de-tiles, dequantizes and multiplies.  A caller
  that passes the checkpoint tensors instead of the repacked ones, swaps
  size_n/size_k, or feeds a wrong dtype gets an error or wrong numbers.

Deliberate deviations from the real kernel (all documented where they occur):

* "tensor must be on the GPU" checks are relaxed to "all tensors on the same
  device" because this runs on the CPU.
* Things the real kernel does not check but silently gets wrong (non-contiguous
  or mis-shaped ``a``, non-float32 ``global_scale``, wrong ``b``/``s`` dtypes)
  raise here, with messages starting with "petit_kernel reference:".
* Like the real repack/scale kernels, which launch a grid of (K/256, N/32)
  tiles, only whole 32x256 tiles are processed; the rest of the output stays 0.
  So K%128==0 / N%16==0 shapes that pass the wrapper checks but violate the
  effective K%256 / N%32 requirement produce wrong numbers, as on the GPU.
* E8M0 scales are decoded the way the non-high-precision kernels (gfx942,
  gfx950) do it: the bf16 bit pattern ``e << 7``; so 0x00 -> 0 and 0xFF -> +Inf.
* Negative-zero FP4 codes (0x8) are canonicalised to +0 by the repack, like
  the real ``PetitFormat``.

MoE (petit-kernel 0.0.5): ``fused_moe_bf16_mxfp4`` (``_fused_moe_ref.py``) and
the repack helpers ``MoeKernelLayout`` / ``repack_moe_kernel_layout``
(``moe_mxfp4.py``, the real module's name), re-exported here like the real
package does.  Their own docstrings list what is copied and what deviates.
The real package has no Python helper that builds the sorted routing
(``sorted_token_ids`` ...); callers build it (see ``_fused_moe_ref``).

This file deliberately shares no code with ``tests/series/mxfp4_ref.py``.
"""

from __future__ import annotations

import torch

__version__ = "0.0.5+cpu.reference"
IS_REFERENCE = True

# Effective tile of the repack / scale kernels (RepackQWeightLayout64x32 ...).
_TILE_N = 32
_TILE_K = 256
# Row group of the repacked weight layout: out shape [N/16, 2K].
_ROWS_PER_BLOCK = 16
# Nibble order inside one repacked int32 word: word nibble j holds element
# _NIBBLE_ORDER[j] of an 8-element chunk.
_NIBBLE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)
_NIBBLE_INVERSE = tuple(_NIBBLE_ORDER.index(i) for i in range(8))

# Counters, handy for tests that want to know the kernel was really used.
CALLS = {
    "repack_nvfp4": 0,
    "process_mxfp4_scales": 0,
    "process_nvfp4_scales": 0,
    "mul_mxfp4_a16": 0,
    "mul_nvfp4_a16": 0,
}


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise RuntimeError(msg)


def _check_device(*tensors: torch.Tensor) -> None:
    # Real kernel: TORCH_CHECK(t.is_cuda()). On CPU we can only require that all
    # operands live on one device.
    devs = {t.device for t in tensors}
    _check(len(devs) == 1, f"Expected all tensors to be on the same device, got {sorted(map(str, devs))}")


# --------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------


def _words_to_u32(w: torch.Tensor) -> torch.Tensor:
    return w.to(torch.int64) & 0xFFFFFFFF


def _u32_to_int32(u: torch.Tensor) -> torch.Tensor:
    u = u & 0xFFFFFFFF
    return torch.where(u >= 2**31, u - 2**32, u).to(torch.int32)


def _checkpoint_nibbles(qw: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """int32 [N, K/8] (each word = 8 consecutive elements, element 2i in the low
    nibble of byte i, little endian) -> int64 codes [N, K]."""
    u = _words_to_u32(qw)  # [N, K/8]
    shifts = torch.arange(0, 32, 4, dtype=torch.int64, device=qw.device)
    nib = (u.unsqueeze(-1) >> shifts) & 0xF  # [N, K/8, 8], element order
    return nib.reshape(n, k)


def repack_nvfp4(qw: torch.Tensor, size_n: int, size_k: int) -> torch.Tensor:
    CALLS["repack_nvfp4"] += 1
    _check(qw.dtype == torch.int32, f"qw must be of type int32 (kInt), got {qw.dtype}")
    _check_device(qw)
    _check(qw.is_contiguous(), "qw must be contiguous")
    _check(size_k % 128 == 0, f"size_k = {size_k} is not divisible by 128")
    _check(size_n % 16 == 0, f"size_n = {size_n} is not divisible by 16")
    _check(qw.dim() == 2, f"qw must be a 2-D tensor, got {qw.dim()} dims")
    _check(qw.size(0) == size_n, f"qw.size(0) = {qw.size(0)} does not match size_n = {size_n}")
    _check(qw.size(1) == size_k // 8, f"qw.size(1) = {qw.size(1)} does not match size_k / 8 = {size_k // 8}")

    nib = _checkpoint_nibbles(qw, size_n, size_k)
    # PetitFormat: a zero magnitude loses its sign (-0 -> +0).
    nib = torch.where(nib == 0x8, torch.zeros_like(nib), nib)
    # Only whole 32x256 tiles are written by the real kernel's grid.
    n_cov = (size_n // _TILE_N) * _TILE_N
    k_cov = (size_k // _TILE_K) * _TILE_K
    mask = torch.zeros_like(nib, dtype=torch.bool)
    mask[:n_cov, :k_cov] = True
    nib = torch.where(mask, nib, torch.zeros_like(nib))

    r = _ROWS_PER_BLOCK
    t = nib.reshape(size_n // r, r, size_k // 8, 8)
    t = t.permute(0, 2, 1, 3)  # [N/16, K/8, 16, 8]
    t = t[..., list(_NIBBLE_ORDER)]
    shifts = torch.arange(0, 32, 4, dtype=torch.int64, device=qw.device)
    words = (t << shifts).sum(dim=-1)  # [N/16, K/8, 16]
    return _u32_to_int32(words).reshape(size_n // r, 2 * size_k).contiguous()


def repack_mxfp4(qw: torch.Tensor, size_n: int, size_k: int) -> torch.Tensor:
    # The real wrapper calls ops.repack_nvfp4: MXFP4 and NVFP4 share one repack.
    return repack_nvfp4(qw, size_n, size_k)


def _unrepack_codes(b: torch.Tensor, size_n: int, size_k: int) -> torch.Tensor:
    r = _ROWS_PER_BLOCK
    u = _words_to_u32(b).reshape(size_n // r, size_k // 8, r)
    shifts = torch.arange(0, 32, 4, dtype=torch.int64, device=b.device)
    nib = (u.unsqueeze(-1) >> shifts) & 0xF  # [N/16, K/8, 16, 8] word order
    nib = nib[..., list(_NIBBLE_INVERSE)]
    return nib.permute(0, 2, 1, 3).reshape(size_n, size_k)


def _e2m1_value(code: torch.Tensor) -> torch.Tensor:
    """Decode E2M1 codes arithmetically: sign bit 3, exponent bits 2..1 (bias 1),
    mantissa bit 0; exponent 0 is subnormal (0 or 0.5)."""
    sign = 1.0 - 2.0 * ((code >> 3) & 1).to(torch.float32)
    exp = ((code >> 1) & 0x3).to(torch.float32)
    man = (code & 1).to(torch.float32)
    normal = torch.pow(2.0, exp - 1.0) * (1.0 + 0.5 * man)
    sub = 0.5 * man
    return sign * torch.where(exp > 0, normal, sub)


# --------------------------------------------------------------------------
# MXFP4 scales
# --------------------------------------------------------------------------


def process_mxfp4_scales(scales: torch.Tensor, size_n: int, size_k: int) -> torch.Tensor:
    CALLS["process_mxfp4_scales"] += 1
    _check(scales.dtype == torch.uint8, f"scales must be of type uint8, got {scales.dtype}")
    _check_device(scales)
    _check(scales.is_contiguous(), "scales must be contiguous")
    _check(size_k % 256 == 0, f"size_k = {size_k} is not divisible by 256")
    _check(size_n % 16 == 0, f"size_n = {size_n} is not divisible by 16")
    _check(scales.dim() == 2, f"scales must be a 2-D tensor, got {scales.dim()} dims")
    _check(scales.size(0) == size_n, f"scales.size(0) = {scales.size(0)} does not match size_n = {size_n}")
    _check(
        scales.size(1) > 0 and size_k // scales.size(1) == 32,
        f"size_k / scales.size(1) = {size_k} / {scales.size(1)} is not the MXFP4 group size 32",
    )
    n_tiles = size_n // _TILE_N  # grid covers whole 32-row tiles only
    g = size_k // 32
    s = scales[: n_tiles * _TILE_N, :g].reshape(n_tiles, _TILE_N, g)
    # Bytes are only reordered: out[t, g*32 + r] = scales[32 t + r, g]
    return s.permute(0, 2, 1).reshape(n_tiles, size_k).contiguous()


def _unprocess_mx_scales(s: torch.Tensor, size_n: int, size_k: int) -> torch.Tensor:
    n_tiles = size_n // _TILE_N
    g = size_k // 32
    full = torch.zeros(size_n, g, dtype=torch.uint8, device=s.device)
    full[: n_tiles * _TILE_N] = s.reshape(n_tiles, g, _TILE_N).permute(0, 2, 1).reshape(n_tiles * _TILE_N, g)
    return full


def _e8m0_as_kernel(e: torch.Tensor) -> torch.Tensor:
    # Non-HP kernels build the bf16 scale as the bit pattern (e << 7):
    # exact 2^(e-127) for 1..254, 0x00 -> 0.0, 0xFF -> +Inf.
    bits = (e.to(torch.int32) << 7).to(torch.int16)
    return bits.view(torch.bfloat16).to(torch.float32)


# --------------------------------------------------------------------------
# GEMMs
# --------------------------------------------------------------------------


def _check_a(a: torch.Tensor, size_m: int, size_k: int) -> None:
    # Unchecked by the real kernel (it reads a with row stride K); checked here.
    _check(a.dim() == 2, f"petit_kernel reference: a must be 2-D, got shape {tuple(a.shape)}")
    _check(a.is_contiguous(), "petit_kernel reference: a must be contiguous (row stride K)")
    _check(
        tuple(a.shape) == (size_m, size_k),
        f"petit_kernel reference: a.shape {tuple(a.shape)} != (size_m, size_k) = ({size_m}, {size_k})",
    )


def _global_scale_value(global_scale: torch.Tensor) -> torch.Tensor:
    # The real kernel dereferences a float* on the device.
    _check(
        isinstance(global_scale, torch.Tensor) and global_scale.dtype == torch.float32 and global_scale.numel() >= 1,
        "petit_kernel reference: global_scale must be a float32 tensor with >= 1 element",
    )
    return global_scale.reshape(-1)[0]


def _solution_guard(a: torch.Tensor, solution_id: int, fp16_supported: bool) -> None:
    _check(
        a.dtype in (torch.bfloat16, torch.float16),
        f"Unsupported data type {a.dtype}: a must be bfloat16 or float16",
    )
    if a.dtype == torch.float16 and not fp16_supported:
        if solution_id == -1:
            # The default chooser finds no candidate; std::optional::value() throws.
            raise RuntimeError("bad optional access")
        raise RuntimeError(f"No kernel implementation for solution_id={solution_id}")


def _fp4_a16_product(a: torch.Tensor, codes: torch.Tensor, group_scale: torch.Tensor, gs: torch.Tensor) -> torch.Tensor:
    """``a @ W^T * gs`` in float32, returned in ``a``'s dtype, where ``W`` is the
    E2M1 ``codes`` [N, K] times ``group_scale`` [N, K / group] (group 32 for MXFP4,
    16 for NVFP4)."""
    group = codes.size(1) // group_scale.size(1)
    w = _e2m1_value(codes) * group_scale.repeat_interleave(group, dim=1)
    return ((a.to(torch.float32) @ w.t()) * gs).to(a.dtype)


def mul_mxfp4_a16(
    a: torch.Tensor,
    b: torch.Tensor,
    s: torch.Tensor,
    global_scale: torch.Tensor,
    size_m: int,
    size_n: int,
    size_k: int,
    solution_id: int = -1,
) -> torch.Tensor:
    CALLS["mul_mxfp4_a16"] += 1
    _check_device(a, b, s, global_scale)
    _check(b.dim() == 2 and b.size(0) == size_n // 16, f"b.size(0) = {b.size(0)} does not match size_n / 16 = {size_n // 16}")
    _check(b.size(1) == size_k * 16 // 8, f"b.size(1) = {b.size(1)} does not match size_k * 2 = {size_k * 2}")
    _check(s.dim() == 2 and s.size(0) == size_n // 32, f"s.size(0) = {s.size(0)} does not match size_n / 32 = {size_n // 32}")
    _check(s.size(1) == size_k, f"s.size(1) = {s.size(1)} does not match size_k = {size_k}")
    _solution_guard(a, solution_id, fp16_supported=False)
    _check(b.dtype == torch.int32, f"petit_kernel reference: b must be int32 (repacked), got {b.dtype}")
    _check(s.dtype == torch.uint8, f"petit_kernel reference: s must be uint8 (processed E8M0), got {s.dtype}")
    _check_a(a, size_m, size_k)
    gs = _global_scale_value(global_scale)
    if size_m == 0:
        return torch.empty(0, size_n, dtype=a.dtype, device=a.device)
    scale = _e8m0_as_kernel(_unprocess_mx_scales(s, size_n, size_k))  # [N, K/32]
    return _fp4_a16_product(a, _unrepack_codes(b, size_n, size_k), scale, gs)


# --------------------------------------------------------------------------
# NVFP4 (group 16, float8_e4m3fn scales, fp32 global scale)
# --------------------------------------------------------------------------


def process_nvfp4_scales(scales: torch.Tensor, size_n: int, size_k: int) -> torch.Tensor:
    CALLS["process_nvfp4_scales"] += 1
    _check(
        scales.dtype == torch.float8_e4m3fn,
        f"scales must be of type float8_e4m3fn, got {scales.dtype}",
    )
    _check_device(scales)
    _check(scales.is_contiguous(), "scales must be contiguous")
    _check(size_k % 256 == 0, f"size_k = {size_k} is not divisible by 256")
    _check(size_n % 16 == 0, f"size_n = {size_n} is not divisible by 16")
    _check(scales.dim() == 2 and scales.size(0) == size_n, f"scales.size(0) = {scales.size(0)} does not match size_n = {size_n}")
    _check(
        scales.size(1) > 0 and size_k // scales.size(1) == 16,
        f"size_k / scales.size(1) = {size_k} / {scales.size(1)} is not the NVFP4 group size 16",
    )
    # The real kernel re-encodes (x 2^7, E5M3) and keeps the shape [N, K/16].
    # Our own invertible stand-in keeps shape and dtype but transposes each
    # 16-row block: element (16 t + r, g) goes to flat position (t, g, r).
    g = size_k // 16
    bytes_ = scales.view(torch.uint8).reshape(size_n // 16, 16, g).permute(0, 2, 1)
    return bytes_.reshape(size_n, g).contiguous().view(torch.float8_e4m3fn)


def _unprocess_nv_scales(s: torch.Tensor, size_n: int, size_k: int) -> torch.Tensor:
    g = size_k // 16
    bytes_ = s.contiguous().view(torch.uint8).reshape(size_n // 16, g, 16).permute(0, 2, 1)
    return bytes_.reshape(size_n, g).contiguous().view(torch.float8_e4m3fn).to(torch.float32)


def mul_nvfp4_a16(
    a: torch.Tensor,
    b: torch.Tensor,
    s: torch.Tensor,
    global_scale: torch.Tensor,
    size_m: int,
    size_n: int,
    size_k: int,
    solution_id: int = -1,
) -> torch.Tensor:
    CALLS["mul_nvfp4_a16"] += 1
    _check_device(a, b, s, global_scale)
    # The real mul_nvfp4_a16 does not check the B/s shapes; a mismatch gives
    # garbage there and an error (from reshape) here.
    _solution_guard(a, solution_id, fp16_supported=True)
    _check(b.dtype == torch.int32, f"petit_kernel reference: b must be int32 (repacked), got {b.dtype}")
    _check(s.dtype == torch.float8_e4m3fn, f"petit_kernel reference: s must be float8_e4m3fn, got {s.dtype}")
    _check_a(a, size_m, size_k)
    gs = _global_scale_value(global_scale)
    if size_m == 0:
        return torch.empty(0, size_n, dtype=a.dtype, device=a.device)
    scale = _unprocess_nv_scales(s, size_n, size_k)  # [N, K/16]
    return _fp4_a16_product(a, _unrepack_codes(b, size_n, size_k), scale, gs)


def get_fp4_solutions(*args, **kwargs):
    # Broken in the real 0.0.3 / 0.0.5 wrappers (5 arguments passed to a
    # 4-argument binding); pybind raises TypeError.
    raise TypeError(
        "get_fp4_solutions(): incompatible function arguments. The following argument types are supported:\n"
        "    1. (arg0: PetitSolutionHints, arg1: int, arg2: int, arg3: int) -> list[int]"
    )


def dequantize_repacked_mxfp4(b: torch.Tensor, s: torch.Tensor, size_n: int, size_k: int) -> torch.Tensor:
    """Reference-only helper: float32 [N, K] weights as the GEMM sees them."""
    codes = _unrepack_codes(b, size_n, size_k)
    scale = _e8m0_as_kernel(_unprocess_mx_scales(s, size_n, size_k))
    return _e2m1_value(codes) * scale.repeat_interleave(32, dim=1)


from . import moe_mxfp4  # noqa: E402  (the real package imports it too)
from ._fused_moe_ref import dequantize_native_moe_weight, fused_moe_bf16_mxfp4  # noqa: E402
from .moe_mxfp4 import MoeKernelLayout, repack_moe_kernel_layout  # noqa: E402


def moe_calls() -> dict:
    """Reference-only: call counts of the MoE entry points."""
    from . import _fused_moe_ref

    return {**moe_mxfp4.CALLS, **_fused_moe_ref.CALLS}


__all__ = [
    "MoeKernelLayout",
    "repack_moe_kernel_layout",
    "fused_moe_bf16_mxfp4",
    "repack_mxfp4",
    "repack_nvfp4",
    "process_mxfp4_scales",
    "process_nvfp4_scales",
    "mul_mxfp4_a16",
    "mul_nvfp4_a16",
    "get_fp4_solutions",
    "dequantize_native_moe_weight",  # reference-only
]
