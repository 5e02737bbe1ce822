"""CPU reference of ``petit_kernel.fused_moe_bf16_mxfp4`` (petit-kernel 0.0.5).

Reference-only module; the real function lives in ``petit_kernel/__init__.py``
and is re-exported from our ``__init__`` under the same name.

Signature (the real one)::

    fused_moe_bf16_mxfp4(hidden_states, w13_q, w2_q, sorted_token_ids,
                         sorted_weights, sorted_expert_ids, num_valid_ids,
                         topk, fc1_scale, fc2_scale, num_persistent_tgs=0,
                         out=None, w13_bias=None, w2_bias=None) -> out

Inputs (T tokens, D = dim, I = inter_dim, E experts):

* ``hidden_states`` bf16 ``[T, D]``;
* ``w13_q`` uint8 ``[E, 2I, D/2]``: rows ``[gate (I rows); up (I rows)]``
  (two halves, NOT gpt-oss's even/odd interleave), repacked with
  ``repack_moe_kernel_layout(..., layout=MoeKernelLayout.native_mxfp4)``;
* ``w2_q`` uint8 ``[E, D, I/2]``, same repack;
* ``fc1_scale`` / ``fc2_scale`` uint8 ``[E, 2I, D/32]`` / ``[E, D, I/32]``
  (or flattened to ``[E, rows*cols]``), repacked with the weights;
* ``w13_bias`` / ``w2_bias`` optional bf16 ``[E, 2I]`` / ``[E, round_up(D, 256)]``
  repacked with ``repack_moe_kernel_layout(bias, layout=...)``;
* sorted routing (Petit's ``build_padded_sorted_routing`` /
  ``BuildSortedRoutingFromTopK`` semantics; petit_kernel has no Python
  builder, callers build it): expert-major, each expert's routes padded to a
  multiple of 32; ``sorted_token_ids[i] = (slot << 24) | token`` (int32),
  padding entries ``(topk << 24) | T``; ``sorted_weights`` float32 (0 for
  padding); ``sorted_expert_ids[b]`` (int32) the expert of block ``b`` of 32
  entries, -1 for unused blocks; ``num_valid_ids`` int32 ``[padded route
  count, T]``.

Computation (per valid entry i < num_valid_ids[0] with token < T, in block
b = i // 32 whose expert e = sorted_expert_ids[b] != -1)::

    gu   = x[token] @ W13[e]^T + b13[e]        (fp32)
    gate, up = gu[:I], gu[I:]
    gate = min(gate, 7.0); up = clamp(up, -7.0, 7.0)
    h    = bf16(gate * sigmoid(1.702 * gate) * (up + 1))
    out[token] += w_i * (h @ W2[e]^T + b2[e])  (fp32, rounded to bf16 once)

The SwiGLU constants are compiled into the real kernel (``OpenAISwiGLUOp``:
limit 7.0, alpha 1.702); there is no argument for them.

Checks: the real wrapper's checks in the real order, raising the same
exceptions and messages (``RuntimeError``; ``ValueError`` from the solution-id
shape encoding when D/64 or I/64 exceeds 255; an ``IndexError`` from
``size(2)`` when ``w2_q`` is not 3-D, as in the real wrapper).  The real
wrapper zeroes ``out`` after its checks and returns it.

Deliberate deviations (extra checks, messages start with
"petit_kernel reference:"):

* "input_q must be on GPU" is relaxed to "all tensors on one device";
* things the real kernel does not check but would get wrong or read out of
  bounds raise here: D % 256 or I % 256 (the repack helpers' tiles; the real
  helpers refuse most of these shapes already), bias shapes, the lengths of
  the sorted arrays vs ``num_valid_ids[0]``, ``num_valid_ids[1] > T``,
  expert ids outside [-1, E), a slot >= topk in a valid entry;
* output: contributions are summed in fp32 and rounded to bf16 once.  The
  kernel (as read in Petit's one-stage stage-2 code,
  ``onestage_fused_moe_stage2.cuh``) multiplies each route's fp32 result by
  its weight, rounds it to bf16 (round half away from zero) and adds it to
  ``out`` with bf16 atomics in no fixed order: expect up to about
  ``topk`` bf16 ulps of difference per element, and run-to-run
  nondeterminism on the GPU;
* ``h`` is rounded to bf16 before the second GEMM (what a BF16 MFMA stage 2
  sees; the C++ tests compare against a BF16 ``h``);
* the routing weight multiplies the whole expert output including ``b2``
  (gpt-oss semantics; the Petit bias test uses weight 1, so only a GPU run
  can confirm the kernel does the same);
* E8M0 scales decode like the dense reference (bf16 bit pattern ``e << 7``:
  0x00 -> 0, 0xFF -> +Inf);
* entries whose token is >= T are skipped (the C++ reference does the same);
  ``num_valid_ids[1]`` is only range-checked.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import moe_mxfp4 as _moe

CALLS = {"fused_moe_bf16_mxfp4": 0}

_BLOCK = 32
_SWIGLU_LIMIT = 7.0
_SWIGLU_ALPHA = 1.702


def _ref_check(cond: bool, msg: str) -> None:
    if not cond:
        raise RuntimeError("petit_kernel reference: " + msg)


def _check_dtype(name: str, tensor: torch.Tensor, dtype: torch.dtype) -> None:
    if tensor.dtype != dtype:
        raise RuntimeError(f"{name} must be {str(dtype).removeprefix('torch.')}")


def _check_mxfp4_scale_shape(name, scale, experts, rows, scale_cols):
    if scale.dim() == 3:
        if scale.size(0) != experts:
            raise RuntimeError(f"{name} experts mismatch")
        if scale.size(1) != rows:
            raise RuntimeError(f"{name} second dim mismatch")
        if scale.size(2) != scale_cols:
            raise RuntimeError(f"{name} third dim mismatch")
        return
    if scale.dim() == 2:
        if scale.size(0) != experts:
            raise RuntimeError(f"{name} experts mismatch")
        if scale.size(1) != rows * scale_cols:
            raise RuntimeError(f"{name} second dim mismatch")
        return
    raise RuntimeError(f"{name} must be rank-2 or rank-3")


def _check_bf16_mxfp4_args(hidden_states, w1_q, w2_q, w1_scale, w2_scale, tokens, dim, experts):
    _check_dtype("hidden_states", hidden_states, torch.bfloat16)
    _check_dtype("w1_q", w1_q, torch.uint8)
    _check_dtype("w2_q", w2_q, torch.uint8)
    _check_dtype("w1_scale", w1_scale, torch.uint8)
    _check_dtype("w2_scale", w2_scale, torch.uint8)
    inter_dim = w2_q.size(2) * 2
    if w2_q.size(1) != dim:
        raise RuntimeError("w2_q dim mismatch with hidden_states")
    if w1_q.size(0) != experts:
        raise RuntimeError("w1_q experts mismatch with w2_q")
    if w1_q.size(1) != 2 * inter_dim:
        raise RuntimeError("w1_q second dim must be 2*inter_dim")
    if w1_q.size(2) * 2 != dim:
        raise RuntimeError("w1_q third dim must be dim/2")
    if inter_dim % 128 != 0:
        raise RuntimeError("inter_dim must be divisible by 128")
    _check_mxfp4_scale_shape("w1_scale", w1_scale, experts, 2 * inter_dim, dim // 32)
    _check_mxfp4_scale_shape("w2_scale", w2_scale, experts, dim, inter_dim // 32)


def _check_optional_bias(bias, hidden_states, name):
    if bias is None:
        return
    if bias.device != hidden_states.device:
        raise RuntimeError(f"{name} device mismatch")
    if bias.dtype != torch.bfloat16:
        raise RuntimeError(f"{name} must be bfloat16")
    if not bias.is_contiguous():
        raise RuntimeError(f"{name} must be contiguous")


def _check_common(out, input_q, w1_q, w2_q, sorted_token_ids, sorted_weights, sorted_expert_ids,
                  num_valid_ids, topk, input_scale, w1_scale, w2_scale, num_persistent_tgs):
    # Real: `input_q must be on GPU`; here every tensor must share input_q's device.
    device = input_q.device
    named = (
        ("out", out),
        ("w1_q", w1_q),
        ("w2_q", w2_q),
        ("sorted_token_ids", sorted_token_ids),
        ("sorted_weights", sorted_weights),
        ("sorted_expert_ids", sorted_expert_ids),
        ("num_valid_ids", num_valid_ids),
        ("input_scale", input_scale),
        ("w1_scale", w1_scale),
        ("w2_scale", w2_scale),
    )
    for name, t in named:
        if t.device != device:
            raise RuntimeError(f"{name} device mismatch")
    if input_q.dim() != 2:
        raise RuntimeError("input_q must be [tokens, dim]")
    if w1_q.dim() != 3:
        raise RuntimeError("w1_q must be rank 3")
    if w2_q.dim() != 3:
        raise RuntimeError("w2_q must be rank 3")
    tokens, dim = input_q.shape
    experts = w2_q.size(0)
    for name, t in (("out", out), ("input_q", input_q)) + named[1:]:
        if not t.is_contiguous():
            raise RuntimeError(f"{name} must be contiguous")
    _check_dtype("out", out, torch.bfloat16)
    _check_dtype("sorted_token_ids", sorted_token_ids, torch.int32)
    _check_dtype("sorted_weights", sorted_weights, torch.float32)
    _check_dtype("sorted_expert_ids", sorted_expert_ids, torch.int32)
    _check_dtype("num_valid_ids", num_valid_ids, torch.int32)
    _check_dtype("input_scale", input_scale, torch.float32)
    if out.dim() != 2 or out.size(0) != tokens or out.size(1) != dim:
        raise RuntimeError("out must be [tokens, dim]")
    if num_valid_ids.numel() != 2:
        raise RuntimeError("num_valid_ids must have 2 elements")
    if topk <= 0:
        raise RuntimeError("topk must be > 0")
    if num_persistent_tgs < 0:
        raise RuntimeError("num_persistent_tgs must be >= 0")
    if dim % 128 != 0:
        raise RuntimeError("dim must be divisible by 128")
    return tokens, dim, experts


def _check_solution_shape(dim: int, inter_dim: int) -> None:
    # _with_fused_moe_shape: the solution id encodes dim/64 and inter/64 in 8 bits.
    if dim <= 0 or inter_dim <= 0:
        raise ValueError("MoE dimensions must be positive")
    if dim % 64 != 0 or inter_dim % 64 != 0:
        raise ValueError("MoE dimensions must be divisible by 64")
    if dim // 64 > 0xFF or inter_dim // 64 > 0xFF:
        raise ValueError("MoE dimensions exceed the solution-ID encoding")


# --------------------------------------------------------------------------
# decoding (kernel view of the native layout)
# --------------------------------------------------------------------------


def _e2m1(codes: torch.Tensor) -> torch.Tensor:
    sign = 1.0 - 2.0 * ((codes >> 3) & 1).to(torch.float32)
    exp = ((codes >> 1) & 0x3).to(torch.float32)
    man = (codes & 1).to(torch.float32)
    mag = torch.where(exp > 0, torch.pow(2.0, exp - 1.0) * (1.0 + 0.5 * man), 0.5 * man)
    return sign * mag


def _e8m0_kernel(e: torch.Tensor) -> torch.Tensor:
    return (e.to(torch.int32) << 7).to(torch.int16).view(torch.bfloat16).to(torch.float32)


def dequantize_native_moe_weight(w_q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Reference-only: float32 [E, N, K] expert weights as the kernel sees the
    natively repacked ``w_q`` [E, N, K/2] and ``scale`` ([E, N, K/32] or
    [E, N*K/32])."""
    e, n, kh = w_q.shape
    k = kh * 2
    q = _moe.unpack_native_weight(w_q)  # [E, N, K/2], checkpoint packing
    codes = torch.stack([q & 0xF, q >> 4], dim=-1).reshape(e, n, k).to(torch.int64)
    s = _moe.unpack_native_scales(scale, n, k // 32)
    return _e2m1(codes) * _e8m0_kernel(s).repeat_interleave(32, dim=-1)


def _openai_swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    gate = torch.clamp(gate, max=_SWIGLU_LIMIT)
    up = torch.clamp(up, min=-_SWIGLU_LIMIT, max=_SWIGLU_LIMIT)
    return gate * torch.sigmoid(_SWIGLU_ALPHA * gate) * (up + 1.0)


def fused_moe_bf16_mxfp4(
    hidden_states: torch.Tensor,
    w13_q: torch.Tensor,
    w2_q: torch.Tensor,
    sorted_token_ids: torch.Tensor,
    sorted_weights: torch.Tensor,
    sorted_expert_ids: torch.Tensor,
    num_valid_ids: torch.Tensor,
    topk: int,
    fc1_scale: torch.Tensor,
    fc2_scale: torch.Tensor,
    num_persistent_tgs: int = 0,
    out: Optional[torch.Tensor] = None,
    w13_bias: Optional[torch.Tensor] = None,
    w2_bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """CPU reference of Petit's fused BF16 x MXFP4 MoE (one stage, OpenAI
    SwiGLU, native_mxfp4 weight ordering); see the module docstring."""
    CALLS["fused_moe_bf16_mxfp4"] += 1
    if out is None:
        out = torch.zeros(
            (hidden_states.size(0), hidden_states.size(1)), dtype=torch.bfloat16, device=hidden_states.device
        )
    tokens = hidden_states.size(0)
    dim = hidden_states.size(1)
    experts = w2_q.size(0)
    input_scale = torch.empty((0,), dtype=torch.float32, device=hidden_states.device)
    _check_bf16_mxfp4_args(hidden_states, w13_q, w2_q, fc1_scale, fc2_scale, tokens, dim, experts)
    _check_optional_bias(w13_bias, hidden_states, "w13_bias")
    _check_optional_bias(w2_bias, hidden_states, "w2_bias")
    tokens, dim, experts = _check_common(
        out, hidden_states, w13_q, w2_q, sorted_token_ids, sorted_weights, sorted_expert_ids,
        num_valid_ids, int(topk), input_scale, fc1_scale, fc2_scale, int(num_persistent_tgs),
    )
    out.zero_()
    inter = w2_q.size(2) * 2
    _check_solution_shape(dim, inter)

    # ---- reference-only checks (the real kernel would compute garbage) ----
    _ref_check(dim % 256 == 0, f"dim = {dim} must be a multiple of 256 (repacked tiles, scale columns % 8)")
    _ref_check(inter % 256 == 0, f"inter_dim = {inter} must be a multiple of 256 (scale columns % 8)")
    if w13_bias is not None:
        _ref_check(
            w13_bias.numel() == experts * 2 * inter,
            f"w13_bias must hold [E, 2*inter] = [{experts}, {2 * inter}] repacked values, got {tuple(w13_bias.shape)}",
        )
    pad_dim = ((dim + 255) // 256) * 256
    if w2_bias is not None:
        _ref_check(
            w2_bias.numel() == experts * pad_dim,
            f"w2_bias must hold [E, round_up(dim, 256)] = [{experts}, {pad_dim}] repacked values, "
            f"got {tuple(w2_bias.shape)}",
        )
    nv = num_valid_ids.reshape(-1).tolist()
    n_valid, n_tok = int(nv[0]), int(nv[1])
    _ref_check(0 <= n_valid, f"num_valid_ids[0] = {n_valid} < 0")
    _ref_check(0 <= n_tok <= tokens, f"num_valid_ids[1] = {n_tok} not in [0, tokens={tokens}]")
    n_blocks = (n_valid + _BLOCK - 1) // _BLOCK
    _ref_check(sorted_token_ids.dim() == 1 and sorted_weights.dim() == 1 and sorted_expert_ids.dim() == 1,
               "sorted_token_ids / sorted_weights / sorted_expert_ids must be 1-D")
    _ref_check(sorted_token_ids.numel() >= n_valid and sorted_weights.numel() >= n_valid,
               f"sorted_token_ids ({sorted_token_ids.numel()}) / sorted_weights ({sorted_weights.numel()}) "
               f"shorter than num_valid_ids[0] = {n_valid}")
    _ref_check(sorted_expert_ids.numel() >= n_blocks,
               f"sorted_expert_ids ({sorted_expert_ids.numel()}) shorter than ceil(num_valid_ids[0] / 32) = {n_blocks}")
    if n_valid == 0 or tokens == 0:
        return out

    ids = sorted_token_ids[:n_valid].to(torch.int64) & 0xFFFFFFFF
    tok = ids & 0xFFFFFF
    slot = ids >> 24
    wts = sorted_weights[:n_valid].to(torch.float32)
    blk_expert = sorted_expert_ids[:n_blocks].to(torch.int64)
    _ref_check(bool(((blk_expert >= -1) & (blk_expert < experts)).all()),
               f"sorted_expert_ids outside [-1, {experts}): {sorted_expert_ids[:n_blocks].tolist()}")
    ent_expert = blk_expert.repeat_interleave(_BLOCK)[:n_valid]
    valid = (tok < tokens) & (ent_expert >= 0)
    _ref_check(bool((slot[valid] < int(topk)).all()), f"a valid entry has slot >= topk = {int(topk)}")

    w13 = dequantize_native_moe_weight(w13_q, fc1_scale)  # [E, 2I, D]
    w2 = dequantize_native_moe_weight(w2_q, fc2_scale)  # [E, D, I]
    b13 = None if w13_bias is None else _moe.unpack_bias(w13_bias.reshape(experts, 2 * inter), 2 * inter).float()
    b2 = None if w2_bias is None else _moe.unpack_bias(w2_bias.reshape(experts, pad_dim), dim).float()

    x = hidden_states.to(torch.float32)
    acc = torch.zeros(tokens, dim, dtype=torch.float32)
    for e in torch.unique(ent_expert[valid]).tolist():
        sel = valid & (ent_expert == e)
        t_idx = tok[sel]
        gu = x[t_idx] @ w13[e].t()
        if b13 is not None:
            gu = gu + b13[e]
        h = _openai_swiglu(gu[:, :inter], gu[:, inter:]).to(torch.bfloat16).to(torch.float32)
        y = h @ w2[e].t()
        if b2 is not None:
            y = y + b2[e]
        acc.index_add_(0, t_idx, y * wts[sel].unsqueeze(1))
    out.copy_(acc.to(torch.bfloat16))
    return out
