"""Behaviour of petit_mxfp4: refusals, exclusions, overrides, config parsing,
registration and the hot path."""

from __future__ import annotations

import copy
import importlib
import re

import pytest
import torch

import layer_cases as lc
import mxfp4_ref as mx
import sgl_cpu

QUANT = "sglang.srt.layers.quantization"
pytestmark = pytest.mark.petit_mxfp4


def _mx():
    return importlib.import_module(f"{QUANT}.petit_mxfp4")


def _pu():
    return importlib.import_module(f"{QUANT}.petit_utils")


# ------------------------------------------------------------------ weights


def test_negative_zero_canonicalised_before_repack(dist_tp1, rocm, monkeypatch):
    """The series must clear -0 itself (Petit documents 'no negative zeros');
    check what reaches repack_mxfp4, not just the output."""
    import petit_kernel

    seen = []
    orig = petit_kernel.repack_mxfp4

    def spy(qw, size_n, size_k):
        seen.append(qw.clone())
        return orig(qw, size_n, size_k)

    monkeypatch.setattr(petit_kernel, "repack_mxfp4", spy)
    cfg = lc.petit_mxfp4_config()
    case = lc.build("replicated", cfg, bias=False, load_weights=False)
    sh = case.shards[0]
    negz = mx.with_negative_zeros(sh.packed)
    assert mx.count_negative_zeros(negz) > 100
    lc.load(case.layer, "weight", negz)
    lc.load(case.layer, "weight_scale", sh.scales)
    lc.finalize(case.layer)
    assert len(seen) == 1
    words = seen[0].view(torch.uint8).reshape(sh.n, -1)
    assert mx.count_negative_zeros(words) == 0, "-0 nibbles reached repack_mxfp4"
    x = lc.rand_x(3, case.k_full)
    lc.assert_matches(lc.run(case.layer, x), lc.reference_column(case, x), "-0 input")


@pytest.mark.parametrize("kind", ["replicated", "qkv"])
def test_nan_scale_refused_naming_layer(dist_tp1, rocm, kind):
    cfg = lc.petit_mxfp4_config()
    case = lc.build(kind, cfg, bias=False, load_weights=False)
    for i, sh in enumerate(case.shards):
        scales = mx.with_nan_scale(sh.scales, row=1, group=2) if i == len(case.shards) - 1 else sh.scales
        lc.load(case.layer, "weight", sh.packed, sh.shard_id)
        lc.load(case.layer, "weight_scale", scales, sh.shard_id)
    with pytest.raises(ValueError) as ei:
        lc.finalize(case.layer)
    msg = str(ei.value)
    assert "0xFF" in msg or "NaN" in msg, msg
    expected = {"replicated": "model.layers.0.mlp.down_proj", "qkv": "model.layers.0.self_attn.qkv_proj"}[kind]
    assert expected in msg, f"error does not name the layer: {msg}"


_TP_RE = re.compile(r"(tensor[ _-]?parallel|tp)[ _-]?size\D{0,4}(\d+)", re.I)


@pytest.mark.parametrize(
    "kind,sizes,n,k",
    [
        ("row", {"n": 256, "k": 384}, 256, 384),  # K%256
        ("replicated", {"n": 48, "k": 512}, 48, 512),  # N%32
        ("merged", {"k": 256, "inter": 40}, 80, 256),  # N%32 of the fused layer
    ],
)
def test_shape_violation_names_layer_shape_tp(dist_tp1, rocm, kind, sizes, n, k):
    cfg = lc.petit_mxfp4_config()
    with pytest.raises(ValueError) as ei:
        lc.build(kind, cfg, sizes=sizes, prefix=f"model.layers.3.{kind}_proj", load_weights=False)
    msg = str(ei.value)
    assert f"model.layers.3.{kind}_proj" in msg, msg
    assert str(n) in msg and str(k) in msg, msg
    m = _TP_RE.search(msg)
    assert m and m.group(2) == "1", f"TP size not named: {msg}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_non_bf16_refused(dist_tp1, rocm, dtype):
    cfg = lc.petit_mxfp4_config()
    assert cfg.get_supported_act_dtypes() == [torch.bfloat16]
    from sglang.srt.layers.linear import ReplicatedLinear

    with pytest.raises(ValueError, match="bfloat16|bf16"):
        ReplicatedLinear(512, 64, bias=False, params_dtype=dtype, quant_config=cfg, prefix="model.layers.0.mlp.down_proj")


def test_fp16_activation_at_runtime_fails_loudly(dist_tp1, rocm):
    """Even if an fp16 activation slipped through, petit (and our reference)
    raise instead of computing."""
    cfg = lc.petit_mxfp4_config()
    case = lc.build("replicated", cfg, bias=False)
    lc.finalize(case.layer)
    with pytest.raises(RuntimeError):
        lc.run(case.layer, lc.rand_x(2, case.k_full).to(torch.float16))


# ------------------------------------------------------------------ exclusions


def _linear_base():
    from sglang.srt.layers.linear import LinearBase

    return LinearBase(256, 256)


EXCLUDE_CASES = [
    # (patterns, prefix, excluded?)
    (["lm_head"], "lm_head", True),
    (["lm_head"], "model.layers.0.mlp.down_proj", False),
    (["lm_head"], "model.lm_head", True),
    (["*.mlp.down_proj"], "model.layers.0.mlp.down_proj", True),
    (["*.mlp.down_proj"], "model.layers.0.mlp.gate_up_proj", False),
    (["*down_proj"], "model.layers.1.mlp.down_proj", True),
    (["mlp.gate"], "model.layers.0.mlp.gate_up_proj", False),  # no substring match
    (["model.layers.1"], "model.layers.1.mlp.down_proj", True),
    (["model.layers.1"], "model.layers.10.mlp.down_proj", False),  # dotted boundary
    (["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj"], "model.layers.0.self_attn.qkv_proj", True),
    (["*gate_proj", "*up_proj"], "model.layers.0.mlp.gate_up_proj", True),
    (["model.embed_tokens", "lm_head"], "model.layers.0.self_attn.o_proj", False),
]


@pytest.mark.parametrize("patterns,prefix,excluded", EXCLUDE_CASES)
def test_excluded_modules_glob(rocm, patterns, prefix, excluded):
    from sglang.srt.layers.quantization.unquant import UnquantizedLinearMethod

    cfg = lc.petit_mxfp4_config(mx.quark_mxfp4_config(exclude=patterns))
    qm = cfg.get_quant_method(_linear_base(), prefix)
    if excluded:
        assert isinstance(qm, UnquantizedLinearMethod), (patterns, prefix, qm)
    else:
        assert type(qm).__name__ == "PetitMxfp4LinearMethod", (patterns, prefix, qm)


def test_partially_excluded_fused_layer_refused(rocm):
    cfg = lc.petit_mxfp4_config(mx.quark_mxfp4_config(exclude=["model.layers.0.self_attn.q_proj"]))
    with pytest.raises(ValueError, match="qkv_proj"):
        cfg.get_quant_method(_linear_base(), "model.layers.0.self_attn.qkv_proj")


def test_modelopt_excludes(rocm):
    from sglang.srt.layers.quantization.unquant import UnquantizedLinearMethod

    for raw in (mx.modelopt_mxfp4_flat(), mx.modelopt_mxfp4_nested()):
        cfg = lc.petit_mxfp4_config(raw)
        assert isinstance(cfg.get_quant_method(_linear_base(), "lm_head"), UnquantizedLinearMethod)
        assert type(cfg.get_quant_method(_linear_base(), "model.layers.0.mlp.down_proj")).__name__ == "PetitMxfp4LinearMethod"


def test_get_quant_method_has_no_side_effects(rocm):
    """0.5.22's is_linear_unquantized() probes get_quant_method(LinearBase(1, 1), prefix)."""
    import petit_kernel

    cfg = lc.petit_mxfp4_config(mx.quark_mxfp4_config(exclude=["lm_head", "*.down_proj"]))
    before = copy.deepcopy({k: v for k, v in vars(cfg).items()})
    calls_before = dict(getattr(petit_kernel, "CALLS", {}))
    from sglang.srt.layers.linear import LinearBase

    probe = LinearBase(1, 1)
    params_before = dict(probe.named_parameters())
    for prefix in ["lm_head", "model.layers.0.mlp.down_proj", "model.layers.0.mlp.gate_up_proj", "x"] * 2:
        cfg.get_quant_method(probe, prefix)  # 1x1 shape must not raise here
    assert {k: v for k, v in vars(cfg).items()} == before
    assert dict(probe.named_parameters()) == params_before
    assert dict(getattr(petit_kernel, "CALLS", {})) == calls_before


def test_is_linear_unquantized_if_present(rocm):
    cfg = lc.petit_mxfp4_config(mx.quark_mxfp4_config(exclude=["lm_head"]))
    if not hasattr(cfg, "is_linear_unquantized"):
        pytest.skip("QuantizationConfig.is_linear_unquantized arrives in 0.5.22")
    assert cfg.is_linear_unquantized("lm_head")
    assert not cfg.is_linear_unquantized("model.layers.0.mlp.down_proj")


# ------------------------------------------------------------------ configs


def test_quark_configs_parse(rocm):
    cfg = lc.petit_mxfp4_config(mx.quark_mxfp4_config())
    assert cfg.get_name() == "petit_mxfp4"
    assert "lm_head" in cfg.exclude_modules
    assert not getattr(cfg, "has_fp8_kv_cache_scales", False)
    lc.petit_mxfp4_config(mx.quark_mxfp4_config(weight_only=True))
    kv = lc.petit_mxfp4_config(mx.quark_mxfp4_config(kv_fp8=True))
    assert getattr(kv, "has_fp8_kv_cache_scales", True)
    lc.petit_mxfp4_config(mx.quark_0_9_style_config())


def test_quark_mixed_precision_refused_naming_pattern(rocm):
    with pytest.raises(ValueError, match=re.escape("*down_proj")):
        lc.petit_mxfp4_config(mx.quark_mixed_precision_config("*down_proj"))
    with pytest.raises(ValueError, match=re.escape("*o_proj")):
        lc.petit_mxfp4_config(mx.quark_mixed_precision_config("*o_proj"))


def test_quark_non_mxfp4_refused(rocm):
    cfg = mx.quark_mxfp4_config()
    cfg["global_quant_config"]["weight"]["group_size"] = 64
    with pytest.raises(ValueError):
        lc.petit_mxfp4_config(cfg)


@pytest.mark.parametrize("shape", ["flat", "nested", "flat_upper", "nested_upper"])
def test_modelopt_flat_and_nested(rocm, shape):
    raw = mx.modelopt_mxfp4_flat() if shape.startswith("flat") else mx.modelopt_mxfp4_nested()
    if shape.endswith("upper"):
        sec = raw.get("quantization", raw)
        sec["quant_algo"] = "MXFP4"
    cfg = lc.petit_mxfp4_config(raw)
    assert set(cfg.exclude_modules) == {"lm_head", "model.embed_tokens"}


def test_modelopt_nvfp4_refused(rocm):
    for raw in (mx.modelopt_nvfp4_flat(), mx.modelopt_nvfp4_nested()):
        with pytest.raises(ValueError):
            lc.petit_mxfp4_config(raw)


def test_refused_off_rocm():
    """Without the rocm fixture get_petit_gpu_arch() is None on this CPU box."""
    with pytest.raises(ValueError, match="ROCm|AMD"):
        lc.petit_mxfp4_config()


@pytest.mark.parametrize("arch,version,ok", [("gfx90a", "0.0.3", True), ("gfx942", "0.0.3", True), ("gfx950", "0.0.3", False), ("gfx950", "0.0.5", True), ("gfx1100", "0.0.5", False)])
def test_arch_gate(monkeypatch, arch, version, ok):
    import petit_kernel

    monkeypatch.setattr(_pu(), "get_petit_gpu_arch", lambda *a, **k: arch)
    monkeypatch.setattr(petit_kernel, "__version__", version)
    if ok:
        lc.petit_mxfp4_config()
    else:
        with pytest.raises(ValueError, match=arch):
            lc.petit_mxfp4_config()


# ------------------------------------------------------------------ overrides


def _registry():
    from sglang.srt.layers.quantization import QUANTIZATION_METHODS

    return QUANTIZATION_METHODS


def _override_loop(quant_cfg, user):
    """SGLang's override loop (model_config._verify_quantization), registry order."""
    for _, method in _registry().items():
        o = method.override_quantization_method(quant_cfg, user)
        if o:
            return o
    return None


def test_registered():
    assert "petit_mxfp4" in _registry()
    assert _registry()["petit_mxfp4"] is _mx().PetitMxfp4Config
    try:
        from sglang.srt.arg_groups.choices import QUANTIZATION_CHOICES  # 0.5.20+
    except ImportError:
        from sglang.srt.server_args import QUANTIZATION_CHOICES
    assert "petit_mxfp4" in QUANTIZATION_CHOICES
    from sglang.srt.layers.linear import WEIGHT_LOADER_V2_SUPPORTED

    assert "PetitMxfp4LinearMethod" in WEIGHT_LOADER_V2_SUPPORTED


def test_override_opt_in_only(rocm):
    C = _mx().PetitMxfp4Config
    for raw in (mx.quark_mxfp4_config(), mx.quark_mxfp4_config(weight_only=True), mx.modelopt_mxfp4_flat(), mx.modelopt_mxfp4_nested()):
        assert C.override_quantization_method(raw, "petit_mxfp4") == "petit_mxfp4"
        for user in (None, "quark", "modelopt", "mxfp4", "modelopt_fp4", "fp8"):
            assert C.override_quantization_method(raw, user) is None, (raw.get("quant_method"), user)
    assert C.override_quantization_method(mx.modelopt_nvfp4_flat(), "petit_mxfp4") is None


@pytest.mark.parametrize(
    "name,raw,user,expected",
    [
        ("quark mxfp4, no flag", mx.quark_mxfp4_config(), None, None),
        ("quark mxfp4, --quantization quark", mx.quark_mxfp4_config(), "quark", None),
        ("quark mxfp4, --quantization petit_mxfp4", mx.quark_mxfp4_config(), "petit_mxfp4", "petit_mxfp4"),
        ("modelopt mxfp4, --quantization petit_mxfp4", mx.modelopt_mxfp4_flat(), "petit_mxfp4", "petit_mxfp4"),
        ("modelopt mxfp4, no flag", mx.modelopt_mxfp4_flat(), None, None),
        ("modelopt nvfp4, no flag", mx.modelopt_nvfp4_flat(), None, "petit_nvfp4"),
        ("modelopt nvfp4, --quantization petit_nvfp4", mx.modelopt_nvfp4_flat(), "petit_nvfp4", "petit_nvfp4"),
        ("modelopt nvfp4, --quantization petit_mxfp4", mx.modelopt_nvfp4_flat(), "petit_mxfp4", None),
    ],
)
def test_override_loop_on_rocm(rocm, name, raw, user, expected):
    assert _override_loop(copy.deepcopy(raw), user) == expected, name


@pytest.mark.parametrize(
    "raw,user,expected",
    [
        (mx.modelopt_mxfp4_flat(), "petit_mxfp4", "petit_mxfp4"),  # not turned into petit_nvfp4
        (mx.modelopt_mxfp4_nested(), "petit_mxfp4", "petit_mxfp4"),
        (mx.quark_mxfp4_config(), "petit_mxfp4", "petit_mxfp4"),
        (mx.quark_mxfp4_config(kv_fp8=True), "petit_mxfp4", "petit_mxfp4"),
        (mx.quark_mxfp4_config(weight_only=True), "petit_mxfp4", "petit_mxfp4"),
        (mx.quark_mxfp4_config(), None, "quark"),  # never stolen
        (mx.quark_mxfp4_config(), "quark", "quark"),
    ],
    ids=["modelopt-flat", "modelopt-nested", "quark", "quark-kvfp8", "quark-wo", "quark-noflag", "quark-flag-quark"],
)
def test_real_verify_quantization(rocm, monkeypatch, tmp_path, raw, user, expected):
    assert sgl_cpu.verify_quantization(monkeypatch, tmp_path, raw, user) == expected


def test_real_verify_quantization_mixed_precision(rocm, monkeypatch, tmp_path):
    res = sgl_cpu.verify_quantization(monkeypatch, tmp_path, mx.quark_mixed_precision_config("*down_proj"), "petit_mxfp4")
    assert res.startswith("rejected:") and "*down_proj" in res, res


# ------------------------------------------------------------------ hot path


def test_hot_path_single_petit_call(dist_tp1, rocm, monkeypatch, capsys):
    """apply() must be exactly one mul_mxfp4_a16 call plus the bias add (views
    are free metadata ops).  Ops executed INSIDE the petit call (our reference
    computes with aten ops) are not counted."""
    from torch.utils._python_dispatch import TorchDispatchMode

    import petit_kernel

    state = {"inside": 0, "calls": 0}
    orig = petit_kernel.mul_mxfp4_a16

    def wrapped(*a, **k):
        state["calls"] += 1
        state["inside"] += 1
        try:
            return orig(*a, **k)
        finally:
            state["inside"] -= 1

    monkeypatch.setattr(petit_kernel, "mul_mxfp4_a16", wrapped)

    class Counter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not state["inside"]:
                self.ops.append(str(func.overloadpacket.__name__))
            return func(*args, **(kwargs or {}))

    VIEW_OPS = {"view", "_unsafe_view", "reshape", "_reshape_alias", "as_strided", "alias", "unsqueeze", "squeeze", "expand", "detach", "t", "slice", "select"}
    results = {}
    for bias in (True, False):
        cfg = lc.petit_mxfp4_config()
        case = lc.build("replicated", cfg, bias=bias)
        lc.finalize(case.layer)
        x = lc.rand_x(4, case.k_full)
        layer = case.layer
        bias_t = layer.bias if bias else None
        state["calls"] = 0
        with Counter() as c:
            out = layer.quant_method.apply(layer, x, bias_t)
        compute = [o for o in c.ops if o not in VIEW_OPS]
        results[bias] = (state["calls"], compute, c.ops)
        lc.assert_matches(out, lc.reference_column(case, x), "hot path output")
    with capsys.disabled():
        for bias, (calls, compute, ops) in results.items():
            print(f"\n[hot path] apply(bias={bias}): petit calls={calls}, other aten ops={len(ops)} {ops}, compute ops={compute}")
    assert results[True][0] == 1 and results[False][0] == 1
    assert results[False][1] == [], f"apply() issues tensor ops besides the petit call: {results[False][1]}"
    assert len(results[True][1]) == 1 and results[True][1][0].startswith("add"), results[True][1]


def _layer_with_scale_byte(monkeypatch, arch: str, byte: int):
    """A loaded (not yet finalized) layer on `arch` whose first scale is `byte`."""
    monkeypatch.setattr(_pu(), "get_petit_gpu_arch", lambda *a, **k: arch)
    case = lc.build("replicated", lc.petit_mxfp4_config(), bias=False, load_weights=False)
    sh = case.shards[0]
    scales = sh.scales.clone()
    scales[0, 0] = byte
    lc.load(case.layer, "weight", sh.packed)
    lc.load(case.layer, "weight_scale", scales)
    return case.layer


def test_gfx90a_large_scale_refused(dist_tp1, monkeypatch):
    """gfx90a's high-precision kernels add 7 to the E8M0 exponent, so scale bytes
    >= 248 overflow there (mxfp4-and-petit.md s1): refused, naming the layer."""
    layer = _layer_with_scale_byte(monkeypatch, "gfx90a", 250)
    with pytest.raises(ValueError, match="model.layers.0.mlp.down_proj"):
        lc.finalize(layer)


def test_large_scale_accepted_off_gfx90a(dist_tp1, monkeypatch):
    """The >= 248 limit is gfx90a's alone: gfx942 takes such a scale."""
    lc.finalize(_layer_with_scale_byte(monkeypatch, "gfx942", 250))
