"""The Triton backend of petit_mxfp4 on a real GPU (see README.md).

Only the public entry points are used: interleave_mxfp4_weight (checkpoint
bytes -> kernel layout) and mxfp4_a16_matmul. References decode the checkpoint
bytes independently, in float64, with a table.
"""

from __future__ import annotations

import functools
import math
import types
from typing import Callable, List, Optional, Tuple

import pytest
import torch

E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
E2M1_TABLE = torch.tensor(E2M1 + [-v for v in E2M1], dtype=torch.float64)
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"
)


def decode64(packed: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Checkpoint MXFP4 [N, K // 2] bytes (even element in the low nibble) and
    E8M0 scales [N, K // 32] -> float64 [N, K] weights."""
    codes = torch.stack([packed & 0xF, packed >> 4], dim=-1).flatten(1).long()
    values = E2M1_TABLE.to(packed.device)[codes]
    return values * torch.exp2(scales.double() - 127).repeat_interleave(32, 1)


def random_mxfp4(
    n: int, k: int, device: str, scale_range: Tuple[int, int] = (110, 131)
) -> Tuple[torch.Tensor, torch.Tensor]:
    packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device=device)
    scales = torch.randint(*scale_range, (n, k // 32), device=device)
    return packed, scales.to(torch.uint8)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref).norm() / ref.norm()).item()


def reference(
    a: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """FP32 dequantize-then-matmul (run under the no_tf32 fixture)."""
    ref = a.float() @ decode64(packed, scales).float().t()
    return ref if bias is None else ref + bias.float()


def assert_gemm_close(out: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """Every element written (no NaN), close elementwise, rel err < 1e-2."""
    assert out.shape == ref.shape and out.dtype == torch.bfloat16, what
    nan = out.isnan()
    assert not nan.any(), f"{what}: {int(nan.sum())} outputs not written (NaN)"
    err = rel_err(out, ref)
    assert err < 1e-2, f"{what}: rel err {err:.2e}"
    rms = ref.pow(2).mean().sqrt()
    bad = (out.float() - ref).abs() > 0.05 * ref.abs() + 0.02 * rms
    assert not bad.any(), f"{what}: {int(bad.sum())} outputs off, first at " + str(
        bad.nonzero()[0].tolist()
    )


# ------------------------------------------------------------- (1) decoding


def decode_case(
    n: int, k: int, scales_in: Tuple[int, int], device: str
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every byte value, and every scale byte in scales_in (inclusive),
    shuffled over [N, K]."""
    lo, hi = scales_in
    groups = n * k // 32
    assert groups >= hi - lo + 1
    codes = torch.arange(n * k // 2) * 7 % 256
    codes = codes[torch.randperm(codes.numel())].to(torch.uint8).view(n, k // 2)
    scales = (torch.arange(groups) % (hi - lo + 1) + lo)[torch.randperm(groups)]
    scales = scales.to(torch.uint8).view(n, k // 32)
    return codes.to(device), scales.to(device)


def check_decode(
    mod: types.ModuleType,
    n: int,
    k: int,
    scales_in: Tuple[int, int],
    device: str,
    rows: Optional[int] = None,
) -> None:
    """eye(K) @ W.T is W.T exactly when each weight is representable in BF16,
    which every E2M1 value times 2^(1..160 - 127) is (2^-127 as a subnormal);
    the backend accepts scale bytes up to 160.
    ``rows``: multiply by the identity ``rows`` rows at a time (M = rows).
    A GEMM cannot keep the sign of -0 (+0 + -0 = +0): zeros compare as +0."""
    packed, scales = decode_case(n, k, scales_in, device)
    weight = mod.interleave_mxfp4_weight(packed)
    eye = torch.eye(k, dtype=torch.bfloat16, device=device)
    step = rows or k
    out = torch.cat(
        [
            mod.mxfp4_a16_matmul(eye[r : r + step], weight, scales)
            for r in range(0, k, step)
        ]
    )
    expected = decode64(packed, scales).t()
    assert torch.equal(expected.to(torch.bfloat16).double(), expected)  # exact
    expected = (expected + 0.0).to(torch.bfloat16)  # -0 -> +0
    out = torch.where(out == 0, torch.zeros_like(out), out)
    if scales_in[0] < EXACT_MIN_SCALE:
        # Weights under 2^(EXACT_MIN_SCALE - 127) * 6 may lose bits or flush
        # to zero (the backend documents this); nothing larger may change.
        err = (out.double() - expected.double()).abs().max().item()
        assert err <= 6 * 2.0 ** (scales_in[1] - 127), f"{n}x{k}: error {err}"
        return
    wrong = out.view(torch.int16) != expected.view(torch.int16)
    if wrong.any():
        kk, nn = wrong.nonzero().unbind(1)
        bad = sorted(set(scales[nn, kk // 32].tolist()))
        pytest.fail(
            f"{n}x{k}: {int(wrong.sum())} of {wrong.numel()} weights decoded wrong, "
            f"under {len(bad)} scale bytes in {bad[0]}..{bad[-1]}; first: "
            f"W[{nn[0]}, {kk[0]}] = {out[kk[0], nn[0]].item()!r}, expected "
            f"{expected[kk[0], nn[0]].item()!r}"
        )


# (N, K, rows of the identity per call: M); None: all K rows at once.
DECODE_CASES = [
    (80, 64, None),
    (96, 256, None),
    (200, 512, None),
    (40, 1056, None),
    (1000, 1024, None),
    (256, 2048, None),
    (512, 4096, None),
    (96, 512, 1),
    (96, 1024, 16),
    (1000, 1024, 64),
]


# Scale bytes 1..160 in two parts: 34..160 (2^-93 .. 2^33), decoded bit exactly,
# and 1..33, where the kernel carries weights at 2^-32 of their value in BF16
# and weights below 6 * 2^-94 may underflow (documented in the module; no real
# checkpoint has such groups): there only the absolute error is bounded.
EXACT_MIN_SCALE = 34
SCALE_RANGES = [(1, 33), (34, 160)]
scale_ids = [f"scales{lo}-{hi}" for lo, hi in SCALE_RANGES]


@needs_cuda
@pytest.mark.parametrize("scales_in", SCALE_RANGES, ids=scale_ids)
@pytest.mark.parametrize("n,k,rows", DECODE_CASES)
def test_decode_exact_cuda(cuda_mod, n, k, rows, scales_in):
    check_decode(cuda_mod, n, k, scales_in, "cuda", rows)


@pytest.mark.parametrize("scales_in", SCALE_RANGES, ids=scale_ids)
@pytest.mark.parametrize(
    "n,k,rows", [(80, 64, None), (24, 256, None), (40, 2048, None), (24, 256, 16)]
)
def test_decode_exact_interpreter(interp_mod, n, k, rows, scales_in):
    """The same check on CPU tensors, kernels in Triton's interpreter."""
    from triton.runtime.errors import InterpreterError

    try:
        check_decode(interp_mod, n, k, scales_in, "cpu", rows)
    except InterpreterError as e:
        if "only 0-dimensional arrays" not in str(e):
            raise
        # Triton 3.6's interpreter cannot take tensor loop bounds (3.8's can).
        pytest.skip(f"this Triton's interpreter cannot run the kernel: {e}")


# ------------------------------------------------------------------ (2) GEMM

GEMM_MS = [1, 3, 16, 17, 64, 100, 256, 1024, 4096]
# (N, K): tiny, N and K off every power-of-two tile, Llama-like, narrow + deep.
GEMM_SHAPES = [(96, 256), (1000, 1056), (6144, 4096), (1536, 8192)]


class _PoisonedTorch(types.ModuleType):
    """torch for the kernel module, with empty/empty_like tensors of floating
    dtypes filled with NaN, so that an output element (or a float workspace
    element) that is read or returned without being written shows up."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name: str):
        return getattr(torch, name)

    @staticmethod
    def _poison(t: torch.Tensor) -> torch.Tensor:
        return t.fill_(math.nan) if t.is_floating_point() else t

    def empty(self, *args, **kwargs) -> torch.Tensor:
        return self._poison(torch.empty(*args, **kwargs))

    def empty_like(self, *args, **kwargs) -> torch.Tensor:
        return self._poison(torch.empty_like(*args, **kwargs))


@needs_cuda
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("n,k", GEMM_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("m", GEMM_MS)
def test_gemm_matches_fp32_reference(cuda_mod, no_tf32, monkeypatch, m, n, k, bias):
    packed, scales = random_mxfp4(n, k, "cuda")
    weight = cuda_mod.interleave_mxfp4_weight(packed)
    a = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, dtype=torch.bfloat16, device="cuda") if bias else None
    cuda_mod.mxfp4_a16_matmul(a, weight, scales, b)  # compile, workspaces
    monkeypatch.setattr(cuda_mod, "torch", _PoisonedTorch())
    # Also leave a NaN block of the output's size in the caching allocator.
    torch.full((m, n), math.nan, dtype=torch.bfloat16, device="cuda")
    out = cuda_mod.mxfp4_a16_matmul(a, weight, scales, b)
    torch.cuda.synchronize()
    assert_gemm_close(out, reference(a, packed, scales, b), f"M={m} {n}x{k}")


# ------------------------------------------------------------ (3) two streams

Gemm = Tuple[Callable[[], torch.Tensor], torch.Tensor]


def make_gemm(mod: types.ModuleType, m: int, n: int, k: int) -> Gemm:
    """A GEMM closure on fresh data, and its FP32 reference."""
    packed, scales = random_mxfp4(n, k, "cuda")
    weight = mod.interleave_mxfp4_weight(packed)
    a = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
    bias = torch.randn(n, dtype=torch.bfloat16, device="cuda")
    ref = reference(a, packed, scales, bias)
    return (lambda: mod.mxfp4_a16_matmul(a, weight, scales, bias)), ref


def hold_streams(*streams: torch.cuda.Stream) -> None:
    """Make the streams wait on a ~20 ms GPU sleep, so that the host queues
    everything before either starts and the two then run concurrently."""
    torch.cuda._sleep(40_000_000)
    gate = torch.cuda.Event()
    gate.record()
    for s in streams:
        s.wait_event(gate)


def race(calls: List[Callable[[], torch.Tensor]]) -> List[List[torch.Tensor]]:
    """Each call 50 times on its own stream, interleaved with no synchronization
    between the streams (held back so that they overlap); every output kept."""
    streams = [torch.cuda.Stream() for _ in calls]
    outs: List[List[torch.Tensor]] = [[] for _ in calls]
    hold_streams(*streams)
    for _ in range(50):
        for call, stream, out in zip(calls, streams, outs):
            with torch.cuda.stream(stream):
                out.append(call())
    torch.cuda.synchronize()
    return outs


STREAM_PAIRS = {
    # Small M: split-K partial sums and per-tile counters on both streams.
    "split_k": ((3, 4096, 4096), (5, 1536, 8192)),
    "split_k_m1": ((1, 6144, 4096), (16, 1024, 14336)),
    # Large M: decoded-weight chunks + torch.mm (or the fused kernel) on both.
    "large_m": ((1024, 2048, 4096), (2048, 4096, 1536)),
    "mixed": ((1, 4096, 4096), (4096, 1024, 2048)),
}


@needs_cuda
@pytest.mark.parametrize("pair", list(STREAM_PAIRS))
def test_two_streams_concurrently(cuda_mod, no_tf32, pair):
    """Two different GEMMs, 50 times each, interleaved on two streams with no
    synchronization between them: every result must match its reference (a
    workspace shared by both would mix their partial sums)."""
    gemms = [make_gemm(cuda_mod, *shape) for shape in STREAM_PAIRS[pair]]
    for fn, _ in gemms:
        fn()  # compile and size the workspaces before the race
    torch.cuda.synchronize()
    outs = race([fn for fn, _ in gemms])
    for (_, ref), out, shape in zip(gemms, outs, STREAM_PAIRS[pair]):
        for i, o in enumerate(out):
            assert_gemm_close(o, ref, f"{pair} {shape} call {i}")


# ------------------------------------------------------------- (4) CUDA graphs


def capture(
    fn: Callable[[], torch.Tensor], stream: Optional[torch.cuda.Stream] = None
) -> Tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """Warm fn up on a side stream, then capture one call."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        out = fn()
    return graph, out


@needs_cuda
@pytest.mark.parametrize("m", [1, 16, 64])
def test_cuda_graph_replay_new_inputs(cuda_mod, no_tf32, m):
    n, k = 4096, 4096
    packed, scales = random_mxfp4(n, k, "cuda")
    weight = cuda_mod.interleave_mxfp4_weight(packed)
    bias = torch.randn(n, dtype=torch.bfloat16, device="cuda")
    a = torch.zeros(m, k, dtype=torch.bfloat16, device="cuda")
    graph, out = capture(lambda: cuda_mod.mxfp4_a16_matmul(a, weight, scales, bias))
    for trial in range(3):
        new = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
        a.copy_(new)
        graph.replay()
        torch.cuda.synchronize()
        ref = reference(new, packed, scales, bias)
        assert_gemm_close(out, ref, f"graph M={m} replay {trial}")


@needs_cuda
def test_two_cuda_graphs_on_two_streams(cuda_mod, no_tf32):
    """Two graphs captured on one stream (M = 1 and M = 16, both split-K at
    decode sizes), replayed 50 times each on two streams concurrently."""
    cap = torch.cuda.Stream()
    specs = [(1, 4096, 4096), (16, 1536, 8192)]
    gemms = [make_gemm(cuda_mod, *spec) for spec in specs]
    graphs = [capture(fn, stream=cap) for fn, _ in gemms]
    torch.cuda.synchronize()

    def replay(graph: torch.cuda.CUDAGraph, out: torch.Tensor) -> torch.Tensor:
        graph.replay()
        return out.clone()

    copies = race([functools.partial(replay, *captured) for captured in graphs])
    for (_, ref), kept, spec in zip(gemms, copies, specs):
        for i, o in enumerate(kept):
            assert_gemm_close(o, ref, f"graph {spec} replay {i}")


# ------------------------------------------------ (5) the op SGLang's layers call


@needs_cuda
@pytest.mark.parametrize("m", [1, 64, 600])
def test_custom_op_in_graph_and_compile(cuda_mod, no_tf32, m):
    """torch.ops.sglang.petit_mxfp4_a16_matmul, as apply_mxfp4_triton_linear
    calls it: captured in a CUDA graph and compiled with fullgraph=True, the
    results match the FP32 reference (split-K, fused and decode + mm paths)."""
    n, k = 3072, 4096
    packed, scales = random_mxfp4(n, k, "cuda")
    weight = cuda_mod.interleave_mxfp4_weight(packed)
    bias = torch.randn(n, dtype=torch.bfloat16, device="cuda")
    op = torch.ops.sglang.petit_mxfp4_a16_matmul
    a = torch.zeros(m, k, dtype=torch.bfloat16, device="cuda")
    graph, out = capture(lambda: op(a, weight, scales, bias))
    new = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
    a.copy_(new)
    graph.replay()
    torch.cuda.synchronize()
    ref = reference(new, packed, scales, bias)
    assert_gemm_close(out, ref, f"op in a graph, M={m}")

    compiled = torch.compile(lambda x: op(x, weight, scales, bias), fullgraph=True)
    assert_gemm_close(compiled(new), ref, f"compiled op, M={m}")
