"""Independent float32 reference of the gpt-oss MXFP4 MoE block, plus the
test-side helpers that turn a gpt-oss checkpoint into Petit's MoE inputs.

Shares no code with the CPU ``petit_kernel`` reference (``petit_kernel_ref``)
nor with the SGLang code under test; decodes MXFP4 with ``mxfp4_ref``.

gpt-oss semantics (transformers ``models/gpt_oss/modeling_gpt_oss.py``
``GptOssTopKRouter`` / ``GptOssExperts``, SGLang ``models/gpt_oss.py``):

* router: ``logits = x @ W_r^T + b_r``; top-k of the logits; the weights are
  the softmax over the k selected logits (same as softmax over all experts
  followed by renormalising the top-k, SGLang's ``renormalize=True``);
* experts (checkpoint layout, per layer):
  ``gate_up_proj_blocks`` uint8 [E, 2I, H/32, 16], ``gate_up_proj_scales``
  uint8 [E, 2I, H/32], ``gate_up_proj_bias`` bf16 [E, 2I]: rows interleaved,
  gate = even rows, up = odd rows; ``down_proj_blocks`` [E, H, I/32, 16],
  ``down_proj_scales`` [E, H, I/32], ``down_proj_bias`` [E, H];
* activation: ``gate = min(gate, limit)``, ``up = clamp(up, -limit, limit)``,
  ``glu = gate * sigmoid(alpha * gate)``, ``h = (up + 1) * glu``;
* output: ``sum_k w_k * (h_k @ W_down^T + b_down)``.

Public API (stable, used by the MoE patch's tests):

* ``route(router_logits, top_k) -> (topk_weights f32 [T,k], topk_ids i64 [T,k])``
* ``dequantize_experts(blocks, scales) -> f32 [E, N, K]``
* ``openai_swiglu(gate, up, alpha=1.702, limit=7.0)``
* ``experts_forward(x, topk_ids, topk_weights, w13, b13, w2, b2, alpha, limit)``
  with interleaved float ``w13`` [E, 2I, H] (checkpoint order)
* ``moe_forward(x, router_weight, router_bias, experts: dict, top_k, ...)``
  where ``experts`` holds the six checkpoint tensors by their suffix
* ``build_sorted_routing(topk_ids, topk_weights, num_experts, block=32)``
  -> (sorted_token_ids, sorted_weights, sorted_expert_ids, num_valid_ids)
* ``decode_sorted_routing(...)`` -> sorted list of (token, slot, expert, weight)
  to compare a routing built by the code under test with the canonical one
* ``checkpoint_to_petit_halves(experts, dim_pad, inter_pad)`` -> the
  un-repacked Petit inputs (``w13`` [gate; up] halves, scales, biases, ``w2``),
  zero-padded (exact); feed them to ``repack_moe_kernel_layout``
* ``deinterleave_rows(t)`` (gate/up even/odd -> [gate; up] halves),
  ``pad_packed_mxfp4(blocks_or_packed, scales, rows, cols)``, ``pad_rows``,
  ``pad_last(t, n)``, ``round_up(x, m)``

Petit's sizes: dim and inter must be multiples of 256 after padding
(``round_up(2880, 256) == 3072``).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

import mxfp4_ref as mx

SWIGLU_ALPHA = 1.702
SWIGLU_LIMIT = 7.0
SORT_BLOCK = 32


# --------------------------------------------------------------------------
# routing
# --------------------------------------------------------------------------


def route(router_logits: torch.Tensor, top_k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """gpt-oss routing: top-k of the logits, softmax over the selected ones."""
    vals, ids = torch.topk(router_logits.to(torch.float32), top_k, dim=-1)
    return torch.softmax(vals, dim=-1), ids


# --------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------


def dequantize_experts(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Checkpoint ``*_blocks`` [E, N, G, 16] (or packed [E, N, K/2]) and
    ``*_scales`` [E, N, G] -> float32 [E, N, K] (OCP decoding, NaN for 0xFF)."""
    e, n = blocks.shape[0], blocks.shape[1]
    packed = blocks.reshape(e * n, -1)
    return mx.dequantize_mxfp4(packed, scales.reshape(e * n, -1)).reshape(e, n, -1)


def openai_swiglu(gate: torch.Tensor, up: torch.Tensor, alpha: float = SWIGLU_ALPHA,
                  limit: float = SWIGLU_LIMIT) -> torch.Tensor:
    gate = gate.clamp(max=limit)
    up = up.clamp(min=-limit, max=limit)
    return (up + 1.0) * (gate * torch.sigmoid(alpha * gate))


def experts_forward(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    w13: torch.Tensor,
    b13: Optional[torch.Tensor],
    w2: torch.Tensor,
    b2: Optional[torch.Tensor],
    alpha: float = SWIGLU_ALPHA,
    limit: float = SWIGLU_LIMIT,
    round_h_bf16: bool = False,
) -> torch.Tensor:
    """float32 MoE over given routes.  ``w13`` [E, 2I, H] with gate/up
    interleaved (even/odd rows, checkpoint order), ``w2`` [E, H, I]; biases
    [E, 2I] (interleaved) / [E, H].  A route by route loop (no batching
    tricks).  ``round_h_bf16`` rounds the activation to bf16 as a BF16
    second GEMM would."""
    x = x.to(torch.float32)
    t, k = topk_ids.shape
    out = torch.zeros(t, w2.shape[1], dtype=torch.float32)
    for ti in range(t):
        for j in range(k):
            e = int(topk_ids[ti, j])
            gu = w13[e].float() @ x[ti]
            if b13 is not None:
                gu = gu + b13[e].float()
            h = openai_swiglu(gu[0::2], gu[1::2], alpha, limit)
            if round_h_bf16:
                h = h.to(torch.bfloat16).float()
            y = w2[e].float() @ h
            if b2 is not None:
                y = y + b2[e].float()
            out[ti] += float(topk_weights[ti, j]) * y
    return out


def moe_forward(
    x: torch.Tensor,
    router_weight: torch.Tensor,
    router_bias: Optional[torch.Tensor],
    experts: Dict[str, torch.Tensor],
    top_k: int,
    alpha: float = SWIGLU_ALPHA,
    limit: float = SWIGLU_LIMIT,
    round_h_bf16: bool = False,
) -> torch.Tensor:
    """The whole gpt-oss MoE MLP (router + experts) in float32 from
    checkpoint tensors.  ``experts`` maps each published expert tensor name
    (``gate_up_proj_blocks`` .. ``down_proj_bias``, optionally with a
    ``model.layers.N.mlp.experts.`` prefix) to its tensor."""
    def get(suffix):
        for key, val in experts.items():
            if key == suffix or key.endswith("." + suffix):
                return val
        raise KeyError(suffix)

    router_weight = router_weight.detach()
    router_bias = None if router_bias is None else router_bias.detach()
    logits = x.float() @ router_weight.float().t()
    if router_bias is not None:
        logits = logits + router_bias.float()
    weights, ids = route(logits, top_k)
    w13 = dequantize_experts(get("gate_up_proj_blocks"), get("gate_up_proj_scales"))
    w2 = dequantize_experts(get("down_proj_blocks"), get("down_proj_scales"))
    return experts_forward(x, ids, weights, w13, get("gate_up_proj_bias"), w2, get("down_proj_bias"),
                           alpha, limit, round_h_bf16)


# --------------------------------------------------------------------------
# Petit sorted routing (independent of petit_kernel_ref and of the patch)
# --------------------------------------------------------------------------


def build_sorted_routing(
    topk_ids: torch.Tensor, topk_weights: torch.Tensor, num_experts: int, block: int = SORT_BLOCK
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Petit's padded expert-major routing from top-k ids/weights [T, k].

    Buffers have the maximum size (``T*k + E*block - k`` entries, as Petit's
    tests allocate them); entries past the valid count are padding.
    Within an expert, routes are in (token, slot) order."""
    t, k = topk_ids.shape
    max_routes = t * k + num_experts * block - k
    max_blocks = (max_routes + block - 1) // block
    pad_id = (k << 24) | t
    ids = [pad_id] * max_routes
    wts = [0.0] * max_routes
    exps = [-1] * max_blocks
    pos = 0
    nblk = 0
    for e in range(num_experts):
        routes = [(ti, j) for ti in range(t) for j in range(k) if int(topk_ids[ti, j]) == e]
        if not routes:
            continue
        for i, (ti, j) in enumerate(routes):
            ids[pos + i] = (j << 24) | ti
            wts[pos + i] = float(topk_weights[ti, j])
        nb = -(-len(routes) // block)
        for b in range(nb):
            exps[nblk + b] = e
        nblk += nb
        pos += nb * block
    return (
        torch.tensor(ids, dtype=torch.int32),
        torch.tensor(wts, dtype=torch.float32),
        torch.tensor(exps, dtype=torch.int32),
        torch.tensor([pos, t], dtype=torch.int32),
    )


def decode_sorted_routing(
    sorted_token_ids: torch.Tensor,
    sorted_weights: torch.Tensor,
    sorted_expert_ids: torch.Tensor,
    num_valid_ids: torch.Tensor,
    tokens: int,
    block: int = SORT_BLOCK,
) -> List[Tuple[int, int, int, float]]:
    """The routes a sorted routing describes, as a sorted list of
    (token, slot, expert, weight); padding entries are dropped."""
    n = int(num_valid_ids.reshape(-1)[0])
    routes = []
    for i in range(n):
        e = int(sorted_expert_ids[i // block])
        v = int(sorted_token_ids[i]) & 0xFFFFFFFF
        tok, slot = v & 0xFFFFFF, v >> 24
        if e < 0 or tok >= tokens:
            continue
        routes.append((tok, slot, e, float(sorted_weights[i])))
    return sorted(routes)


# --------------------------------------------------------------------------
# checkpoint -> Petit input helpers (test side; the patch has its own)
# --------------------------------------------------------------------------


def deinterleave_rows(t: torch.Tensor) -> torch.Tensor:
    """[E, 2I, ...] with gate/up on even/odd rows -> [E, 2I, ...] as [gate; up]."""
    return torch.cat([t[:, 0::2], t[:, 1::2]], dim=1).contiguous()


def pad_last(t: torch.Tensor, n: int, value: int = 0) -> torch.Tensor:
    """Zero-pad (or ``value``-pad) the last dim to ``n``."""
    if t.shape[-1] == n:
        return t.contiguous()
    out = torch.full((*t.shape[:-1], n), value, dtype=t.dtype)
    out[..., : t.shape[-1]] = t
    return out


def pad_packed_mxfp4(packed: torch.Tensor, scales: torch.Tensor, rows: int, cols: int,
                     pad_scale: int = 127) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pad expert weights [E, N, K/2] (or blocks [E, N, K/32, 16]) and scales
    [E, N, K/32] to [E, rows, cols/2] / [E, rows, cols/32]: the new values
    are FP4 zeros (scale ``pad_scale``), so they contribute nothing."""
    e, n = packed.shape[:2]
    packed = packed.reshape(e, n, -1)
    p = torch.zeros(e, rows, cols // 2, dtype=torch.uint8)
    p[:, :n, : packed.shape[2]] = packed
    s = torch.full((e, rows, cols // 32), pad_scale, dtype=torch.uint8)
    s[:, :n, : scales.shape[2]] = scales
    return p, s


def pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """Zero-pad dim 1 of [E, N, ...] to ``rows``."""
    out = torch.zeros((t.shape[0], rows, *t.shape[2:]), dtype=t.dtype)
    out[:, : t.shape[1]] = t
    return out


def round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def checkpoint_to_petit_halves(
    experts: Dict[str, torch.Tensor], dim_pad: int, inter_pad: int
) -> Dict[str, torch.Tensor]:
    """Checkpoint expert tensors (the published names) -> the
    *un-repacked* inputs of Petit's fused MoE, padded to ``dim_pad`` /
    ``inter_pad``:

    * ``w13`` uint8 [E, 2*inter_pad, dim_pad/2] = [gate; up] halves,
      ``w13_scale`` uint8 [E, 2*inter_pad, dim_pad/32],
      ``w13_bias`` bf16 [E, 2*inter_pad];
    * ``w2`` uint8 [E, dim_pad, inter_pad/2], ``w2_scale`` [E, dim_pad, inter_pad/32],
      ``w2_bias`` bf16 [E, dim_pad].

    Padding is exact: padded gate/up rows have zero weights and bias, so
    ``h = (0 + 1) * 0 * sigmoid(0) = 0`` there."""
    def get(suffix):
        for key, val in experts.items():
            if key == suffix or key.endswith("." + suffix):
                return val
        raise KeyError(suffix)

    gu_b, gu_s, gu_bias = get("gate_up_proj_blocks"), get("gate_up_proj_scales"), get("gate_up_proj_bias")
    dn_b, dn_s, dn_bias = get("down_proj_blocks"), get("down_proj_scales"), get("down_proj_bias")
    e, two_i = gu_b.shape[:2]
    inter = two_i // 2
    dim = dn_b.shape[1]
    gu_b = gu_b.reshape(e, two_i, -1)
    halves = []
    for rows in (slice(0, None, 2), slice(1, None, 2)):  # gate, up
        p, s = pad_packed_mxfp4(gu_b[:, rows], gu_s[:, rows], inter_pad, dim_pad)
        halves.append((p, s, pad_rows(gu_bias[:, rows], inter_pad)))
    w2, w2_s = pad_packed_mxfp4(dn_b.reshape(e, dim, -1), dn_s, dim_pad, inter_pad)
    return {
        "w13": torch.cat([halves[0][0], halves[1][0]], dim=1).contiguous(),
        "w13_scale": torch.cat([halves[0][1], halves[1][1]], dim=1).contiguous(),
        "w13_bias": torch.cat([halves[0][2], halves[1][2]], dim=1).contiguous(),
        "w2": w2,
        "w2_scale": w2_s,
        "w2_bias": pad_last(dn_bias, dim_pad),
        "dim": dim,
        "inter": inter,
    }
