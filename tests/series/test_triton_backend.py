"""The Triton backend of petit_mxfp4 (SGLANG_PETIT_MXFP4_BACKEND), on CPU.

The kernel runs in Triton's interpreter (TRITON_INTERPRET=1, set only for the
tests that need it; Triton reads it when a kernel is decorated, so the kernel
module is re-imported around them). Triton 3.8's interpreter has two known
gaps the backend works around or tolerates: ``tl.dot`` multiplies BF16
operands as their raw uint16 bits (the kernel feeds it FP32 copies when
interpreted: same exact products), and FP32 -> BF16 casts truncate instead of
rounding to nearest (an error of up to 2^-8 relative, inside the suite's
rtol = 1e-2 tolerance; see layer_cases).

The GEMM is the custom op ``torch.ops.sglang.petit_mxfp4_a16_matmul``, which
SGLang's direct_register_custom_op registers for CUDA tensors only. ``interp``
gives it a CPU kernel for the test, the freshly imported module's own op
function, so the layers' CPU forward goes through the op as on a GPU.

Reference: float32 ``x @ W.T (+ bias)`` with W decoded by the independent
decoder in mxfp4_ref; tolerance from layer_cases.assert_matches.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path

import pytest
import torch

import layer_cases as lc
import mxfp4_ref as mx

QUANT = "sglang.srt.layers.quantization"
TRITON_MOD = f"{QUANT}.petit_mxfp4_triton"
ENV = "SGLANG_PETIT_MXFP4_BACKEND"
OP = "petit_mxfp4_a16_matmul"

pytestmark = pytest.mark.petit_mxfp4


def _pu():
    return importlib.import_module(f"{QUANT}.petit_utils")


def _mx():
    """petit_mxfp4, which selects the backend."""
    return importlib.import_module(f"{QUANT}.petit_mxfp4")


def _fresh_triton_module():
    sys.modules.pop(TRITON_MOD, None)
    return importlib.import_module(TRITON_MOD)


@pytest.fixture
def interp(monkeypatch):
    """The Triton kernel module, decorated under TRITON_INTERPRET=1."""
    pytest.importorskip("triton")
    if not sgl_has_triton_backend():
        pytest.skip(f"{TRITON_MOD} not in this tree")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    mod = _fresh_triton_module()
    cpu_kernel = torch.library.Library("sglang", "IMPL")
    cpu_kernel.impl(OP, mod._mxfp4_a16_matmul_op, "CPU")
    yield mod
    cpu_kernel._destroy()
    monkeypatch.delenv("TRITON_INTERPRET")
    sys.modules.pop(TRITON_MOD, None)


@pytest.fixture
def triton_backend(interp, monkeypatch):
    monkeypatch.setenv(ENV, "triton")
    yield interp


def sgl_has_triton_backend() -> bool:
    return importlib.util.find_spec(TRITON_MOD) is not None


@pytest.fixture
def log_lines():
    """Messages of the petit_mxfp4 logger (SGLang may not propagate to root)."""
    mx_mod = _mx()
    mx_mod._log_petit_mxfp4_backend.cache_clear()
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler = Collect(level=logging.INFO)
    old_level = mx_mod.logger.level
    mx_mod.logger.addHandler(handler)
    mx_mod.logger.setLevel(logging.INFO)
    yield lines
    mx_mod.logger.removeHandler(handler)
    mx_mod.logger.setLevel(old_level)
    mx_mod._log_petit_mxfp4_backend.cache_clear()


# ------------------------------------------------------------------ kernel


def _gemm(interp, x, packed, scales, bias=None, config=None):
    """The kernel on checkpoint-layout bytes, put in its layout first."""
    weight = interp.interleave_mxfp4_weight(packed)
    return interp.mxfp4_a16_matmul(x, weight, scales, bias, config=config)


def test_interleaved_layout(interp):
    """Each byte pair holds elements 4q, 4q + 1 in its low nibbles and
    4q + 2, 4q + 3 in its high ones; the input is left untouched."""
    packed, _ = mx.random_mxfp4(6, 64, seed=1)
    before = packed.clone()
    inter = interp.interleave_mxfp4_weight(packed)
    assert torch.equal(packed, before)
    assert inter.shape == packed.shape and inter.dtype == torch.uint8
    codes = torch.stack([packed & 0xF, packed >> 4], dim=-1).flatten(1)  # K order
    for q in range(packed.shape[1] // 2):
        for r in range(2):
            byte = inter[:, 2 * q + r]
            assert torch.equal(byte & 0xF, codes[:, 4 * q + r])
            assert torch.equal(byte >> 4, codes[:, 4 * q + 2 + r])
    with pytest.raises(ValueError, match="uint8"):
        interp.interleave_mxfp4_weight(packed.to(torch.int16))


def test_checkpoint_layout_is_not_the_kernel_layout(interp):
    """The kernel reads the interleaved layout: fed raw checkpoint bytes, it
    computes with the wrong weights (so layers must be prepared)."""
    packed, scales = mx.random_mxfp4(32, 256, seed=2)
    x = lc.rand_x(2, 256, seed=2)
    ref = x.float() @ mx.dequantize_mxfp4(packed, scales).t()
    raw = interp.mxfp4_a16_matmul(x, packed, scales).float()
    assert ((raw - ref).norm() / ref.norm()) > 0.5
    lc.assert_matches(_gemm(interp, x, packed, scales), ref, "interleaved")


@pytest.mark.parametrize("m", [1, 3, 17])
@pytest.mark.parametrize("n,k", [(32, 256), (64, 512)])
@pytest.mark.parametrize("bias", [False, True])
def test_kernel_matches_reference(interp, m, n, k, bias):
    packed, scales = mx.random_mxfp4(n, k, seed=m + n + k, scale_range=(100, 140))
    assert mx.count_negative_zeros(packed) > 0
    x = lc.rand_x(m, k, seed=m)
    b = (torch.randn(n) * 0.1).to(torch.bfloat16) if bias else None
    out = _gemm(interp, x, packed, scales, b)
    ref = x.float() @ mx.dequantize_mxfp4(packed, scales).t()
    if bias:
        ref = ref + b.float()
    lc.assert_matches(out, ref, f"kernel m={m} n={n} k={k} bias={bias}")


def test_kernel_negative_zero_is_zero(interp):
    packed, scales = mx.random_mxfp4(64, 256, seed=7, allow_negative_zero=False)
    x = lc.rand_x(3, 256)
    pos = _gemm(interp, x, packed, scales)
    negz = mx.with_negative_zeros(packed)
    assert mx.count_negative_zeros(negz) > 100
    assert torch.equal(_gemm(interp, x, negz, scales), pos)


@pytest.mark.parametrize(
    "config",
    [
        dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=32, GROUP_N=2),
        dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=64, GROUP_N=3),
        dict(BLOCK_M=32, BLOCK_N=64, BLOCK_K=512, GROUP_N=1),
    ],
)
def test_kernel_tiles_and_masks(interp, config):
    """Several M and N tiles, partial tiles on both, every BLOCK_K."""
    n, k, m = 80, 512, 40
    packed, scales = mx.random_mxfp4(n, k, seed=11)
    x = lc.rand_x(m, k, seed=5)
    out = _gemm(interp, x, packed, scales, config=config)
    ref = x.float() @ mx.dequantize_mxfp4(packed, scales).t()
    lc.assert_matches(out, ref, str(config))


def _counters_left(interp) -> int:
    """Nonzero split-K arrival counters over every stream's buffer."""
    assert interp._COUNTERS, "split-K ran without arrival counters"
    return sum(int(c.count_nonzero()) for c in interp._COUNTERS.values())


@pytest.mark.parametrize("split", [2, 16])
def test_kernel_split_k(interp, split):
    """Split-K partial sums meet in the workspace; the last program of a tile
    resets its arrival counter, so a second call gives the same result."""
    n, k, m = 80, 64 * split, 5  # two BLOCK_K steps per split
    packed, scales = mx.random_mxfp4(n, k, seed=split)
    x = lc.rand_x(m, k, seed=split)
    b = (torch.randn(n) * 0.1).to(torch.bfloat16)
    config = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, SPLIT_K=split)
    out = _gemm(interp, x, packed, scales, b, config=config)
    ref = x.float() @ mx.dequantize_mxfp4(packed, scales).t() + b.float()
    lc.assert_matches(out, ref, f"split {split}")
    assert _counters_left(interp) == 0
    again = _gemm(interp, x, packed, scales, b, config=config)
    assert torch.equal(again, out)


def test_kernel_split_k_more_splits_than_steps(interp):
    """SPLIT_K above the number of K steps: the programs past K add zeros and
    still check in, so every tile is summed and written once."""
    n, k, m = 48, 96, 3  # three BLOCK_K steps over eight splits
    packed, scales = mx.random_mxfp4(n, k, seed=8)
    x = lc.rand_x(m, k, seed=8)
    config = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, SPLIT_K=8)
    out = _gemm(interp, x, packed, scales, config=config)
    ref = x.float() @ mx.dequantize_mxfp4(packed, scales).t()
    lc.assert_matches(out, ref, "8 splits, 3 steps")
    assert _counters_left(interp) == 0


# Per-partition (N, K) of Llama-3.1-8B and Llama-3.3-70B linear layers, TP 1-8.
LLAMA_SHAPES = sorted(
    {
        (n // tp if split_n else n, k if split_n else k // tp)
        for hidden, inter, heads in ((4096, 14336, 32), (8192, 28672, 64))
        for tp in (1, 2, 4, 8)
        for n, k, split_n in (
            ((heads + 16) * 128, hidden, True),  # qkv, 8 KV heads
            (hidden, heads * 128, False),  # o_proj
            (2 * inter, hidden, True),  # gate_up
            (hidden, inter, False),  # down
        )
    }
)


@pytest.mark.parametrize("m", [1, 4, 16, 64])
def test_split_k_covers_k_in_whole_steps(interp, m):
    """Split-K configs for M <= 64 on every Llama shape: K divides into whole
    BLOCK_K steps, each program gets at least two of them, and SPLIT_K is the
    fewest programs with that many steps (none left empty)."""
    for n, k in LLAMA_SHAPES:
        cfg = interp._pick_config(m, n, k, 132)
        assert k % cfg["BLOCK_K"] == 0, (n, k, cfg)
        steps, split = k // cfg["BLOCK_K"], cfg["SPLIT_K"]
        per_split = -(-steps // split)
        assert split == -(-steps // per_split), (n, k, cfg)
        assert split == 1 or per_split >= 2, (n, k, cfg)


@pytest.mark.parametrize("bias", [False, True])
def test_dequant_path_matches_reference(interp, bias):
    """Decode 32 rows at a time to BF16, torch.mm each chunk into its output
    columns (three chunks, the last one partial)."""
    n, k, m = 80, 256, 6
    packed, scales = mx.random_mxfp4(n, k, seed=3, scale_range=(100, 140))
    x = lc.rand_x(m, k, seed=4)
    b = (torch.randn(n) * 0.1).to(torch.bfloat16) if bias else None
    out = _gemm(interp, x, packed, scales, b, config=dict(DEQUANT_ROWS=32))
    ref = x.float() @ mx.dequantize_mxfp4(packed, scales).t()
    if bias:
        ref = ref + b.float()
    lc.assert_matches(out, ref, f"dequant bias={bias}")


@pytest.mark.parametrize("config", [None, dict(DEQUANT_ROWS=32)])
def test_decode_is_exact(interp, config):
    """Every byte value under scales 2^-27 .. 2^33: multiplying by the
    identity gives back exactly the decoded weights (both paths)."""
    n, k = 64, 256
    codes = torch.arange(n * k // 2) * 7 % 256  # every byte value, shuffled
    packed = codes.to(torch.uint8).reshape(n, k // 2)
    scales = torch.randint(
        100, 161, (n, k // 32), generator=torch.Generator().manual_seed(0)
    )
    scales = scales.to(torch.uint8)
    eye = torch.eye(k, dtype=torch.bfloat16)
    out = _gemm(interp, eye, packed, scales, config=config)
    expected = mx.dequantize_mxfp4(packed, scales).t()
    assert torch.equal(out.float(), expected)


def test_path_choice_by_shape(interp):
    """Decode + torch.mm from DEQUANT_MIN_M rows, and from DEQUANT_NARROW_MIN_M
    rows on narrow layers (N <= DEQUANT_NARROW_N, K >= 2048); the fused kernel
    below."""
    pick = interp._pick_config
    big, narrow = interp.DEQUANT_MIN_M, interp.DEQUANT_NARROW_MIN_M
    narrow_n = interp.DEQUANT_NARROW_N
    assert "DEQUANT_ROWS" in pick(big, 57344, 8192, 132)
    assert "DEQUANT_ROWS" not in pick(big - 1, 57344, 8192, 132)
    assert "DEQUANT_ROWS" in pick(narrow, 768, 4096, 132)
    assert "DEQUANT_ROWS" in pick(narrow, narrow_n, 4096, 132)
    assert "DEQUANT_ROWS" not in pick(narrow - 1, 768, 4096, 132)
    assert "DEQUANT_ROWS" not in pick(narrow, narrow_n + 128, 4096, 132)
    assert "DEQUANT_ROWS" not in pick(narrow, 4096, 1024, 132)
    # Chunks: a multiple of 128 rows, at least DEQUANT_CHUNK_MIN elements (or
    # all rows), at most DEQUANT_CHUNK_MAX, growing with M up to half the output.
    for m, n, k in ((big, 57344, 8192), (4096, 57344, 8192), (big, 8192, 1024)):
        rows = pick(m, n, k, 132)["DEQUANT_ROWS"]
        assert rows % 128 == 0 and rows * k <= interp.DEQUANT_CHUNK_MAX, (m, n, k)
        assert rows == n or rows * k >= interp.DEQUANT_CHUNK_MIN - 128 * k
    small = pick(big, 57344, 8192, 132)["DEQUANT_ROWS"]
    assert pick(4096, 57344, 8192, 132)["DEQUANT_ROWS"] > small
    assert pick(big, 768, 4096, 132)["DEQUANT_ROWS"] == 768


def test_large_m_uses_decode_and_torch_mm(interp, monkeypatch):
    """M >= DEQUANT_MIN_M decodes the weight in chunks of rows and runs
    torch.mm on each; nothing is kept between calls."""
    n, k = 320, 128
    monkeypatch.setattr(interp, "DEQUANT_CHUNK_MIN", 128 * k)
    monkeypatch.setattr(interp, "DEQUANT_CHUNK_MAX", 128 * k)
    interp._cached_config.cache_clear()
    m = interp.DEQUANT_MIN_M
    assert interp._pick_config(m, n, k, 132) == {"DEQUANT_ROWS": 128}

    packed, scales = mx.random_mxfp4(n, k, seed=9)
    x = lc.rand_x(m, k, seed=9)
    counters = dict(interp._COUNTERS)
    out = _gemm(interp, x, packed, scales)
    ref = x.float() @ mx.dequantize_mxfp4(packed, scales).t()
    lc.assert_matches(out, ref, f"M={m}")
    assert interp._COUNTERS == counters
    interp._cached_config.cache_clear()


def test_kernel_empty_and_errors(interp):
    packed, scales = mx.random_mxfp4(32, 256)
    out = _gemm(interp, torch.empty(0, 256, dtype=torch.bfloat16), packed, scales)
    assert out.shape == (0, 32) and out.dtype == torch.bfloat16
    with pytest.raises(RuntimeError, match="BF16"):
        _gemm(interp, torch.zeros(2, 256, dtype=torch.float16), packed, scales)
    with pytest.raises(RuntimeError):
        _gemm(interp, torch.zeros(2, 512, dtype=torch.bfloat16), packed, scales)


# ------------------------------------------------------------------ layers


@pytest.mark.parametrize("kind", ["replicated", "qkv", "merged", "row"])
@pytest.mark.parametrize("bias", [False, True])
def test_layer_matches_reference(dist_tp1, triton_backend, kind, bias):
    cfg = lc.petit_mxfp4_config()
    assert cfg.backend == "triton"
    case = lc.build(kind, cfg, bias=bias)
    lc.finalize(case.layer)
    # Prepared in place: the checkpoint layout is the kernel's layout.
    n = sum(sh.n for sh in case.shards)
    assert case.layer.weight.dtype == torch.uint8
    assert tuple(case.layer.weight.shape) == (n, case.k_full // 2)
    assert tuple(case.layer.weight_scale.shape) == (n, case.k_full // 32)
    for m in (1, 3, 17):
        x = lc.rand_x(m, case.k_full, seed=m)
        lc.assert_matches(
            lc.run(case.layer, x), lc.reference_column(case, x), f"{kind} m={m}"
        )


def test_layer_3d_input_empty_batch_and_negative_zero(dist_tp1, triton_backend):
    cfg = lc.petit_mxfp4_config()
    case = lc.build("replicated", cfg, bias=True, load_weights=False)
    sh = case.shards[0]
    lc.load(case.layer, "weight", mx.with_negative_zeros(sh.packed))
    lc.load(case.layer, "weight_scale", sh.scales)
    bias = (torch.randn(sh.n) * 0.1).to(torch.bfloat16)
    lc.load(case.layer, "bias", bias)
    case.bias = bias.float()
    lc.finalize(case.layer)
    x = lc.rand_x(6, case.k_full).reshape(2, 3, case.k_full)
    out = lc.run(case.layer, x)
    assert out.shape == (2, 3, sh.n)
    ref = lc.reference_column(case, x.reshape(6, -1)).reshape(2, 3, -1)
    lc.assert_matches(out, ref, "3-D input with -0 weights")
    empty = lc.run(case.layer, torch.empty(0, case.k_full, dtype=torch.bfloat16))
    assert empty.shape == (0, sh.n)


def test_layer_nan_scale_refused(dist_tp1, triton_backend):
    cfg = lc.petit_mxfp4_config()
    case = lc.build("replicated", cfg, bias=False, load_weights=False)
    sh = case.shards[0]
    lc.load(case.layer, "weight", sh.packed)
    lc.load(case.layer, "weight_scale", mx.with_nan_scale(sh.scales, row=1, group=2))
    with pytest.raises(ValueError, match="0xFF") as ei:
        lc.finalize(case.layer)
    assert "model.layers.0.mlp.down_proj" in str(ei.value)


def test_hot_path_is_one_triton_call(dist_tp1, triton_backend, monkeypatch):
    """apply(): one kernel launch, bias fused, only the output allocated; the
    dispatcher sees views of the activation and the one custom op."""
    from torch.utils._python_dispatch import TorchDispatchMode

    cfg = lc.petit_mxfp4_config()
    case = lc.build("replicated", cfg, bias=True)
    lc.finalize(case.layer)
    calls, dispatched = [], []
    orig = triton_backend.mxfp4_a16_matmul

    def spy(a, weight, weight_scale, bias=None, config=None):
        calls.append((a.shape, bias is not None))
        return orig(a, weight, weight_scale, bias, config)

    class Dispatched(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            dispatched.append(func)  # not the op's own calls: the mode is off inside
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(triton_backend, "mxfp4_a16_matmul", spy)
    x = lc.rand_x(4, case.k_full).reshape(2, 2, case.k_full)
    with Dispatched():
        out = case.layer.quant_method.apply(case.layer, x, case.layer.bias)
    assert calls == [((4, case.k_full), True)]
    assert dispatched.count(_op()) == 1, dispatched
    views = (torch.ops.aten.view, torch.ops.aten._unsafe_view, torch.ops.aten.reshape)
    assert all(f == _op() or f.overloadpacket in views for f in dispatched), dispatched
    ref = lc.reference_column(case, x.reshape(4, -1)).reshape(2, 2, -1)
    lc.assert_matches(out, ref, "hot path")


# ------------------------------------------------------------------ selection


def test_auto_picks_triton_off_rocm(interp, monkeypatch, log_lines):
    monkeypatch.delenv(ENV, raising=False)
    assert _mx().get_petit_mxfp4_backend() == "triton"
    assert _mx().get_petit_mxfp4_backend() == "triton"
    assert lc.petit_mxfp4_config().backend == "triton"
    chosen = [line for line in log_lines if "backend" in line]
    assert len(chosen) == 1, log_lines
    assert "Triton" in chosen[0] and "ROCm" in chosen[0], chosen


def test_auto_picks_petit_on_supported_rocm(interp, rocm, monkeypatch, log_lines):
    monkeypatch.setenv(ENV, "auto")
    assert _mx().get_petit_mxfp4_backend() == "petit"
    assert lc.petit_mxfp4_config().backend == "petit"
    assert len([line for line in log_lines if "Petit backend" in line]) == 1, log_lines


def test_auto_picks_triton_on_unsupported_arch(interp, monkeypatch, log_lines):
    pu = _pu()
    monkeypatch.setattr(pu, "get_petit_gpu_arch", lambda *a, **k: "gfx1100")
    monkeypatch.delenv(ENV, raising=False)
    assert _mx().get_petit_mxfp4_backend() == "triton"
    assert any("gfx1100" in line for line in log_lines), log_lines


def test_auto_picks_triton_without_petit(interp, rocm, monkeypatch):
    pu = _pu()

    def missing():
        raise ImportError(f"Petit is not installed. {pu.PETIT_INSTALL_HINT}")

    monkeypatch.setattr(pu, "_load_petit_kernel", missing)
    monkeypatch.delenv(ENV, raising=False)
    assert _mx().get_petit_mxfp4_backend() == "triton"


def test_forced_petit_without_petit_is_a_clear_error(rocm, monkeypatch):
    pu = _pu()

    def missing():
        raise ImportError(f"Petit is not installed. {pu.PETIT_INSTALL_HINT}")

    monkeypatch.setattr(pu, "_load_petit_kernel", missing)
    monkeypatch.setenv(ENV, "petit")
    with pytest.raises(ValueError, match=f"{ENV}=petit.*not installed.*pip install"):
        lc.petit_mxfp4_config()


def test_forced_triton_where_it_cannot_run(monkeypatch):
    pytest.importorskip("triton")
    if not sgl_has_triton_backend():
        pytest.skip(f"{TRITON_MOD} not in this tree")
    mod = importlib.import_module(TRITON_MOD)
    monkeypatch.setattr(
        mod, "check_triton_mxfp4_supported", lambda: (False, "no GPU here")
    )
    monkeypatch.setenv(ENV, "triton")
    with pytest.raises(ValueError, match=f"{ENV}=triton: no GPU here"):
        lc.petit_mxfp4_config()
    # auto with neither backend names both reasons.
    monkeypatch.setenv(ENV, "auto")
    with pytest.raises(ValueError, match="ROCm.*no GPU here"):
        lc.petit_mxfp4_config()


def test_unknown_backend_refused(monkeypatch):
    monkeypatch.setenv(ENV, "cuda")
    with pytest.raises(ValueError, match="auto, petit, triton"):
        _mx().get_petit_mxfp4_backend()


def test_layer_non_contiguous_input(dist_tp1, triton_backend):
    """The kernel takes the activation's strides: no copy, no garbage."""
    cfg = lc.petit_mxfp4_config()
    case = lc.build("replicated", cfg, bias=False)
    lc.finalize(case.layer)
    x = lc.rand_x(9, case.k_full + 64)[:, : case.k_full]
    assert not x.is_contiguous()
    lc.assert_matches(
        lc.run(case.layer, x), lc.reference_column(case, x), "strided input"
    )


# ------------------------------------------------------------------ custom op


def _op():
    return getattr(torch.ops.sglang, OP).default


def test_custom_op_registered_for_cuda_with_schema(interp):
    """One functional op (no mutated argument), with a CUDA kernel from the
    module's own registration (the CPU one is this test file's)."""
    schema = _op()._schema
    assert [(a.name, str(a.type)) for a in schema.arguments] == [
        ("a", "Tensor"),
        ("weight", "Tensor"),
        ("weight_scale", "Tensor"),
        ("bias", "Optional[Tensor]"),
    ]
    assert [str(r.type) for r in schema.returns] == ["Tensor"]
    assert not any(a.alias_info for a in schema.arguments), schema
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"sglang::{OP}", "CUDA")


@pytest.mark.parametrize("m", [1, 5])
@pytest.mark.parametrize("bias", [False, True])
def test_custom_op_matches_mxfp4_a16_matmul(interp, m, bias):
    n, k = 48, 256
    packed, scales = mx.random_mxfp4(n, k, seed=m)
    weight = interp.interleave_mxfp4_weight(packed)
    x = lc.rand_x(m, k, seed=m)
    b = (torch.randn(n) * 0.1).to(torch.bfloat16) if bias else None
    out = _op()(x, weight, scales, b)
    assert torch.equal(out, interp.mxfp4_a16_matmul(x, weight, scales, b))
    ref = x.float() @ mx.dequantize_mxfp4(packed, scales).t()
    lc.assert_matches(out, ref + b.float() if bias else ref, f"op m={m}")


def test_custom_op_fake_impl_gives_shape_and_dtype(interp, monkeypatch):
    """Under FakeTensorMode the op runs its fake implementation only: the
    output is [M, N] BF16 on the activation's device, and no kernel runs."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    def no_kernel(*args, **kwargs):
        raise AssertionError("the kernel ran under FakeTensorMode")

    monkeypatch.setattr(interp, "mxfp4_a16_matmul", no_kernel)
    with FakeTensorMode() as mode:
        a = torch.empty(7, 4096, dtype=torch.bfloat16)
        weight = torch.empty(1000, 2048, dtype=torch.uint8)
        scale = torch.empty(1000, 128, dtype=torch.uint8)
        for bias in (None, torch.empty(1000, dtype=torch.bfloat16)):
            out = _op()(a, weight, scale, bias)
            assert out.shape == (7, 1000) and out.dtype == torch.bfloat16
            assert out.device == a.device and mode.is_our_fake(out)


def test_layer_compiles_to_one_op(dist_tp1, triton_backend):
    """torch.compile(fullgraph=True) traces the layer's forward into one graph
    in which the GEMM is the single custom op (M dynamic), and the compiled
    forward gives the eager result."""
    cfg = lc.petit_mxfp4_config()
    case = lc.build("replicated", cfg, bias=True)
    lc.finalize(case.layer)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    def forward(x):
        return case.layer.quant_method.apply(case.layer, x, case.layer.bias)

    torch._dynamo.reset()
    compiled = torch.compile(forward, backend=backend, fullgraph=True, dynamic=True)
    try:
        for m in (3, 17):
            x = lc.rand_x(m, case.k_full, seed=m)
            out = compiled(x)
            assert torch.equal(out, forward(x))
            lc.assert_matches(out, lc.reference_column(case, x), f"compiled m={m}")
    finally:
        torch._dynamo.reset()
    assert len(graphs) == 1, "recompiled for a new M"
    calls = [
        node.target for node in graphs[0].graph.nodes if node.op == "call_function"
    ]
    assert len(calls) == 1 and calls[0] in (_op(), _op().overloadpacket), calls


# ------------------------------------------------------------------ one choice per layer


def test_backend_is_fixed_per_layer_at_load(
    dist_tp1, triton_backend, rocm, monkeypatch
):
    """Each layer keeps the backend it was built with: changing the variable or
    the config later changes neither how it is prepared nor how it runs, and
    apply() does not read the config at all. A layer built afterwards takes
    the new choice."""
    cfg = lc.petit_mxfp4_config()
    case = lc.build("replicated", cfg, bias=True)
    method = case.layer.quant_method
    assert case.layer.petit_mxfp4_backend == "triton"
    assert type(method).__name__ == "PetitMxfp4TritonLinearMethod"

    monkeypatch.setenv(ENV, "petit")
    cfg.backend = "petit"
    petit_case = lc.build("replicated", lc.petit_mxfp4_config(), bias=True, seed=1)
    assert petit_case.layer.petit_mxfp4_backend == "petit"
    assert type(petit_case.layer.quant_method).__name__ == "PetitMxfp4LinearMethod"

    lc.finalize(case.layer)
    lc.finalize(petit_case.layer)
    # Prepared for Triton: the interleaved checkpoint bytes, no Petit repack.
    expected = triton_backend.interleave_mxfp4_weight(case.shards[0].packed)
    assert torch.equal(case.layer.weight.data, expected)
    assert not hasattr(case.layer, "weight_global_scale")
    assert hasattr(petit_case.layer, "weight_global_scale")

    class NoConfig:
        def __getattr__(self, name):
            raise AssertionError(f"apply() read quant_config.{name}")

    method.quant_config = NoConfig()
    x = lc.rand_x(5, case.k_full)
    lc.assert_matches(
        lc.run(case.layer, x), lc.reference_column(case, x), "triton layer"
    )
    lc.assert_matches(
        lc.run(petit_case.layer, x), lc.reference_column(petit_case, x), "petit layer"
    )


def test_backend_variable_is_registered_in_envs(monkeypatch):
    from sglang.srt.environ import envs

    monkeypatch.delenv(ENV, raising=False)
    assert envs.SGLANG_PETIT_MXFP4_BACKEND.get() == "auto"
    monkeypatch.setenv(ENV, " Triton ")
    assert _mx()._requested_petit_mxfp4_backend() == "triton"


# ------------------------------------------------------------------ shape limits


@pytest.mark.parametrize(
    "kind,sizes",
    [
        ("row", {"n": 256, "k": 384}),  # K % 256
        ("replicated", {"n": 48, "k": 96}),  # K % 256, N % 32
        ("merged", {"k": 256, "inter": 40}),  # N % 32 of the fused layer
    ],
)
def test_triton_takes_layers_petit_refuses(
    dist_tp1, triton_backend, rocm, monkeypatch, kind, sizes
):
    """Shapes outside Petit's 256 x 32 tiles: refused on Petit, run on Triton."""
    case = lc.build(kind, lc.petit_mxfp4_config(), sizes=sizes)
    lc.finalize(case.layer)
    for m in (1, 6):
        x = lc.rand_x(m, case.k_full, seed=m)
        lc.assert_matches(
            lc.run(case.layer, x), lc.reference_column(case, x), f"{kind} {sizes}"
        )
    monkeypatch.setenv(ENV, "petit")
    with pytest.raises(ValueError, match="Petit MXFP4 needs"):
        lc.build(kind, lc.petit_mxfp4_config(), sizes=sizes, load_weights=False)


def test_triton_refuses_k_not_a_multiple_of_32(dist_tp1, triton_backend):
    with pytest.raises(ValueError) as ei:
        lc.build(
            "replicated",
            lc.petit_mxfp4_config(),
            sizes={"n": 64, "k": 80},
            load_weights=False,
        )
    msg = str(ei.value)
    assert "Triton" in msg and "multiple of 32" in msg, msg
    assert "model.layers.0.mlp.down_proj" in msg and "(64, 80)" in msg, msg


def test_tiles_labelled_untuned_off_the_measured_gpus():
    """The tiles were measured on Hopper (an H200, compute capability 9.0);
    other NVIDIA GPUs and every ROCm GPU get them with a note that says so."""
    if not sgl_has_triton_backend():
        pytest.skip(f"{TRITON_MOD} not in this tree")
    pytest.importorskip("triton")
    mod = importlib.import_module(TRITON_MOD)
    assert mod.tuning_note((9, 0), "NVIDIA H200") is None
    for capability, name in (
        ((8, 0), "NVIDIA A100"),
        ((9, 4), "gfx942"),
        (None, "MI300X"),
    ):
        note = mod.tuning_note(capability, name)
        assert note is not None and "untuned" in note and name in note, note
        assert "Hopper" in note


# ------------------------------------------------- shared memory per GPU

# Shared memory per workgroup / block that Triton lets a kernel use.
SHARED_LIMIT = {
    ("hip", "gfx90a", 64): 65536,  # MI200
    ("hip", "gfx942", 64): 65536,  # MI300
    ("hip", "gfx950", 64): 163840,  # MI350
    ("cuda", 80, 32): 166912,  # A100
    ("cuda", 89, 32): 101376,  # L40S, RTX 4090 (RTX 30xx/50xx have as much)
    ("cuda", 90, 32): 232448,  # H100/H200, where the tiles were measured
}


class _RefusedDeeperThan:
    """Stands in for the kernel's launcher: refuses pipelines deeper than
    ``limit`` as Triton does a config that needs too much shared memory, and
    runs the real (interpreted) kernel otherwise."""

    def __init__(self, kernel, limit: int, resource: str = "shared memory"):
        self.kernel, self.limit, self.resource = kernel, limit, resource
        self.tried = []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.tried.append(kwargs["num_stages"])
            if kwargs["num_stages"] > self.limit:
                from triton.runtime.errors import OutOfResources

                raise OutOfResources(98304, 65536, self.resource)
            self.kernel[grid](*args, **kwargs)

        return launch


def test_launch_lowers_the_pipeline_depth_until_it_fits(interp, monkeypatch):
    """A tile whose pipeline needs more shared memory than the GPU has runs
    one stage shallower at a time until it fits, once: later calls start at
    the depth that fitted. Other resources, or depth 1, are not retried."""
    real = interp._mxfp4_a16_kernel
    monkeypatch.setattr(interp, "_is_interpreted", lambda kernel: True)
    monkeypatch.setattr(interp, "_STAGES", {})
    n, k, m = 64, 256, 5
    packed, scales = mx.random_mxfp4(n, k, seed=3)
    x = lc.rand_x(m, k, seed=3)
    ref = x.float() @ mx.dequantize_mxfp4(packed, scales).t()
    config = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=64, num_warps=4, num_stages=4)

    launcher = _RefusedDeeperThan(real, limit=2)
    monkeypatch.setattr(interp, "_mxfp4_a16_kernel", launcher)
    lc.assert_matches(_gemm(interp, x, packed, scales, config=config), ref, "depth 2")
    assert launcher.tried == [4, 3, 2]
    launcher.tried.clear()
    lc.assert_matches(_gemm(interp, x, packed, scales, config=config), ref, "again")
    assert launcher.tried == [2]
    launcher.tried.clear()
    other = dict(config, BLOCK_K=32)  # another config starts at its own depth
    _gemm(interp, x, packed, scales, config=other)
    assert launcher.tried == [4, 3, 2]

    from triton.runtime.errors import OutOfResources

    for refused, tried in (
        (_RefusedDeeperThan(real, limit=0), [4, 3, 2, 1]),
        (_RefusedDeeperThan(real, limit=2, resource="registers"), [4]),
    ):
        monkeypatch.setattr(interp, "_STAGES", {})
        monkeypatch.setattr(interp, "_mxfp4_a16_kernel", refused)
        with pytest.raises(OutOfResources):
            _gemm(interp, x, packed, scales, config=config)
        assert refused.tried == tried


def _compile_fused(mod, target, config: dict, stages: int):
    """The fused kernel compiled for ``target`` without a GPU."""
    pytest.importorskip("triton")
    gpu_tests = str(Path(__file__).resolve().parents[1] / "gpu")
    if gpu_tests not in sys.path:
        sys.path.append(gpu_tests)
    from offline_compile import compile_fused

    return compile_fused(mod._mxfp4_a16_kernel, target, config, stages)


def _fused_configs(mod):
    """Every fused-kernel config the picker gives on Llama-sized layers."""
    configs = {}
    for n, k in ((768, 4096), (4096, 1792), (6144, 4096), (28672, 4096), (8192, 28672)):
        for m in (1, 16, 17, 33, 64, 65, 128, 256, 511):
            cfg = mod._pick_config(m, n, k, 304)
            if "DEQUANT_ROWS" not in cfg:
                cfg["SPLIT_K"] = min(cfg.get("SPLIT_K", 1), 2)  # 1 or "split"
                configs[tuple(sorted(cfg.items()))] = cfg
    return list(configs.values())


@pytest.mark.parametrize("target", list(SHARED_LIMIT), ids=lambda t: str(t[1]))
def test_every_tile_fits_the_gpus_shared_memory(target):
    """Compiled for MI200/MI300 (64 KiB of shared memory), the tiles measured
    on the H200 need up to 96 KiB at their depth: the launch lowers the depth
    until they fit, and some depth does for every tile. On NVIDIA GPUs from
    Ampere on (inline-PTX decode) every tile fits at its configured depth, so
    the H200's measured figures involve no fallback."""
    if not sgl_has_triton_backend():
        pytest.skip(f"{TRITON_MOD} not in this tree")
    mod = _fresh_triton_module()
    limit = SHARED_LIMIT[target]
    deeper_than_fits = 0
    for cfg in _fused_configs(mod):
        depth = cfg["num_stages"]
        while _compile_fused(mod, target, cfg, depth).metadata.shared > limit:
            assert depth > 1, f"{cfg} needs more than {limit} B at depth 1 on {target}"
            depth -= 1
        deeper_than_fits += depth < cfg["num_stages"]
    if target[0] == "cuda":
        assert deeper_than_fits == 0
