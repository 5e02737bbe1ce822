"""Worker for the TP=2 gpt-oss MoE test (test_moe_gpt_oss.py): one of two CPU
processes (gloo).  Every rank builds the same tiny GptOssForCausalLM and the
same full checkpoint tensors; SGLang's gpt-oss loader takes this rank's slice
of the intermediate dim; the MoE block output, all-reduced over the ranks
where the layer leaves that to the caller, is compared with moe_ref.
Results go to <out>/rank<r>.json as {check: "ok" | error text}."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path


def _checks(rank: int, world: int):
    import torch
    import torch.distributed as dist

    import moe_ref
    import test_moe_gpt_oss as t

    res = {}
    for inter in (192, 160):  # 96 rows per rank; 160: 96 + 64 (uneven, like 2880 at TP=4)
        name = f"inter{inter}"
        try:
            cfg = t.tiny_hf_config(hidden=160, inter=inter)
            model, _ = t.build_gpt_oss(cfg)
            weights = t.random_moe_weights(cfg, seed=5)
            t.load_and_postprocess(model, weights)
            g = torch.Generator().manual_seed(9)
            for li, layer in enumerate(model.model.layers):
                p = f"model.layers.{li}.mlp."
                experts = {k[len(p) + len("experts.") :]: v for k, v in weights.items() if k.startswith(p + "experts.")}
                x = torch.randn(9, 160, generator=g).bfloat16()
                out = layer.mlp(x).float()
                # Some releases all-reduce inside the MoE block (0.5.16), others
                # leave it to the decoder layer (0.5.23): partial outputs differ
                # between the ranks, reduced ones do not.
                parts = [torch.empty_like(out) for _ in range(world)]
                dist.all_gather(parts, out)
                if not all(torch.equal(parts[0], q) for q in parts[1:]):
                    out = torch.stack(parts).sum(0)
                want = moe_ref.moe_forward(x, weights[p + "router.weight"], weights[p + "router.bias"], experts, cfg.num_experts_per_tok)
                t.assert_close(out, want, f"rank {rank} layer {li} inter {inter}")
            res[name] = "ok"
        except BaseException as e:  # noqa: BLE001
            res[name] = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}"
    return res


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import sgl_cpu

    sgl_cpu.run_tp_worker(rank, world, port, out_dir, _checks)
