"""Compile the Triton MXFP4 backend's fused kernel for a GPU that is not here.

Triton's wheel carries the NVIDIA (ptxas) and AMD (LLVM, lld) back ends, so a
CPU-only machine can compile the kernel for sm_90 or gfx942 and read what the
compiled code needs (shared memory, registers) or does (SASS, AMDGCN). Used by
``inspect_sass.py`` and by tests/series/test_triton_backend.py.
"""

from __future__ import annotations

from typing import Tuple

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

POINTER_TYPES = {
    "a": "*bf16", "w": "*u8", "s": "*u8", "bias": "*bf16", "c": "*bf16",
    "ws": "*fp32", "cnt": "*i32",
}  # fmt: skip
# Integer arguments a real launch does not see as multiples of 16.
UNALIGNED = {"M", "K_STEPS"}


def compile_fused(kernel, target: Tuple, config: dict, stages: int):
    """``kernel`` (the module's ``_mxfp4_a16_kernel``) compiled for ``target``
    (e.g. ``("cuda", 90, 32)``, ``("hip", "gfx942", 64)``) with the tile
    ``config`` and ``stages`` pipeline stages, specialized as a launch with
    16-aligned pointers, sizes and strides is (without that the loads are not
    pipelined and what the compiled kernel needs means nothing)."""
    constants = dict(
        config,
        stride_ak=1,
        HAS_BIAS=config.get("HAS_BIAS", True),
        DOT_FP32=False,
        PTX_DECODE=target[0] == "cuda",
    )
    signature, aligned = {}, []
    for i, name in enumerate(kernel.arg_names):
        if name in constants:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = POINTER_TYPES[name[: -len("_ptr")]]
            aligned.append(i)
        else:
            signature[name] = "i32"
            if name not in UNALIGNED:
                aligned.append(i)
    source = ASTSource(
        fn=kernel,
        signature=signature,
        constexprs={name: constants[name] for name in signature if name in constants},
        attrs={(i,): [["tt.divisibility", 16]] for i in aligned},
    )
    return triton.compile(
        source,
        target=GPUTarget(*target),
        options=dict(num_warps=config["num_warps"], num_stages=stages),
    )
