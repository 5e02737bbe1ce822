"""Load the series' petit_mxfp4_triton.py on a machine without SGLang.

The module is loaded from a file (PETIT_TRITON_MODULE, default: the newest
applied tree's copy) under its real name, sglang.srt.layers.quantization.
petit_mxfp4_triton. At import time it needs only two things from SGLang:
petit_utils (MXFP4_BLOCK_SIZE, verify_mxfp4_layer_scales) and sglang.srt.utils
(is_hip; direct_register_custom_op where the module registers its GEMM as
torch.ops.sglang.petit_mxfp4_a16_matmul). Where SGLang is not installed,
minimal stand-ins for those are registered first: installing SGLang (and its
dependency tree) on a GPU box just to run these kernels is not needed, and the
stand-ins do what the real functions do for this module. The Petit entry points that the benchmark
imports from petit_utils get stand-ins that say Petit is not available (Petit
runs only on ROCm; those stand-ins are never used by the tests).

Run a script (the GEMM benchmark) with the module loaded this way:

    PETIT_TRITON_MODULE=.../petit_mxfp4_triton.py \\
        python3 tests/gpu/petit_triton_module.py BENCH.py [ARGS...]
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import runpy
import sys
import types
from pathlib import Path
from typing import Optional

import torch

MODULE_NAME = "sglang.srt.layers.quantization.petit_mxfp4_triton"
PETIT_UTILS = "sglang.srt.layers.quantization.petit_utils"
ENV = "PETIT_TRITON_MODULE"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_PATH = (
    REPO
    / "build/sglang/v0.5.23/python/sglang/srt/layers/quantization"
    / "petit_mxfp4_triton.py"
)
NO_PETIT = "Petit is not available here (sglang stand-in, tests/gpu)."
_SGLANG_LIB = torch.library.Library("sglang", "FRAGMENT")


def module_path() -> Optional[Path]:
    """The file to load: $PETIT_TRITON_MODULE, else DEFAULT_PATH if present."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    return DEFAULT_PATH if DEFAULT_PATH.is_file() else None


def _package(name: str) -> types.ModuleType:
    mod = sys.modules.get(name)
    if mod is None:
        mod = types.ModuleType(name)
        mod.__path__ = []  # a namespace that holds only the stand-ins
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        sys.modules[name] = mod
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(_package(parent), child, mod)
    return mod


def _verify_mxfp4_layer_scales(layer: torch.nn.Module, prefix: str = "") -> None:
    """As petit_utils: refuse E8M0 scale 0xFF (NaN), naming the layer."""
    if (layer.weight_scale.data == 0xFF).any():
        name = prefix or getattr(layer, "prefix", "") or type(layer).__name__
        raise ValueError(f"Layer {name} has E8M0 scale 0xFF (NaN).")


def _register_custom_op(
    op_name: str,
    op_func,
    mutates_args: list,
    fake_impl=None,
    target_lib=None,
    **kwargs,
) -> None:
    """As sglang.srt.utils.direct_register_custom_op: torch.ops.sglang.<op>.
    A second load of the module keeps the first registration."""
    if hasattr(torch.ops.sglang, op_name):
        return
    lib = target_lib or _SGLANG_LIB
    lib.define(op_name + torch.library.infer_schema(op_func, mutates_args=mutates_args))
    lib.impl(op_name, op_func, "CompositeExplicitAutograd")
    if fake_impl is not None:
        lib._register_fake(op_name, fake_impl)


def _no_petit(*args, **kwargs):
    raise ValueError(NO_PETIT)


def install_stand_ins() -> None:
    """Register sglang.srt.utils and petit_utils stand-ins (see the docstring)
    unless SGLang itself is importable."""
    if "sglang" in sys.modules or importlib.util.find_spec("sglang") is not None:
        return
    utils = types.ModuleType("sglang.srt.utils")
    utils.is_hip = lambda: torch.version.hip is not None
    utils.direct_register_custom_op = _register_custom_op
    sys.modules[utils.__name__] = utils
    _package("sglang.srt").utils = utils
    pu = types.ModuleType(PETIT_UTILS)
    pu.MXFP4_BLOCK_SIZE = 32
    pu.verify_mxfp4_layer_scales = _verify_mxfp4_layer_scales
    pu.verify_petit_mxfp4_supported = _no_petit
    pu.prepare_mxfp4_layer_for_petit = _no_petit
    pu.apply_petit_mxfp4_linear = _no_petit
    sys.modules[PETIT_UTILS] = pu
    _package("sglang.srt.layers.quantization").petit_utils = pu


def load(path: Optional[Path] = None) -> types.ModuleType:
    """Execute the module file as a fresh module under its real name.

    Triton decides at decoration time whether a kernel is compiled or
    interpreted (TRITON_INTERPRET), so each call gives a new module object.
    """
    path = path or module_path()
    if path is None or not Path(path).is_file():
        raise FileNotFoundError(
            f"petit_mxfp4_triton.py not found: set {ENV} (tried {path or DEFAULT_PATH})"
        )
    install_stand_ins()
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    mod = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(MODULE_NAME)
    sys.modules[MODULE_NAME] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        if previous is None:
            sys.modules.pop(MODULE_NAME, None)
        else:
            sys.modules[MODULE_NAME] = previous
        raise
    _package("sglang.srt.layers.quantization").petit_mxfp4_triton = mod
    return mod


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    load()
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
