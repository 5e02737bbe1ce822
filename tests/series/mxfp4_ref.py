"""Independent MXFP4 encoder / decoder (OCP Microscaling Formats v1.0) for tests.

Format (docs/mxfp4-and-petit.md section 2):
* E2M1 element: sign = bit 3, codes 0..7 = 0, .5, 1, 1.5, 2, 3, 4, 6; 8..15 the
  same values negated (0x8 = -0).
* E8M0 scale: 2^(e-127) for e in 0..254, 0xFF = NaN.
* A block is 32 consecutive elements along K (the input dim), stored as
  ``weight_scale[n, k // 32]``.
* Packing: element 2i in the low nibble, 2i+1 in the high nibble of byte i.

Plus helpers to build edge cases (negative zeros, NaN scales, bad shapes) and
the quantization configs Quark / ModelOpt write (including mixed precision).

Shares no code with the reference ``petit_kernel`` in ``petit_kernel_ref``.
"""

from __future__ import annotations

import copy
from typing import Dict, Iterable, Optional, Tuple

import torch

GROUP = 32
E2M1_VALUES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
E2M1_EMAX = 2  # exponent of the largest E2M1 normal (6 = 1.5 * 2^2)
NEG_ZERO = 0x8
NAN_SCALE = 0xFF

_TABLE = torch.tensor(E2M1_VALUES + [-v for v in E2M1_VALUES], dtype=torch.float32)


# --------------------------------------------------------------------------
# packing
# --------------------------------------------------------------------------


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes [N, K] (0..15) -> packed uint8 [N, K/2]."""
    assert codes.shape[-1] % 2 == 0
    c = codes.to(torch.uint8)
    lo = c[..., 0::2] & 0xF
    hi = c[..., 1::2] & 0xF
    return (lo | (hi << 4)).contiguous()


def unpack_codes(packed: torch.Tensor) -> torch.Tensor:
    """packed uint8 [N, K/2] -> uint8 codes [N, K]."""
    p = packed.to(torch.uint8)
    out = torch.stack([p & 0xF, p >> 4], dim=-1)
    return out.reshape(*p.shape[:-1], p.shape[-1] * 2)


# --------------------------------------------------------------------------
# decode
# --------------------------------------------------------------------------


def e8m0_to_float(scales: torch.Tensor) -> torch.Tensor:
    """Spec decoding: 2^(e-127), 0xFF -> NaN."""
    e = scales.to(torch.int32)
    val = torch.exp2((e - 127).to(torch.float64)).to(torch.float32)
    return torch.where(e == NAN_SCALE, torch.full_like(val, float("nan")), val)


def dequantize_mxfp4(packed: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(uint8 [N, K/2], uint8 [N, K/32]) -> float32 [N, K]."""
    codes = unpack_codes(packed).long()
    n, k = codes.shape
    assert scales.shape == (n, k // GROUP), (scales.shape, (n, k // GROUP))
    vals = _TABLE[codes]
    s = e8m0_to_float(scales).repeat_interleave(GROUP, dim=1)
    return vals * s


# --------------------------------------------------------------------------
# encode
# --------------------------------------------------------------------------


def _round_to_e2m1(x: torch.Tensor) -> torch.Tensor:
    """Round |x| (already divided by the block scale, clipped to 6) to the
    nearest E2M1 magnitude; ties go to the code with an even mantissa bit."""
    mags = torch.tensor(E2M1_VALUES, dtype=torch.float32)
    d = (x.unsqueeze(-1) - mags).abs()  # [..., 8]
    best = d.min(dim=-1, keepdim=True).values
    ties = d <= best + 0.0
    # prefer even codes (mantissa bit 0) among ties, then the smaller code
    pref = torch.arange(8) + 100 * (torch.arange(8) % 2)
    cand = torch.where(ties, pref.expand_as(d), torch.full_like(d, 10_000, dtype=torch.long))
    code = cand.argmin(dim=-1)
    return code.to(torch.uint8)


def quantize_mxfp4(w: torch.Tensor, negative_zero: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """float [N, K] -> (packed uint8 [N, K/2], scales uint8 [N, K/32]).

    OCP rule: shared exponent = floor(log2(amax)) - emax(E2M1); elements are
    x / 2^shared rounded to nearest even and clamped to +-6.  An all-zero block
    gets exponent 127 (scale 1).  With ``negative_zero`` the zero codes of
    negative inputs become 0x8 (as ModelOpt writes them)."""
    w = w.detach().to(torch.float32)
    n, k = w.shape
    if k % GROUP:
        raise ValueError(f"K={k} is not a multiple of {GROUP}")
    blocks = w.reshape(n, k // GROUP, GROUP)
    amax = blocks.abs().amax(dim=-1)
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    shared = torch.floor(torch.log2(safe)) - E2M1_EMAX
    shared = torch.where(amax > 0, shared, torch.zeros_like(shared)).clamp(-127, 127)
    scale_bytes = (shared + 127).to(torch.uint8)
    scaled = (blocks / torch.exp2(shared).unsqueeze(-1)).clamp(-6.0, 6.0)
    mag_code = _round_to_e2m1(scaled.abs())
    neg = scaled < 0
    if not negative_zero:
        neg = neg & (mag_code != 0)
    codes = mag_code | (neg.to(torch.uint8) << 3)
    return pack_codes(codes.reshape(n, k)), scale_bytes.contiguous()


# --------------------------------------------------------------------------
# random / edge-case tensors
# --------------------------------------------------------------------------


def random_mxfp4(
    n: int,
    k: int,
    seed: int = 0,
    scale_range: Tuple[int, int] = (119, 123),
    allow_negative_zero: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Uniformly random codes (all 16, so -0 included unless disabled) and
    random scale bytes in [lo, hi)."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k), generator=g, dtype=torch.int64)
    if not allow_negative_zero:
        codes = torch.where(codes == NEG_ZERO, torch.zeros_like(codes), codes)
    scales = torch.randint(scale_range[0], scale_range[1], (n, k // GROUP), generator=g, dtype=torch.int64)
    return pack_codes(codes.to(torch.uint8)), scales.to(torch.uint8)


def count_negative_zeros(packed: torch.Tensor) -> int:
    return int((unpack_codes(packed) == NEG_ZERO).sum())


def with_negative_zeros(packed: torch.Tensor) -> torch.Tensor:
    """Turn every +0 code into -0 (0x8): same values, different bits."""
    c = unpack_codes(packed)
    return pack_codes(torch.where(c == 0, torch.full_like(c, NEG_ZERO), c))


def with_nan_scale(scales: torch.Tensor, row: int = 0, group: int = 0) -> torch.Tensor:
    s = scales.clone()
    s[row, group] = NAN_SCALE
    return s


# (N, K) per partition that pass / fail Petit's effective constraints
GOOD_SHAPES = [(32, 256), (64, 512), (96, 768)]
BAD_SHAPES = {
    "k_not_256": (64, 384),  # K%128 == 0 passes the wrapper, K%256 does not
    "n_not_32": (48, 256),  # N%16 == 0 passes the wrapper, N%32 does not
    "k_not_32": (64, 336),
}


# --------------------------------------------------------------------------
# quantization configs (shapes as written by the real exporters, see
# mxfp4-checkpoint-examples.json)
# --------------------------------------------------------------------------

_QUARK_MX_SPEC = {
    "block_size": None,
    "ch_axis": -1,
    "dtype": "fp4",
    "enable_buffer_reuse": False,
    "group_size": 32,
    "is_dynamic": False,
    "is_scale_quant": False,
    "max_input_numel": 4194304,
    "mx_element_dtype": None,
    "observer_cls": "PerBlockMXObserver",
    "qscheme": "per_group",
    "round_method": "half_even",
    "scale_calculation_mode": "even",
    "scale_format": "e8m0",
    "scale_type": "float",
    "symmetric": None,
    "zero_point_type": "int32",
}

_QUARK_FP8_OUT = {
    "dtype": "fp8_e4m3",
    "qscheme": "per_tensor",
    "is_dynamic": False,
    "symmetric": True,
    "observer_cls": "PerTensorMinMaxObserver",
    "ch_axis": None,
    "group_size": None,
    "round_method": "half_even",
    "scale_type": "float",
}


def quark_mxfp4_config(
    weight_only: bool = False, kv_fp8: bool = False, exclude: Optional[Iterable[str]] = ("lm_head",)
) -> Dict:
    w = copy.deepcopy(_QUARK_MX_SPEC)
    inp = None if weight_only else dict(copy.deepcopy(_QUARK_MX_SPEC), is_dynamic=True)
    cfg = {
        "algo_config": None,
        "exclude": list(exclude or []),
        "export": {
            "kv_cache_group": [],
            "min_kv_scale": 0.0,
            "pack_method": "reorder",
            "weight_format": "real_quantized",
            "weight_merge_groups": None,
        },
        "global_quant_config": {
            "bias": None,
            "input_tensors": inp,
            "output_tensors": None,
            "target_device": None,
            "weight": w,
        },
        "kv_cache_post_rope": False,
        "kv_cache_quant_config": {},
        "layer_quant_config": {},
        "layer_type_quant_config": {},
        "quant_method": "quark",
        "quant_mode": "eager_mode",
        "softmax_quant_spec": None,
        "version": "0.13",
    }
    if kv_fp8:
        cfg["export"]["kv_cache_group"] = ["*k_proj", "*v_proj"]
        for pat in ("*k_proj", "*v_proj"):
            entry = copy.deepcopy(cfg["global_quant_config"])
            entry["output_tensors"] = copy.deepcopy(_QUARK_FP8_OUT)
            cfg["layer_quant_config"][pat] = entry
            cfg["kv_cache_quant_config"][pat] = copy.deepcopy(entry)
    return cfg


def quark_mixed_precision_config(pattern: str = "*down_proj") -> Dict:
    """An MXFP4 global config whose ``pattern`` layers use FP8 weights."""
    cfg = quark_mxfp4_config()
    fp8 = {
        "dtype": "fp8_e4m3",
        "qscheme": "per_tensor",
        "is_dynamic": False,
        "symmetric": True,
        "ch_axis": None,
        "group_size": None,
        "observer_cls": "PerTensorMinMaxObserver",
        "round_method": "half_even",
        "scale_type": "float",
        "scale_format": None,
    }
    cfg["layer_quant_config"][pattern] = {
        "bias": None,
        "input_tensors": dict(fp8, is_dynamic=False),
        "output_tensors": None,
        "target_device": None,
        "weight": fp8,
    }
    return cfg


def quark_0_9_style_config() -> Dict:
    """Quark 0.9 (the public 70B model): no version / kv_cache_quant_config keys."""
    cfg = quark_mxfp4_config(kv_fp8=True)
    for key in ("version", "kv_cache_quant_config", "kv_cache_post_rope", "softmax_quant_spec"):
        cfg.pop(key, None)
    for spec in [cfg["global_quant_config"]["weight"], cfg["global_quant_config"]["input_tensors"]]:
        for key in ("zero_point_type", "is_scale_quant", "enable_buffer_reuse", "max_input_numel"):
            spec.pop(key, None)
    return cfg


MODELOPT_PRODUCER = {"name": "modelopt", "version": "0.47.0"}


def modelopt_mxfp4_nested(exclude: Iterable[str] = ("lm_head", "model.embed_tokens")) -> Dict:
    """hf_quant_config.json shape."""
    return {
        "producer": dict(MODELOPT_PRODUCER),
        "quantization": {"quant_algo": "mxfp4", "kv_cache_quant_algo": None, "exclude_modules": list(exclude)},
    }


def modelopt_mxfp4_flat(exclude: Iterable[str] = ("lm_head", "model.embed_tokens")) -> Dict:
    """config.json ``quantization_config`` shape (what get_quant_config passes)."""
    return {
        "ignore": list(exclude),
        "quant_algo": "mxfp4",
        "producer": dict(MODELOPT_PRODUCER),
        "quant_method": "modelopt",
    }


def modelopt_nvfp4_nested(exclude: Iterable[str] = ("lm_head",)) -> Dict:
    return {
        "producer": dict(MODELOPT_PRODUCER),
        "quantization": {
            "quant_algo": "NVFP4",
            "kv_cache_quant_algo": None,
            "group_size": 16,
            "exclude_modules": list(exclude),
        },
    }


def modelopt_nvfp4_flat(exclude: Iterable[str] = ("lm_head",)) -> Dict:
    return {
        "quant_method": "modelopt",
        "quant_algo": "NVFP4",
        "group_size": 16,
        "kv_cache_quant_algo": None,
        "ignore": list(exclude),
        "producer": dict(MODELOPT_PRODUCER),
    }


# --------------------------------------------------------------------------
# NVFP4 (for the petit_nvfp4 regression tests)
# --------------------------------------------------------------------------


def quantize_nvfp4(w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float [N, K] -> (packed uint8 [N, K/2], e4m3 scales [N, K/16], fp32 global).
    ModelOpt-style: global = amax / (6 * 448), block scale = amax_blk / 6 / global."""
    w = w.detach().to(torch.float32)
    n, k = w.shape
    gscale = (w.abs().max() / (6.0 * 448.0)).clamp(min=1e-12)
    blocks = w.reshape(n, k // 16, 16)
    bs = (blocks.abs().amax(-1) / 6.0 / gscale).clamp(max=448.0)
    bs8 = bs.to(torch.float8_e4m3fn)
    eff = bs8.to(torch.float32) * gscale
    eff = torch.where(eff > 0, eff, torch.ones_like(eff))
    scaled = (blocks / eff.unsqueeze(-1)).clamp(-6, 6)
    mag = _round_to_e2m1(scaled.abs())
    neg = (scaled < 0) & (mag != 0)
    codes = (mag | (neg.to(torch.uint8) << 3)).reshape(n, k)
    return pack_codes(codes), bs8.contiguous(), gscale.reshape(()).to(torch.float32)


def dequantize_nvfp4(packed: torch.Tensor, scales: torch.Tensor, gscale: torch.Tensor) -> torch.Tensor:
    vals = _TABLE[unpack_codes(packed).long()]
    return vals * scales.to(torch.float32).repeat_interleave(16, dim=1) * gscale.to(torch.float32)
