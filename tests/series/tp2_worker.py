"""Worker for test_tp2.py: one of two CPU processes (gloo, world size 2).

Every rank builds the same full checkpoint tensors (same seeds), loads them
through the layers' own weight loaders (which take this rank's shard), runs
the forward and checks:
* column parallel (MergedColumnParallelLinear, QKVParallelLinear): the local
  output against this rank's slice, and the all-gathered outputs, rebuilt in
  logical order, against the full reference;
* row parallel (RowParallelLinear, input_is_parallel, reduce_results): the
  all-reduced output against the full reference;
* a per-partition K that breaks Petit's K%256 only at TP=2 is refused naming
  TP size 2.
Results go to <out>/rank<r>.json as {check: "ok" | error text}.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path


def _checks(rank: int, world: int):
    import torch
    import torch.distributed as dist

    import layer_cases as lc

    cfg = lc.petit_mxfp4_config()
    res = {}

    def check(name, fn):
        try:
            fn()
            res[name] = "ok"
        except BaseException as e:  # noqa: BLE001
            res[name] = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}"

    def column(kind):
        case = lc.build(kind, cfg, bias=True, seed=21)
        layer = case.layer
        n_full = sum(s.n for s in case.shards)
        assert layer.output_size_per_partition == n_full // world, (layer.output_size_per_partition, n_full)
        lc.finalize(layer)
        x = lc.rand_x(6, case.k_full, seed=3)
        out = lc.run(layer, x)
        lc.assert_matches(out, lc.reference_column(case, x, rank, world), f"{kind} rank {rank} local")
        parts = [torch.empty_like(out) for _ in range(world)]
        dist.all_gather(parts, out.contiguous())
        # rebuild [shard0 (all ranks), shard1 (all ranks), ...]
        pieces, off = [], 0
        for sh in case.shards:
            per = sh.n // world
            for r in range(world):
                pieces.append(parts[r][:, off : off + per])
            off += per
        full = torch.cat(pieces, 1)
        lc.assert_matches(full, lc.reference_full(case, x), f"{kind} gathered")

    def row():
        case = lc.build("row", cfg, bias=True, seed=22, sizes={"n": 256, "k": 512})
        layer = case.layer
        assert layer.input_size_per_partition == 512 // world
        lc.finalize(layer)
        x_full = lc.rand_x(6, 512, seed=4)
        kp = 512 // world
        out = lc.run(layer, x_full[:, rank * kp : (rank + 1) * kp].contiguous())
        lc.assert_matches(out, lc.reference_full(case, x_full), f"row rank {rank} reduced")

    def shape_error():
        import re

        try:
            lc.build("row", cfg, sizes={"n": 256, "k": 768}, prefix="model.layers.5.mlp.down_proj", load_weights=False)
        except ValueError as e:
            msg = str(e)
            assert "model.layers.5.mlp.down_proj" in msg and "384" in msg, msg
            m = re.search(r"(tensor[ _-]?parallel|tp)[ _-]?size\D{0,4}(\d+)", msg, re.I)
            assert m and m.group(2) == str(world), f"TP size {world} not named: {msg}"
            return
        raise AssertionError("K=768 at TP=2 (384 per partition) was accepted")

    check("merged", lambda: column("merged"))
    check("qkv", lambda: column("qkv"))
    check("row", row)
    check("shape_error_tp2", shape_error)
    return res


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import sgl_cpu

    sgl_cpu.run_tp_worker(rank, world, port, out_dir, _checks)
