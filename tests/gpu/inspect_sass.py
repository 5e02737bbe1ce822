"""Compile the Triton MXFP4 kernel for Hopper (sm_90a) without a GPU and count
what its main loop issues: the quickest check of a kernel change before
spending device time on it (see PERF_NOTES.md).

    PETIT_TRITON_MODULE=.../petit_mxfp4_triton.py \\
        python3 tests/gpu/inspect_sass.py 16,32,256,2,3,4 [--dump out.sass]

The argument is BLOCK_M,BLOCK_N,BLOCK_K,num_warps,num_stages,SPLIT_K of the
fused kernel. Needs torch and triton (CPU builds are enough): Triton's wheel
carries ptxas and nvdisasm. offline_compile.py specializes the kernel as a
launch on aligned pointers, sizes and strides is.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
import petit_triton_module  # noqa: E402
from offline_compile import compile_fused  # noqa: E402

BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


def compile_kernel(mod, bm: int, bn: int, bk: int, warps: int, stages: int, split: int):
    config = dict(
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_N=1, SPLIT_K=split,
        HAS_BIAS=False, num_warps=warps,
    )  # fmt: skip
    return compile_fused(mod._mxfp4_a16_kernel, ("cuda", 90, 32), config, stages)


def sass_of(kernel) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        out = subprocess.run(
            [str(BIN / "nvdisasm"), "-c", f.name], capture_output=True, text=True
        )
    return out.stdout


def loops(sass: str) -> list[list[str]]:
    """Bodies (opcode lists) of the loops: from a label to a branch back to it."""
    labels: dict[str, int] = {}
    ops: list[str] = []
    bodies = []
    for line in sass.splitlines():
        label = re.match(r"^\s*(\.L_x_\d+):", line)
        if label:
            labels[label.group(1)] = len(ops)
            continue
        ins = re.search(r"/\*[0-9a-f]{4}\*/\s+(.*?);", line)
        if not ins:
            continue
        text = re.sub(r"^@!?U?P[T\d]+\s+", "", ins.group(1))
        ops.append(text.split()[0])
        back = re.search(r"`\((\.L_x_\d+)\)", text)
        if text.startswith("BRA") and back and back.group(1) in labels:
            body = ops[labels[back.group(1)] :]
            if len(body) > 8:  # not the one-instruction trap loop
                bodies.append(body)
    return bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "config", help="BLOCK_M,BLOCK_N,BLOCK_K,num_warps,num_stages,SPLIT_K"
    )
    parser.add_argument("--dump", help="write the whole SASS here")
    args = parser.parse_args()
    bm, bn, bk, warps, stages, split = map(int, args.config.split(","))
    mod = petit_triton_module.load()
    kernel = compile_kernel(mod, bm, bn, bk, warps, stages, split)
    sass = sass_of(kernel)
    if args.dump:
        Path(args.dump).write_text(sass)
    weights = bn * bk // (32 * warps)  # weights one thread decodes per K step
    print(f"config {args.config}: shared memory {kernel.metadata.shared} B")
    for body in loops(sass):
        count = collections.Counter(body)
        print(
            f"loop of {len(body)} instructions, {len(body) / weights:.2f} per weight decoded"
        )
        print("  " + ", ".join(f"{op} {n}" for op, n in count.most_common(14)))


if __name__ == "__main__":
    main()
