"""CPU reference of ``petit_kernel.moe_mxfp4`` (petit-kernel 0.0.5), test-only.

The real module holds the host-side repack helpers that turn 3-D expert
tensors into the byte layouts Petit's fused MoE kernels read.  This reference
keeps the real *API* and *checks*:

* ``MoeKernelLayout`` with the members ``native_mxfp4`` and ``petit_mxfp4``;
* ``repack_moe_kernel_layout(data, scales_e8m0=None, *, layout,
  petit_format=True)``:

  - with ``scales_e8m0``: ``data`` is the packed E2M1 weight, uint8
    ``[N, K/2]`` or ``[E, N, K/2]`` (element 2i in the low nibble of byte i,
    the checkpoint's packing), ``scales_e8m0`` the uint8 E8M0 scales
    ``[N, K/32]`` / ``[E, N, K/32]``.  Returns ``(weight, scales)`` with the
    same shapes and dtypes.  3-D tensors are flattened to ``[E*N, ...]``
    first, as the real helper does, so its divisibility checks apply to
    ``E*N`` rows: weights need rows % 256 and K % 128, scales need rows % 32
    and scale columns % 8 (i.e. K % 256);
  - without ``scales_e8m0``: ``data`` is a bfloat16 bias ``[E, N]`` (or 3-D);
    its last dim is zero-padded to a multiple of 256 and permuted inside each
    256-column tile.  Returns ``[..., round_up(N, 256)]`` bfloat16.

  Every failed check raises ``ValueError`` with the real message (the real
  module's ``_require``).  A 3-D weight that is not contiguous fails in
  ``Tensor.view`` with torch's own ``RuntimeError``, as in the real module.

What it does NOT copy: the byte layouts.  Like the dense reference, the
repacked tensors are in a layout of our own, invertible but different from the
checkpoint layout and different between ``native_mxfp4`` and ``petit_mxfp4``:

* native weights: inside each tile of 256 rows x 128 columns (16 int32 words
  per row) the words are stored word-major (``[word, row]``) and the two
  nibbles of every byte are swapped;
* native scales: inside each tile of 32 rows x 8 columns the bytes are stored
  column-major;
* petit weights: the tile is stored ``[row % 16, word, row // 16]`` without
  the nibble swap, and with ``petit_format`` a negative zero (0x8) becomes
  +0, as the real Petit format canonicalises it;
* petit scales: each 32x8 tile is stored with its rows reversed;
* bias: inside each 256-column tile element ``16 a + b`` is stored at
  ``16 b + a``.

``fused_moe_bf16_mxfp4`` (reference in ``_fused_moe_ref.py``, exported from
``petit_kernel``) only decodes the *native* layout, like the real solution id
(``native_mxfp4`` weight ordering).  A caller that skips the repack, repacks
with ``petit_mxfp4``, or passes an un-repacked bias whose width happens to be
a multiple of 256 gets wrong numbers, as it would on the GPU.

Deliberate deviations from the real module:

* our own layouts, see above;
* the inverse helpers at the end (``unpack_native_weight`` ...) are
  reference-only; the real module has no inverse.

This file deliberately shares no code with ``tests/series/mxfp4_ref.py`` or
``tests/series/moe_ref.py``.
"""

from __future__ import annotations

import enum
from typing import Optional, Tuple, Union

import torch

# Reference-only: how often the helper ran (tests can assert it was used).
CALLS = {"repack_moe_kernel_layout": 0}

_W_TILE_ROWS = 256
_W_TILE_WORDS = 16  # 128 FP4 values = 64 bytes = 16 int32 words
_S_TILE_ROWS = 32
_S_TILE_COLS = 8
_BIAS_TILE = 256


def _require(cond: bool, msg: str) -> None:
    # The real module raises ValueError from its own _require.
    if not cond:
        raise ValueError(msg)


class MoeKernelLayout(enum.Enum):
    native_mxfp4 = "native_mxfp4"
    petit_mxfp4 = "petit_mxfp4"


# --------------------------------------------------------------------------
# 2-D byte permutations (our own layouts)
# --------------------------------------------------------------------------


def _swap_nibbles(b: torch.Tensor) -> torch.Tensor:
    return ((b >> 4) | (b << 4)).to(torch.uint8)


def _weight_words(qweight_u8: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
    _require(qweight_u8.dtype == torch.uint8, "qweight_u8 must be uint8")
    _require(qweight_u8.ndim == 2, "qweight_u8 must be rank-2")
    _require(qweight_u8.is_contiguous(), "qweight_u8 must be contiguous")
    size_n = qweight_u8.size(0)
    size_k = qweight_u8.size(1) * 2
    _require(size_n % 256 == 0, "size_n must be divisible by 256")
    _require(size_k % 128 == 0, "size_k must be divisible by 128")
    return qweight_u8, size_n, size_k


def _pack_native_weight(qweight_u8: torch.Tensor) -> torch.Tensor:
    q, n, k = _weight_words(qweight_u8)
    q = _swap_nibbles(q)
    w = q.view(torch.int32).reshape(n // _W_TILE_ROWS, _W_TILE_ROWS, k // 128, _W_TILE_WORDS)
    w = w.permute(0, 2, 3, 1)  # [row tile, k tile, word, row]
    return w.contiguous().view(torch.uint8).reshape(n, k // 2)


def _unpack_native_weight_2d(packed: torch.Tensor) -> torch.Tensor:
    n, k = packed.size(0), packed.size(1) * 2
    w = packed.contiguous().view(torch.int32).reshape(n // _W_TILE_ROWS, k // 128, _W_TILE_WORDS, _W_TILE_ROWS)
    w = w.permute(0, 3, 1, 2)
    q = w.contiguous().view(torch.uint8).reshape(n, k // 2)
    return _swap_nibbles(q)


def _canonicalise_negative_zero(q: torch.Tensor) -> torch.Tensor:
    lo = q & 0x0F
    hi = q >> 4
    lo = torch.where(lo == 0x8, torch.zeros_like(lo), lo)
    hi = torch.where(hi == 0x8, torch.zeros_like(hi), hi)
    return (lo | (hi << 4)).to(torch.uint8)


def _pack_petit_weight(qweight_u8: torch.Tensor, petit_format: bool) -> torch.Tensor:
    q, n, k = _weight_words(qweight_u8)
    if petit_format:
        q = _canonicalise_negative_zero(q)
    w = q.view(torch.int32).reshape(n // _W_TILE_ROWS, _W_TILE_ROWS // 16, 16, k // 128, _W_TILE_WORDS)
    w = w.permute(0, 3, 2, 4, 1)  # [row tile, k tile, row % 16, word, row // 16]
    return w.contiguous().view(torch.uint8).reshape(n, k // 2)


def _scale_tiles(scales_e8m0: torch.Tensor) -> Tuple[int, int]:
    _require(scales_e8m0.dtype == torch.uint8, "scales_e8m0 must be uint8")
    _require(scales_e8m0.ndim == 2, "scales_e8m0 must be rank-2")
    _require(scales_e8m0.is_contiguous(), "scales_e8m0 must be contiguous")
    size_n = scales_e8m0.size(0)
    scale_cols = scales_e8m0.size(1)
    _require(size_n % 32 == 0, "size_n must be divisible by 32")
    _require(scale_cols % 8 == 0, "scale_cols must be divisible by 8")
    return size_n, scale_cols


def _pack_native_scales(scales_e8m0: torch.Tensor) -> torch.Tensor:
    n, c = _scale_tiles(scales_e8m0)
    s = scales_e8m0.reshape(n // _S_TILE_ROWS, _S_TILE_ROWS, c // _S_TILE_COLS, _S_TILE_COLS)
    s = s.permute(0, 2, 3, 1)  # [row tile, col tile, col, row]
    return s.contiguous().reshape(n, c)


def _unpack_native_scales_2d(packed: torch.Tensor) -> torch.Tensor:
    n, c = packed.shape
    s = packed.contiguous().reshape(n // _S_TILE_ROWS, c // _S_TILE_COLS, _S_TILE_COLS, _S_TILE_ROWS)
    return s.permute(0, 3, 1, 2).contiguous().reshape(n, c)


def _pack_petit_scales(scales_e8m0: torch.Tensor) -> torch.Tensor:
    n, c = _scale_tiles(scales_e8m0)
    s = scales_e8m0.reshape(n // _S_TILE_ROWS, _S_TILE_ROWS, c // _S_TILE_COLS, _S_TILE_COLS)
    s = s.flip(1).permute(0, 2, 1, 3)
    return s.contiguous().reshape(n, c)


# --------------------------------------------------------------------------
# 2-D / 3-D dispatch (same checks and order as the real module)
# --------------------------------------------------------------------------


def _repack_weight_and_scales(qweight_u8, scales_e8m0, pack_w, pack_s):
    if qweight_u8.ndim == 2:
        _require(scales_e8m0.ndim == 2, "scales_e8m0 must be rank-2")
        _require(qweight_u8.size(0) == scales_e8m0.size(0), "row dimension mismatch")
        _require(qweight_u8.size(1) * 2 == scales_e8m0.size(1) * 32, "shape mismatch")
        return pack_w(qweight_u8), pack_s(scales_e8m0)

    _require(qweight_u8.ndim == 3, "qweight_u8 must be rank-2 or rank-3")
    _require(scales_e8m0.ndim == 3, "scales_e8m0 must be rank-2 or rank-3")
    experts = qweight_u8.size(0)
    # Like the real helper: flatten experts into rows (Tensor.view, so a
    # non-contiguous input raises torch's RuntimeError) and do not compare the
    # weight and scale shapes of 3-D inputs.
    qw = pack_w(qweight_u8.view(-1, qweight_u8.size(2)))
    so = pack_s(scales_e8m0.view(-1, scales_e8m0.size(2)))
    return qw.view(experts, qweight_u8.size(1), -1), so.view(experts, scales_e8m0.size(1), -1)


def _bias_perm_tiles(flat: torch.Tensor) -> torch.Tensor:
    rows, cols = flat.shape
    t = flat.reshape(rows, cols // _BIAS_TILE, 16, 16).transpose(-1, -2)
    return t.contiguous().reshape(rows, cols)


def _repack_mxfp4_bias(bias: torch.Tensor) -> torch.Tensor:
    _require(bias.dtype == torch.bfloat16, "bias must be bfloat16")
    _require(bias.ndim in (2, 3), "bias must be rank-2 or rank-3")
    _require(bias.is_contiguous(), "bias must be contiguous")
    prefix = tuple(bias.shape[:-1])
    cols = bias.size(-1)
    rows = bias.numel() // cols if cols else 0
    flat = bias.reshape(rows, cols)
    padded_cols = ((cols + _BIAS_TILE - 1) // _BIAS_TILE) * _BIAS_TILE
    if padded_cols != cols:
        padded = torch.zeros((rows, padded_cols), dtype=bias.dtype, device=bias.device)
        padded[:, :cols] = flat
        flat = padded
    return _bias_perm_tiles(flat).reshape(*prefix, padded_cols)


def repack_moe_kernel_layout(
    data: torch.Tensor,
    scales_e8m0: Optional[torch.Tensor] = None,
    *,
    layout: MoeKernelLayout,
    petit_format: bool = True,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Repack MXFP4 expert weights + scales, or a BF16 bias, for the MoE kernel.

    Same signature, checks (``ValueError``), shapes and dtypes as petit-kernel
    0.0.5; our own byte layout (see the module docstring).  For
    ``fused_moe_bf16_mxfp4`` use ``layout=MoeKernelLayout.native_mxfp4``.
    """
    CALLS["repack_moe_kernel_layout"] += 1
    _require(
        layout in (MoeKernelLayout.native_mxfp4, MoeKernelLayout.petit_mxfp4),
        f"unsupported MoE kernel layout: {layout}",
    )
    if scales_e8m0 is None:
        return _repack_mxfp4_bias(data)
    if layout == MoeKernelLayout.native_mxfp4:
        return _repack_weight_and_scales(data, scales_e8m0, _pack_native_weight, _pack_native_scales)
    return _repack_weight_and_scales(
        data,
        scales_e8m0,
        lambda q: _pack_petit_weight(q, petit_format),
        _pack_petit_scales,
    )


# --------------------------------------------------------------------------
# Reference-only inverses (used by the fused reference and by tests)
# --------------------------------------------------------------------------


def unpack_native_weight(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of the native weight repack, per expert: uint8 [E, N, K/2] in
    our native layout -> checkpoint packing.  Needs N % 256 == 0 and
    K % 128 == 0 per expert (the kernel's tiles do not cross experts)."""
    e, n, kh = packed.shape
    if n % _W_TILE_ROWS or (2 * kh) % 128:
        raise RuntimeError(
            f"petit_kernel reference: per-expert weight [{n}, {2 * kh}] is not a whole number of 256x128 tiles"
        )
    return _unpack_native_weight_2d(packed.reshape(e * n, kh)).reshape(e, n, kh)


def unpack_native_scales(packed: torch.Tensor, rows: int, scale_cols: int) -> torch.Tensor:
    """Inverse of the native scale repack: [E, rows, cols] or [E, rows*cols]
    uint8 -> [E, rows, cols] in checkpoint order.  Needs rows % 32 and
    cols % 8 per expert."""
    e = packed.size(0)
    if rows % _S_TILE_ROWS or scale_cols % _S_TILE_COLS:
        raise RuntimeError(
            f"petit_kernel reference: per-expert scales [{rows}, {scale_cols}] are not a whole number of 32x8 tiles"
        )
    flat = packed.contiguous().reshape(e * rows, scale_cols)
    return _unpack_native_scales_2d(flat).reshape(e, rows, scale_cols)


def unpack_bias(packed: torch.Tensor, cols: int) -> torch.Tensor:
    """Inverse of the bias repack: [E, round_up(cols, 256)] -> [E, cols]."""
    e, padded = packed.shape
    return _bias_perm_tiles(packed.contiguous().reshape(e, padded))[:, :cols]


__all__ = ["MoeKernelLayout", "repack_moe_kernel_layout"]
