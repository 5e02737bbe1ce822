"""Fixtures for the petit_mxfp4 series tests (run inside the harness env).

* Chooses the petit_kernel: the real one on a ROCm GPU, else the CPU reference
  in ``petit_kernel_ref`` (injected via sys.path *before* SGLang is imported,
  because unpatched ``petit_utils`` imports petit_kernel at import time).
* Fakes the platform: ``petit_utils.get_petit_gpu_arch`` -> "gfx942" (and the
  module-level ``_is_hip`` flags the petit modules read), only where a test
  asks for it through the ``rocm`` fixture.
* One gloo process group of size 1 + SGLang model-parallel groups (TP=1) +
  published server args, for the whole session.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import sgl_cpu  # noqa: E402

PETIT_MODE = sgl_cpu.select_petit_kernel()
sgl_cpu.install_vllm_stub()

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

QUANT = "sglang.srt.layers.quantization"


def pytest_report_header(config):
    import importlib

    try:
        import sglang

        where = sglang.__file__
    except Exception as e:  # pragma: no cover
        where = f"<import failed: {e}>"
    pk = importlib.import_module("petit_kernel")
    return [
        f"sglang-petit: version={sgl_cpu.VERSION or '?'} tree={sgl_cpu.TREE or '?'}",
        f"sglang imported from: {where}",
        f"petit_kernel for CPU tests: reference ({pk.__file__}); mode={PETIT_MODE}",
        f"petit_mxfp4 present: {sgl_cpu.has_petit_mxfp4()}",
        f"real petit_kernel for -m rocm tests: {getattr(sgl_cpu.REAL_PETIT, '__file__', None)}",
    ]


def pytest_configure(config):
    config.addinivalue_line("markers", "rocm: needs a ROCm GPU and the real petit_kernel")
    config.addinivalue_line("markers", "petit_mxfp4: needs the patched tree (petit_mxfp4 module)")
    config.addinivalue_line("markers", "checkpoint(name): needs build/checkpoints/<name>")
    config.addinivalue_line("markers", "slow: multi-process / model-level")


def pytest_collection_modifyitems(config, items):
    has_mx = sgl_cpu.has_petit_mxfp4()
    real = PETIT_MODE == "real"
    for item in items:
        if "petit_mxfp4" in item.keywords and not has_mx:
            item.add_marker(pytest.mark.skip(reason=f"{QUANT}.petit_mxfp4 not in this tree (unpatched?)"))
        if "rocm" in item.keywords and not real:
            reason = (
                "needs a ROCm GPU and the real petit_kernel "
                f"(rocm gpu: {sgl_cpu.rocm_gpu_available()}, real petit importable: {sgl_cpu.real_petit_importable()})"
            )
            if os.environ.get("PETIT_REQUIRE_ROCM") == "1":
                # On the AMD runner a skip would hide a broken GPU or kernel install.
                item.user_properties.append(("require_rocm_failure", reason))
            else:
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_runtest_setup(item):
    for key, reason in item.user_properties:
        if key == "require_rocm_failure":
            pytest.fail(f"PETIT_REQUIRE_ROCM=1, but this test {reason}", pytrace=False)


@pytest.fixture(scope="session")
def petit_mode():
    return PETIT_MODE


@pytest.fixture(autouse=True)
def _petit_kernel_module(request, monkeypatch):
    """Tests marked ``rocm`` get the real petit_kernel; all others the CPU
    reference (petit_utils' MXFP4 helpers import it on every call, so they find
    whichever module sys.modules holds)."""
    if "rocm" in request.keywords and sgl_cpu.REAL_PETIT is not None:
        monkeypatch.setitem(sys.modules, "petit_kernel", sgl_cpu.REAL_PETIT)
    yield


@pytest.fixture
def device(request):
    return torch.device("cuda") if "rocm" in request.keywords else torch.device("cpu")


@pytest.fixture(scope="session")
def dist_tp1():
    """gloo world of size 1 + SGLang TP=1 groups + published server args."""
    sgl_cpu.init_parallel(rank=0, world_size=1)
    yield


@pytest.fixture
def rocm(request, monkeypatch):
    """Pretend to be on a gfx942 (MI300) ROCm box for the petit code paths."""
    import importlib

    pu = importlib.import_module(f"{QUANT}.petit_utils")
    if "rocm" in request.keywords:  # real GPU: no faking
        yield pu.get_petit_gpu_arch() if hasattr(pu, "get_petit_gpu_arch") else None
        return
    if hasattr(pu, "get_petit_gpu_arch"):
        monkeypatch.setattr(pu, "get_petit_gpu_arch", lambda *a, **k: sgl_cpu.FAKE_ARCH)
    for mod in ("petit_utils", "petit", "petit_nvfp4", "petit_mxfp4"):
        name = f"{QUANT}.{mod}"
        if not sgl_cpu.module_available(name):
            continue
        m = importlib.import_module(name)
        if hasattr(m, "_is_hip"):
            monkeypatch.setattr(m, "_is_hip", True)
    yield sgl_cpu.FAKE_ARCH


@pytest.fixture
def bf16_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    yield
    torch.set_default_dtype(old)


def pytest_terminal_summary(terminalreporter):
    if sgl_cpu.STUBBED:
        terminalreporter.write_line("CPU stand-ins used: " + "; ".join(sgl_cpu.STUBBED))
