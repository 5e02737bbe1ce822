"""TP=2 across two CPU processes (torch.multiprocessing spawn, gloo)."""

from __future__ import annotations

import json
import time

import pytest

import sgl_cpu

pytestmark = [pytest.mark.petit_mxfp4, pytest.mark.slow]
WORLD = 2


@pytest.fixture(scope="module")
def tp2_results(tmp_path_factory):
    # CPU processes + gloo + the reference kernel, also on a ROCm box.
    import torch.multiprocessing as mp

    import tp2_worker

    out = tmp_path_factory.mktemp("tp2")
    t0 = time.time()
    mp.spawn(tp2_worker.worker, args=(WORLD, sgl_cpu.free_port(), str(out)), nprocs=WORLD, join=True)
    res = {r: json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)}
    print(f"\n[tp2] two ranks finished in {time.time() - t0:.1f}s")
    for r, d in res.items():
        if "setup" in d:
            pytest.fail(f"rank {r} setup failed: {d['setup']}")
    return res


@pytest.mark.parametrize("check", ["merged", "qkv", "row", "shape_error_tp2"])
def test_tp2(tp2_results, check):
    errs = {r: d.get(check, "missing") for r, d in tp2_results.items() if d.get(check) != "ok"}
    assert not errs, "\n".join(f"rank {r}: {e}" for r, e in errs.items())
