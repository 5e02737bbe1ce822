"""Fixtures of the device tests: the Triton backend module, compiled for the GPU
or decorated under Triton's interpreter.

The module is the series' petit_mxfp4_triton.py, loaded from a file under its
real name by petit_triton_module (PETIT_TRITON_MODULE, default: the v0.5.23
tree's copy), with stand-ins for its two import-time SGLang dependencies where
SGLang is not installed (see petit_triton_module's docstring for why).
"""

from __future__ import annotations

import os
import sys

import petit_triton_module as ptm
import pytest
import torch


def pytest_report_header(config) -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return f"petit_mxfp4_triton: {ptm.module_path()}; GPU: {gpu}"


def _require_module():
    """The module's path; without one, skip where there is no GPU (harmless
    on a CPU box) and fail where there is (a misconfigured device run)."""
    path = ptm.module_path()
    if path is not None and path.is_file():
        return path
    why = f"petit_mxfp4_triton.py not found: set {ptm.ENV} (got {path})"
    if torch.cuda.is_available():
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="session")
def cuda_mod():
    """The module with compiled kernels, for CUDA tensors."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return ptm.load(_require_module())


@pytest.fixture
def interp_mod(monkeypatch):
    """A fresh copy of the module whose kernels Triton's interpreter runs on
    CPU tensors (TRITON_INTERPRET is read when a kernel is decorated)."""
    pytest.importorskip("triton")
    path = _require_module()
    previous = sys.modules.get(ptm.MODULE_NAME)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    try:
        yield ptm.load(path)
    finally:
        if previous is not None:
            sys.modules[ptm.MODULE_NAME] = previous
        else:
            sys.modules.pop(ptm.MODULE_NAME, None)


@pytest.fixture
def no_tf32():
    """FP32 references must not run in TF32."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(int(os.environ.get("PETIT_TEST_SEED", "0")))
