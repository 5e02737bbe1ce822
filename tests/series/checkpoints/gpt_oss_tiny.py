"""Writes a tiny gpt-oss MXFP4 checkpoint, deterministic from a seed (CPU, torch + safetensors only).

Layout and names follow the published openai/gpt-oss-20b / -120b checkpoints
(one ``model.safetensors``; tensor inventory: 3 + 19 per layer, as the
official header has 459 = 3 + 24 * 19 tensors):

* ``model.embed_tokens.weight`` [V, H], ``model.norm.weight`` [H],
  ``lm_head.weight`` [V, H]  (bf16);
* per layer ``model.layers.N.``:
  ``input_layernorm.weight``, ``post_attention_layernorm.weight`` [H];
  ``self_attn.{q,k,v,o}_proj.{weight,bias}`` (q [nh*hd, H], k/v [nkv*hd, H],
  o [H, nh*hd], all with bias: ``attention_bias: true``), ``self_attn.sinks``
  [nh]  (bf16);
  ``mlp.router.weight`` [E, H], ``mlp.router.bias`` [E]  (bf16);
  ``mlp.experts.gate_up_proj_blocks`` uint8 [E, 2I, H/32, 16],
  ``mlp.experts.gate_up_proj_scales`` uint8 [E, 2I, H/32],
  ``mlp.experts.gate_up_proj_bias`` bf16 [E, 2I]  (gate = even rows, up = odd rows),
  ``mlp.experts.down_proj_blocks`` uint8 [E, H, I/32, 16],
  ``mlp.experts.down_proj_scales`` uint8 [E, H, I/32],
  ``mlp.experts.down_proj_bias`` bf16 [E, H].
  Blocks: 32 E2M1 values per 16 bytes, element 2i in the low nibble of byte i;
  scales: one E8M0 byte per block of 32 along the input dim.

``config.json`` has the published keys and values (``model_type: gpt_oss``,
yarn ``rope_scaling``, ``sliding_window: 128``, alternating ``layer_types``,
``swiglu_limit: 7.0``, no ``swiglu_alpha`` (1.702 is the default in
transformers, ``hidden_act_alpha`` in SGLang) and ``quantization_config``
exactly ``{"modules_to_not_convert": ["model.layers.*.self_attn",
"model.layers.*.mlp.router", "model.embed_tokens", "lm_head"],
"quant_method": "mxfp4"}``), with small sizes.  ``eos_token_id`` /
``pad_token_id`` are moved inside the small vocabulary.  No tokenizer files:
use token ids (SGLang ``skip_tokenizer_init``).

Sizes and Petit: Petit's MoE path needs dim and inter multiples of 256 after
padding (wrapper: % 128; repack helpers: rows % 256, scale columns % 8).  The
defaults ``hidden_size=192``, ``intermediate_size=320`` both need padding
(to 256 and 512), like gpt-oss's 2880 -> 3072, and to different amounts, so
a loader that mixes the two up fails.  Pass ``hidden_size=256,
intermediate_size=256`` for a no-padding variant.

Values: random E2M1 codes (all 16, including -0) with E8M0 scales drawn from
``scale_range``; bf16 tensors Gaussian with fan-in scaling.  Override
``swiglu_limit`` / ``swiglu_alpha`` to get a checkpoint Petit must refuse
(its kernel has 7.0 / 1.702 compiled in); ``swiglu_alpha`` is written as
both ``swiglu_alpha`` (transformers) and ``hidden_act_alpha`` (SGLang).

API::

    write_gpt_oss_tiny(path, seed=0, **sizes) -> Path
    gpt_oss_tiny_config(**sizes) -> dict          # the config.json content
    load_expert_tensors(path, layer) -> dict      # the six expert tensors by suffix
    load_router(path, layer) -> (weight, bias)    # bf16 [E, H], [E]
    load_hf_dequantized(path) -> transformers GptOssForCausalLM with BF16 experts
                                  (transformers' own MXFP4 dequantization, CPU):
                                  a whole-model reference for logits

CLI: ``python tests/series/checkpoints/gpt_oss_tiny.py --out DIR [--seed N]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import zlib
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

GPT_OSS_QUANTIZATION_CONFIG = {
    "modules_to_not_convert": [
        "model.layers.*.self_attn",
        "model.layers.*.mlp.router",
        "model.embed_tokens",
        "lm_head",
    ],
    "quant_method": "mxfp4",
}

DEFAULTS = dict(
    hidden_size=192,
    intermediate_size=320,
    num_hidden_layers=2,
    num_local_experts=4,
    num_experts_per_tok=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    vocab_size=512,
    sliding_window=128,
    swiglu_limit=7.0,
    swiglu_alpha=None,
    scale_range=(119, 124),
)

EXPERT_SUFFIXES = (
    "gate_up_proj_blocks",
    "gate_up_proj_scales",
    "gate_up_proj_bias",
    "down_proj_blocks",
    "down_proj_scales",
    "down_proj_bias",
)


def gpt_oss_tiny_config(**overrides) -> Dict:
    """config.json content: the published gpt-oss keys with tiny sizes."""
    s = dict(DEFAULTS, **overrides)
    n = s["num_hidden_layers"]
    cfg = {
        "architectures": ["GptOssForCausalLM"],
        "attention_bias": True,
        "attention_dropout": 0.0,
        "eos_token_id": 2,
        "experts_per_token": s["num_experts_per_tok"],
        "head_dim": s["head_dim"],
        "hidden_act": "silu",
        "hidden_size": s["hidden_size"],
        "initial_context_length": 4096,
        "initializer_range": 0.02,
        "intermediate_size": s["intermediate_size"],
        "layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)],
        "max_position_embeddings": 131072,
        "model_type": "gpt_oss",
        "num_attention_heads": s["num_attention_heads"],
        "num_experts_per_tok": s["num_experts_per_tok"],
        "num_hidden_layers": n,
        "num_key_value_heads": s["num_key_value_heads"],
        "num_local_experts": s["num_local_experts"],
        "output_router_logits": False,
        "pad_token_id": 0,
        "quantization_config": copy.deepcopy(GPT_OSS_QUANTIZATION_CONFIG),
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "factor": 32.0,
            "original_max_position_embeddings": 4096,
            "rope_type": "yarn",
            "truncate": False,
        },
        "rope_theta": 150000,
        "router_aux_loss_coef": 0.9,
        "sliding_window": s["sliding_window"],
        "swiglu_limit": s["swiglu_limit"],
        "tie_word_embeddings": False,
        "transformers_version": "4.55.0.dev0",
        "use_cache": True,
        "vocab_size": s["vocab_size"],
    }
    if s["swiglu_alpha"] is not None:
        cfg["swiglu_alpha"] = s["swiglu_alpha"]
        cfg["hidden_act_alpha"] = s["swiglu_alpha"]
    return cfg


class _Rng:
    """Per-tensor generators derived from (seed, name): adding or reordering
    tensors does not change the others."""

    def __init__(self, seed: int):
        self.seed = seed

    def gen(self, name: str) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))

    def normal(self, name: str, shape, std: float, mean: float = 0.0) -> torch.Tensor:
        t = torch.randn(*shape, generator=self.gen(name)) * std + mean
        return t.to(torch.bfloat16)

    def mxfp4(self, name: str, experts: int, rows: int, k: int, scale_range: Tuple[int, int]):
        g = self.gen(name)
        codes = torch.randint(0, 16, (experts, rows, k), generator=g, dtype=torch.int64).to(torch.uint8)
        packed = (codes[..., 0::2] | (codes[..., 1::2] << 4)).contiguous()
        blocks = packed.reshape(experts, rows, k // 32, 16)
        scales = torch.randint(scale_range[0], scale_range[1], (experts, rows, k // 32), generator=g,
                               dtype=torch.int64).to(torch.uint8)
        return blocks, scales


def gpt_oss_tiny_tensors(seed: int = 0, **overrides) -> Dict[str, torch.Tensor]:
    s = dict(DEFAULTS, **overrides)
    h, i_, e = s["hidden_size"], s["intermediate_size"], s["num_local_experts"]
    nh, nkv, hd, v = s["num_attention_heads"], s["num_key_value_heads"], s["head_dim"], s["vocab_size"]
    if h % 32 or i_ % 32:
        raise ValueError(f"hidden_size {h} and intermediate_size {i_} must be multiples of 32 (MXFP4 blocks)")
    r = _Rng(seed)
    sd: Dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": r.normal("model.embed_tokens.weight", (v, h), 1.0),
        "model.norm.weight": r.normal("model.norm.weight", (h,), 0.1, 1.0),
        "lm_head.weight": r.normal("lm_head.weight", (v, h), h**-0.5),
    }
    for n in range(s["num_hidden_layers"]):
        p = f"model.layers.{n}."
        sd[p + "input_layernorm.weight"] = r.normal(p + "input_layernorm.weight", (h,), 0.1, 1.0)
        sd[p + "post_attention_layernorm.weight"] = r.normal(p + "post_attention_layernorm.weight", (h,), 0.1, 1.0)
        for proj, (out_f, in_f) in {
            "q_proj": (nh * hd, h),
            "k_proj": (nkv * hd, h),
            "v_proj": (nkv * hd, h),
            "o_proj": (h, nh * hd),
        }.items():
            name = f"{p}self_attn.{proj}"
            sd[name + ".weight"] = r.normal(name + ".weight", (out_f, in_f), in_f**-0.5)
            sd[name + ".bias"] = r.normal(name + ".bias", (out_f,), 0.1)
        sd[p + "self_attn.sinks"] = r.normal(p + "self_attn.sinks", (nh,), 0.5)
        sd[p + "mlp.router.weight"] = r.normal(p + "mlp.router.weight", (e, h), 2.0 * h**-0.5)
        sd[p + "mlp.router.bias"] = r.normal(p + "mlp.router.bias", (e,), 0.1)
        x = p + "mlp.experts."
        sd[x + "gate_up_proj_blocks"], sd[x + "gate_up_proj_scales"] = r.mxfp4(
            x + "gate_up_proj", e, 2 * i_, h, s["scale_range"])
        sd[x + "gate_up_proj_bias"] = r.normal(x + "gate_up_proj_bias", (e, 2 * i_), 0.2)
        sd[x + "down_proj_blocks"], sd[x + "down_proj_scales"] = r.mxfp4(
            x + "down_proj", e, h, i_, s["scale_range"])
        sd[x + "down_proj_bias"] = r.normal(x + "down_proj_bias", (e, h), 0.2)
    return sd


def write_gpt_oss_tiny(path, seed: int = 0, **overrides) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into ``path`` (created);
    returns the path.  Same seed and sizes -> the same bytes."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = gpt_oss_tiny_config(**overrides)
    sd = gpt_oss_tiny_tensors(seed, **overrides)
    save_file(dict(sorted(sd.items())), str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return path


def load_expert_tensors(path, layer: int) -> Dict[str, torch.Tensor]:
    """The six expert tensors of ``layer``, keyed by suffix (``EXPERT_SUFFIXES``)."""
    from safetensors import safe_open

    prefix = f"model.layers.{layer}.mlp.experts."
    with safe_open(str(Path(path) / "model.safetensors"), framework="pt") as f:
        return {s: f.get_tensor(prefix + s) for s in EXPERT_SUFFIXES}


def load_router(path, layer: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``mlp.router.weight`` [E, H] and ``mlp.router.bias`` [E] of ``layer``."""
    from safetensors import safe_open

    prefix = f"model.layers.{layer}.mlp.router."
    with safe_open(str(Path(path) / "model.safetensors"), framework="pt") as f:
        return f.get_tensor(prefix + "weight"), f.get_tensor(prefix + "bias")


def load_hf_dequantized(path, dtype: torch.dtype = torch.bfloat16, via: str = "auto"):
    """transformers' GptOssForCausalLM from ``path`` with the experts
    dequantized by transformers itself; runs on CPU (eager attention with
    sinks).  The returned model has ``petit_loaded_via``:

    * ``"from_pretrained"``: ``from_pretrained(..., Mxfp4Config(dequantize=True))``;
    * ``"manual"`` (``via="manual"``, or ``"auto"`` when that fails, e.g.
      transformers 4.x without ``accelerate``): the model built from the
      config and loaded with ``integrations.mxfp4.convert_moe_packed_tensors``
      for the experts (still transformers' own dequantization and modules);
      ``petit_from_pretrained_error`` says why from_pretrained was not used.
    """
    import transformers

    err = None
    if via in ("auto", "from_pretrained"):
        from transformers import AutoModelForCausalLM, Mxfp4Config

        # transformers >= 4.56 takes ``dtype``; older releases ``torch_dtype``
        major_minor = tuple(int(v) for v in transformers.__version__.split(".")[:2])
        key = "dtype" if major_minor >= (4, 56) else "torch_dtype"
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(path), quantization_config=Mxfp4Config(dequantize=True), **{key: dtype}
            )
            model.petit_loaded_via = "from_pretrained"
            return model.eval()
        except Exception as e:  # noqa: BLE001 - reported through the attribute
            if via == "from_pretrained":
                raise
            err = f"{type(e).__name__}: {e}"

    from safetensors.torch import load_file
    from transformers import AutoConfig
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssForCausalLM

    config = AutoConfig.from_pretrained(str(path))
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = GptOssForCausalLM(config).to(dtype)
    sd = load_file(str(Path(path) / "model.safetensors"))
    out = {}
    for name, t in sd.items():
        if name.endswith("_blocks"):
            base = name[: -len("_blocks")]
            out[base] = convert_moe_packed_tensors(t, sd[base + "_scales"], dtype=dtype)
        elif not name.endswith("_scales"):
            out[name] = t.to(dtype)
    model.load_state_dict(out, strict=True)
    model.petit_loaded_via = "manual"
    model.petit_from_pretrained_error = err
    return model.eval()


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden-size", type=int, default=DEFAULTS["hidden_size"])
    ap.add_argument("--intermediate-size", type=int, default=DEFAULTS["intermediate_size"])
    a = ap.parse_args(argv)
    p = write_gpt_oss_tiny(a.out, a.seed, hidden_size=a.hidden_size, intermediate_size=a.intermediate_size)
    print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
