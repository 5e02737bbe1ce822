"""Build SGLang linear layers with PetitMxfp4Config, load MXFP4 tensors through
the layers' OWN weight loaders (as SGLang's llama.py does), and compute the
float32 reference from the independent decoder in mxfp4_ref.

Used by the TP=1 tests, the TP=2 worker processes and the ROCm tests.

Tolerance (``assert_matches``): the reference is ``x.float() @ W.T (+ bias)``
in float32 with W decoded by mxfp4_ref.  Petit (and the reference kernel)
multiply BF16 activations by exactly representable MXFP4 weights, accumulate in
float32 and round the result to BF16 (relative error <= 2^-9 ~ 0.2%); the bias
add happens in BF16 (another <= 2^-9).  Float32 accumulation over K <= 1024 adds
~1e-5 relative.  So we allow rtol = 1e-2 (about 5x the worst-case BF16 rounding
of two roundings) plus atol = 1e-2 * max|ref| for outputs near zero, where a
relative bound is meaningless after cancellation.  Any real layout/scale bug
(a swapped shard, a scale off by one binade = factor 2, a nibble-order swap)
gives errors of order max|ref|, far outside this bound; ``test_layers`` checks
that a wrong scale shard does fail it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

import mxfp4_ref as mx

QUANT = "sglang.srt.layers.quantization"
RTOL = 1e-2
ATOL_FRAC = 1e-2


def petit_mxfp4_config(cfg: Optional[dict] = None):
    from sglang.srt.layers.quantization.petit_mxfp4 import PetitMxfp4Config

    return PetitMxfp4Config.from_config(cfg if cfg is not None else mx.quark_mxfp4_config())


@dataclass
class Shard:
    """One checkpoint tensor set (a q/k/v or gate/up or whole module)."""

    shard_id: object  # None, "q"/"k"/"v", or 0/1
    packed: torch.Tensor  # uint8 [N_s, K/2]  (full, unsharded)
    scales: torch.Tensor  # uint8 [N_s, K/32]

    @property
    def n(self) -> int:
        return self.packed.shape[0]

    def dequant(self) -> torch.Tensor:
        return mx.dequantize_mxfp4(self.packed, self.scales)


@dataclass
class Case:
    kind: str  # replicated | qkv | merged | row
    layer: torch.nn.Module
    shards: List[Shard]
    bias: Optional[torch.Tensor]  # full bias (float32 copy of what was loaded)
    k_full: int
    extra: Dict = field(default_factory=dict)


def _loader(param):
    wl = getattr(param, "weight_loader", None)
    assert wl is not None, "parameter has no weight_loader"
    return wl


def load(layer, name: str, tensor: torch.Tensor, shard_id=None) -> None:
    """Exactly how SGLang's llama.py calls the loaders."""
    param = dict(layer.named_parameters())[name]
    wl = _loader(param)
    if shard_id is None:
        wl(param, tensor)
    else:
        wl(param, tensor, shard_id)


def finalize(layer) -> None:
    layer.quant_method.process_weights_after_loading(layer)


def _bias(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 999)
    return (torch.randn(n, generator=g) * 0.1).to(torch.bfloat16)


def build(kind: str, cfg, *, bias: bool = True, seed: int = 0, prefix: Optional[str] = None, sizes: Optional[dict] = None, load_weights: bool = True) -> Case:
    from sglang.srt.layers import linear as L

    s = dict(sizes or {})
    bf16 = torch.bfloat16
    if kind == "replicated":
        n, k = s.get("n", 64), s.get("k", 512)
        prefix = prefix or "model.layers.0.mlp.down_proj"
        layer = L.ReplicatedLinear(k, n, bias=bias, params_dtype=bf16, quant_config=cfg, prefix=prefix)
        shards = [Shard(None, *mx.random_mxfp4(n, k, seed))]
        k_full = k
    elif kind == "qkv":
        hidden, hs = s.get("hidden", 256), s.get("head_size", 64)
        nh, nkv = s.get("heads", 4), s.get("kv_heads", 2)
        prefix = prefix or "model.layers.0.self_attn.qkv_proj"
        layer = L.QKVParallelLinear(hidden, hs, nh, nkv, bias=bias, params_dtype=bf16, quant_config=cfg, prefix=prefix)
        shards = [
            Shard("q", *mx.random_mxfp4(nh * hs, hidden, seed + 1)),
            Shard("k", *mx.random_mxfp4(nkv * hs, hidden, seed + 2)),
            Shard("v", *mx.random_mxfp4(nkv * hs, hidden, seed + 3)),
        ]
        k_full = hidden
    elif kind == "merged":
        k, inter = s.get("k", 256), s.get("inter", 256)
        prefix = prefix or "model.layers.0.mlp.gate_up_proj"
        layer = L.MergedColumnParallelLinear(k, [inter, inter], bias=bias, params_dtype=bf16, quant_config=cfg, prefix=prefix)
        shards = [Shard(0, *mx.random_mxfp4(inter, k, seed + 4)), Shard(1, *mx.random_mxfp4(inter, k, seed + 5))]
        k_full = k
    elif kind == "row":
        n, k = s.get("n", 256), s.get("k", 512)
        prefix = prefix or "model.layers.0.mlp.down_proj"
        layer = L.RowParallelLinear(
            k, n, bias=bias, params_dtype=bf16, quant_config=cfg, prefix=prefix, input_is_parallel=True, reduce_results=True
        )
        shards = [Shard(None, *mx.random_mxfp4(n, k, seed + 6))]
        k_full = k
    else:
        raise ValueError(kind)

    n_full = sum(sh.n for sh in shards)
    bias_full = None
    case = Case(kind, layer, shards, None, k_full)
    if load_weights:
        for sh in shards:
            load(layer, "weight", sh.packed, sh.shard_id)
            load(layer, "weight_scale", sh.scales, sh.shard_id)
        if bias:
            # Bias rows for fused layers are loaded per shard too.
            bias_full = _bias(n_full, seed)
            if kind in ("qkv", "merged"):
                off = 0
                for sh in shards:
                    load(layer, "bias", bias_full[off : off + sh.n], sh.shard_id)
                    off += sh.n
            else:
                load(layer, "bias", bias_full)
            case.bias = bias_full.float()
    return case


def rank_slice_rows(case: Case, rank: int, tp: int) -> torch.Tensor:
    """float32 weight rows this rank holds (column-parallel sharding of every
    logical shard), concatenated the way SGLang lays them out."""
    # q heads are split; kv heads too (kv_heads >= tp in every case here)
    rows = []
    for sh in case.shards:
        w = sh.dequant()
        per = sh.n // tp
        rows.append(w[rank * per : (rank + 1) * per])
    return torch.cat(rows, 0)


def rank_slice_bias(case: Case, rank: int, tp: int) -> Optional[torch.Tensor]:
    if case.bias is None:
        return None
    out, off = [], 0
    for sh in case.shards:
        per = sh.n // tp
        out.append(case.bias[off + rank * per : off + (rank + 1) * per])
        off += sh.n
    return torch.cat(out)


def reference_column(case: Case, x: torch.Tensor, rank: int = 0, tp: int = 1) -> torch.Tensor:
    y = x.float() @ rank_slice_rows(case, rank, tp).t()
    b = rank_slice_bias(case, rank, tp)
    return y + b if b is not None else y


def reference_full(case: Case, x_full: torch.Tensor) -> torch.Tensor:
    w = torch.cat([sh.dequant() for sh in case.shards], 0)
    y = x_full.float() @ w.t()
    return y + case.bias if case.bias is not None else y


def run(layer, x: torch.Tensor) -> torch.Tensor:
    out = layer(x)
    if isinstance(out, tuple):
        out = out[0]
    return out


def max_rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref).abs().max() / ref.abs().max().clamp(min=1e-30))


def assert_matches(out: torch.Tensor, ref: torch.Tensor, what: str = "") -> None:
    assert out.dtype == torch.bfloat16, f"{what}: output dtype {out.dtype}, expected bfloat16"
    assert tuple(out.shape) == tuple(ref.shape), f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    atol = ATOL_FRAC * float(ref.abs().max())
    torch.testing.assert_close(out.float(), ref, rtol=RTOL, atol=atol, msg=lambda m: f"{what}: {m}")


def rand_x(m: int, k: int, seed: int = 0, device="cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(1234 + seed)
    return torch.randn(m, k, generator=g).to(torch.bfloat16).to(device)
