"""gpt-oss MXFP4 MoE through Petit's fused MoE (patch 0011).

SGLang's own GptOssForCausalLM is built on the CPU with ROCm emulated and
PetitMxfp4Config resolved from a gpt-oss ``quantization_config``; its MoE
weights are loaded through SGLang's gpt-oss MXFP4 loader; each MoE block's
output is compared with the independent float32 reference in ``moe_ref.py``
(router, MXFP4 decode, interleaved gate/up, clamped SwiGLU, biases), and each
forward must make exactly one ``fused_moe_bf16_mxfp4`` call.  The kernel is
the CPU reference in ``petit_kernel_ref`` (real one under ``-m rocm``).
"""

from __future__ import annotations

import importlib

import pytest
import torch

import sgl_cpu

pytestmark = [pytest.mark.petit_mxfp4, pytest.mark.usefixtures("dist_tp1", "rocm")]

QUANT = "sglang.srt.layers.quantization"
GPT_OSS_QUANT_CFG = {
    "quant_method": "mxfp4",
    "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"],
}


def moe_mod():
    try:
        return importlib.import_module(f"{QUANT}.petit_mxfp4_moe")
    except ImportError as e:
        pytest.skip(f"petit_mxfp4_moe not in this tree (series without patch 0011): {e}")


def mx_mod():
    return importlib.import_module(f"{QUANT}.petit_mxfp4")


def petit_kernel():
    return importlib.import_module("petit_kernel")


def need_moe_kernel():
    pk = petit_kernel()
    if not hasattr(pk, "fused_moe_bf16_mxfp4"):
        pytest.skip(f"the petit_kernel here ({pk.__file__}) has no fused_moe_bf16_mxfp4")
    return pk


def moe_ref():
    try:
        return importlib.import_module("moe_ref")
    except ImportError as e:
        pytest.skip(f"tests/series/moe_ref.py missing: {e}")


def need_gpt_oss():
    """SGLang's gpt-oss model and real FusedMoE must import on this CPU
    (0.5.9 needs sgl_cpu's kvcacheio stand-in for that)."""
    import sys

    sgl_cpu.ensure_fused_moe_importable()
    fused = sys.modules.get("sglang.srt.layers.moe.fused_moe_triton")
    if fused is None or getattr(fused, "__file__", None) is None:
        pytest.skip(f"SGLang {sgl_cpu.VERSION or ''}: FusedMoE cannot be imported on a CPU box ({'; '.join(sgl_cpu.STUBBED)})")
    try:
        return importlib.import_module("sglang.srt.models.gpt_oss")
    except ImportError as e:
        pytest.skip(f"SGLang {sgl_cpu.VERSION or ''}: gpt-oss cannot be imported on a CPU box: {type(e).__name__}: {e}")


def tiny_hf_config(hidden=160, inter=96, experts=4, top_k=2, layers=2, **kw):
    from transformers import GptOssConfig

    # The released configs carry swiglu_limit; some transformers releases have
    # no default for it.
    kw.setdefault("swiglu_limit", 7.0)
    cfg = GptOssConfig(
        vocab_size=128,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        num_local_experts=experts,
        num_experts_per_tok=top_k,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention"][:layers] * (layers // 2 or 1),
        max_position_embeddings=256,
        **kw,
    )
    cfg.quantization_config = dict(GPT_OSS_QUANT_CFG)
    return cfg


def random_moe_weights(cfg, seed=0) -> dict:
    """gpt-oss checkpoint tensors (published layout) for every MoE block."""
    g = torch.Generator().manual_seed(seed)
    e, h, i = cfg.num_local_experts, cfg.hidden_size, cfg.intermediate_size
    w = {}
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}.mlp."
        w[p + "experts.gate_up_proj_blocks"] = torch.randint(0, 256, (e, 2 * i, h // 32, 16), dtype=torch.uint8, generator=g)
        w[p + "experts.gate_up_proj_scales"] = torch.randint(119, 128, (e, 2 * i, h // 32), dtype=torch.uint8, generator=g)
        w[p + "experts.gate_up_proj_bias"] = (torch.randn(e, 2 * i, generator=g) * 0.5).bfloat16()
        w[p + "experts.down_proj_blocks"] = torch.randint(0, 256, (e, h, i // 32, 16), dtype=torch.uint8, generator=g)
        w[p + "experts.down_proj_scales"] = torch.randint(119, 128, (e, h, i // 32), dtype=torch.uint8, generator=g)
        w[p + "experts.down_proj_bias"] = (torch.randn(e, h, generator=g) * 0.5).bfloat16()
        w[p + "router.weight"] = (torch.randn(e, h, generator=g) * 0.3).bfloat16()
        w[p + "router.bias"] = (torch.randn(e, generator=g) * 0.3).bfloat16()
    return w


def ensure_dp_attention_state(rank: int = 0) -> None:
    """Releases before the runtime context (e.g. 0.5.16) read the attention-DP
    size from module globals the model runner sets: no DP attention here."""
    try:
        dpa = importlib.import_module("sglang.srt.layers.dp_attention")
    except ImportError:
        return
    for name, value in (("_ATTN_DP_SIZE", 1), ("_ATTN_DP_RANK", 0)):
        if getattr(dpa, name, 0) is None:
            setattr(dpa, name, value)


def build_gpt_oss(cfg, quant_cfg=None):
    gpt_oss = need_gpt_oss()
    ensure_dp_attention_state()
    qc = mx_mod().PetitMxfp4Config.from_config(dict(quant_cfg or cfg.quantization_config))
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = gpt_oss.GptOssForCausalLM(cfg, quant_config=qc)
    finally:
        torch.set_default_dtype(old)
    return model, qc


def load_and_postprocess(model, weights: dict) -> None:
    # Older gpt-oss loaders (0.5.9) move each expert tensor with .cuda(): on a
    # CPU box it stays where it is.
    cuda = torch.Tensor.cuda
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        model.load_weights(list(weights.items()))
    finally:
        torch.Tensor.cuda = cuda
    for _, module in model.named_modules():
        qm = getattr(module, "quant_method", None)
        if qm is not None and hasattr(qm, "process_weights_after_loading"):
            qm.process_weights_after_loading(module)


def count_moe_calls(monkeypatch):
    pk = petit_kernel()
    calls = []
    real = pk.fused_moe_bf16_mxfp4

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(pk, "fused_moe_bf16_mxfp4", counting)
    return calls


def assert_close(out: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    # Weights are exact in BF16; the kernel accumulates in FP32 and rounds the
    # SwiGLU output and the result to BF16 (2^-8 each, relative).
    err = (out.float() - ref).abs().max().item()
    bound = 2e-2 * ref.abs().max().item() + 1e-2
    assert err <= bound, f"{what}: max |err| {err:.4g} > {bound:.4g}"


# ------------------------------------------------------------------ routing


@pytest.mark.parametrize("tokens,top_k,experts", [(1, 2, 4), (5, 2, 4), (70, 4, 8), (3, 4, 32)])
def test_routing_matches_reference(tokens, top_k, experts):
    mm, ref = moe_mod(), moe_ref()
    g = torch.Generator().manual_seed(tokens)
    ids = torch.stack([torch.randperm(experts, generator=g)[:top_k] for _ in range(tokens)])
    if tokens > 40:  # more than one 32-route block for expert 0
        ids[:, 0] = 0
    wts = torch.rand(tokens, top_k, generator=g)
    ours = mm.build_petit_moe_routing(ids.to(torch.int32), wts, experts)
    canon = ref.build_sorted_routing(ids, wts, experts)
    for name, a, b in zip(("sorted_token_ids", "sorted_weights", "sorted_expert_ids", "num_valid_ids"), ours, canon):
        assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, a.shape, b.dtype, b.shape)
    assert torch.equal(ours[3], canon[3])
    assert torch.equal(ours[2], canon[2])
    assert ref.decode_sorted_routing(*ours, tokens) == ref.decode_sorted_routing(*canon, tokens)
    # Padding entries inside the valid range: Petit's sentinel, weight 0.
    n = int(canon[3][0])
    pad = (ours[0][:n] == ((top_k << 24) | tokens))
    assert torch.all(ours[1][:n][pad] == 0)
    assert int(pad.sum()) + tokens * top_k == n


def test_routing_has_no_host_sync():
    """No .item()/.tolist()/host copies in the forward: the routing traces
    on fake tensors (make_fx, tracing_mode="fake"), where any data-dependent
    Python value raises, and the traced graph reproduces the eager result."""
    mm = moe_mod()
    from torch.fx.experimental.proxy_tensor import make_fx

    ids = torch.tensor([[1, 3], [3, 0], [2, 1]], dtype=torch.int32)
    wts = torch.rand(3, 2)
    gm = make_fx(lambda i, w: mm.build_petit_moe_routing(i, w, 4), tracing_mode="fake")(ids, wts)
    for a, b in zip(gm(ids, wts), mm.build_petit_moe_routing(ids, wts, 4)):
        assert torch.equal(a, b)


# ------------------------------------------------------------------ model level


@pytest.mark.parametrize("hidden,inter", [(160, 96), (256, 256)])
def test_gpt_oss_moe_blocks_match_reference(monkeypatch, hidden, inter):
    need_moe_kernel()
    ref = moe_ref()
    cfg = tiny_hf_config(hidden=hidden, inter=inter)
    model, qc = build_gpt_oss(cfg)
    assert isinstance(qc, mx_mod().PetitMxfp4Config)
    mm = moe_mod()
    unq = importlib.import_module(f"{QUANT}.unquant").UnquantizedLinearMethod
    for layer in model.model.layers:
        assert isinstance(layer.mlp.experts.quant_method, mm.PetitMxfp4MoEMethod)
        # attention stays BF16 as the checkpoint has it
        assert isinstance(layer.self_attn.qkv_proj.quant_method, unq)
        assert isinstance(layer.self_attn.o_proj.quant_method, unq)
    weights = random_moe_weights(cfg)
    load_and_postprocess(model, weights)
    calls = count_moe_calls(monkeypatch)
    g = torch.Generator().manual_seed(1)
    for li, layer in enumerate(model.model.layers):
        p = f"model.layers.{li}.mlp."
        experts = {k[len(p) + len("experts.") :]: v for k, v in weights.items() if k.startswith(p + "experts.")}
        for tokens in (1, 7, 40):
            x = torch.randn(tokens, hidden, generator=g).bfloat16()
            n0 = len(calls)
            out = layer.mlp(x)
            assert len(calls) == n0 + 1, f"layer {li}: {len(calls) - n0} Petit MoE calls in one forward"
            assert out.shape == (tokens, hidden) and out.dtype == torch.bfloat16
            want = ref.moe_forward(x, weights[p + "router.weight"], weights[p + "router.bias"], experts, cfg.num_experts_per_tok)
            assert_close(out, want, f"layer {li}, {tokens} tokens")


def test_gpt_oss_override_and_model_config(rocm, monkeypatch, tmp_path):
    """--quantization petit_mxfp4 claims a gpt-oss checkpoint on ROCm; without
    the flag nothing changes (our override does not answer)."""
    moe_mod()
    cfg = dict(GPT_OSS_QUANT_CFG)
    assert mx_mod().PetitMxfp4Config.override_quantization_method(cfg, "petit_mxfp4") == "petit_mxfp4"
    assert mx_mod().PetitMxfp4Config.override_quantization_method(cfg, None) is None
    assert mx_mod().PetitMxfp4Config.override_quantization_method(cfg, "mxfp4") is None
    assert sgl_cpu.verify_quantization(monkeypatch, tmp_path, cfg, "petit_mxfp4") == "petit_mxfp4"
    assert sgl_cpu.verify_quantization(monkeypatch, tmp_path, cfg, None) != "petit_mxfp4"


# ------------------------------------------------------------------ refusals


def test_refuses_petit_kernel_without_moe(monkeypatch):
    moe_mod()
    pk = petit_kernel()
    monkeypatch.delattr(pk, "fused_moe_bf16_mxfp4", raising=False)
    with pytest.raises(ValueError, match=r"petit-kernel>=0\.0\.5"):
        mx_mod().PetitMxfp4Config.from_config(dict(GPT_OSS_QUANT_CFG))


def test_refuses_old_petit_kernel(monkeypatch):
    moe_mod()
    monkeypatch.setattr(petit_kernel(), "__version__", "0.0.4")
    with pytest.raises(ValueError, match=r"petit-kernel>=0\.0\.5.*found 0\.0\.4"):
        mx_mod().PetitMxfp4Config.from_config(dict(GPT_OSS_QUANT_CFG))


@pytest.mark.parametrize("arch,match", [("gfx1100", "does not support gfx1100"), (None, "requires an AMD GPU")])
def test_refuses_unsupported_gpu(monkeypatch, arch, match):
    moe_mod()
    pu = importlib.import_module(f"{QUANT}.petit_utils")
    monkeypatch.setattr(pu, "get_petit_gpu_arch", lambda *a, **k: arch)
    with pytest.raises(ValueError, match=match):
        mx_mod().PetitMxfp4Config.from_config(dict(GPT_OSS_QUANT_CFG))


def test_refuses_triton_backend_for_moe(monkeypatch):
    moe_mod()
    monkeypatch.setenv("SGLANG_PETIT_MXFP4_BACKEND", "triton")
    with pytest.raises(ValueError, match="Petit only"):
        mx_mod().PetitMxfp4Config.from_config(dict(GPT_OSS_QUANT_CFG))


def test_refuses_unknown_backend_for_moe(rocm, monkeypatch):
    """The variable is checked as for dense checkpoints, not read as auto."""
    moe_mod()
    monkeypatch.setenv("SGLANG_PETIT_MXFP4_BACKEND", "cuda")
    with pytest.raises(ValueError, match="'cuda' is not one of auto, petit, triton"):
        mx_mod().PetitMxfp4Config.from_config(dict(GPT_OSS_QUANT_CFG))


def _bare_layer(tp=1, ep=1):
    layer = torch.nn.Module()
    layer.moe_tp_size, layer.moe_ep_size = tp, ep
    return layer


def test_refuses_fp16():
    mm = moe_mod()
    with pytest.raises(ValueError, match="bfloat16"):
        mm.PetitMxfp4MoEMethod("m").create_weights(_bare_layer(), 4, 256, 256, torch.float16)


@pytest.mark.parametrize(
    "hidden,inter,tp,ep,match",
    [
        (16384, 256, 1, 1, "up to 16320"),  # dim / 64 must fit Petit's 8-bit shape field
        (2880, 2880 * 2 // 2, 1, 1, None),  # gpt-oss: padded to 3072, accepted
        (2880, 1440, 2, 1, None),  # gpt-oss at TP=2
        (2880, 360, 8, 1, None),  # gpt-oss at TP=8: 384 loaded rows -> 512
        (100, 256, 1, 1, "divisible by 32"),
        (256, 256, 1, 2, "expert parallelism"),
    ],
)
def test_shape_rules(hidden, inter, tp, ep, match):
    mm = moe_mod()
    method = mm.PetitMxfp4MoEMethod("model.layers.0.mlp.experts")
    layer = _bare_layer(tp, ep)
    if match is None:
        method.create_weights(layer, 1, hidden, inter, torch.bfloat16)
        assert method.padded_hidden_size % 256 == 0 and method.padded_hidden_size >= hidden
        assert method.padded_intermediate_size % 256 == 0 and method.padded_intermediate_size >= inter
        assert layer.w13_weight.shape == (1, 2 * method.padded_intermediate_size, method.padded_hidden_size // 2)
        return
    with pytest.raises(ValueError, match=match):
        method.create_weights(layer, 1, hidden, inter, torch.bfloat16)


@pytest.mark.parametrize("kw", [{"swiglu_limit": 5.0}])
def test_refuses_other_swiglu_limit(kw):
    need_moe_kernel()
    cfg = tiny_hf_config(**kw)
    with pytest.raises(ValueError, match="limit=7.0"):
        build_gpt_oss(cfg)


def test_refuses_other_swiglu_alpha():
    mm = moe_mod()
    with pytest.raises(ValueError, match="alpha=1.702"):
        mm.verify_petit_swiglu("x", 1.5, 7.0)
    with pytest.raises(ValueError, match="alpha=1.702"):
        mm.verify_petit_swiglu("x", None, None)  # plain SiLU MoE
    mm.verify_petit_swiglu("x", 1.702, 7.0)


@pytest.mark.parametrize("exporter", ["quark", "modelopt"])
def test_refuses_silu_mxfp4_moe_from_quark_or_modelopt(exporter):
    """Petit's only BF16 x MXFP4 fused-MoE solution reachable from Python is
    OpenAI SwiGLU; Quark/ModelOpt MXFP4 MoE (SiLU) layers are refused."""
    moe_mod()
    need_gpt_oss()
    from sglang.srt.layers.moe.fused_moe_triton import FusedMoE

    import mxfp4_ref as mx

    raw = mx.quark_mxfp4_config() if exporter == "quark" else mx.modelopt_mxfp4_flat()
    qc = mx_mod().PetitMxfp4Config.from_config(raw)
    with pytest.raises(NotImplementedError, match="gpt-oss"):
        qc.get_quant_method(FusedMoE.__new__(FusedMoE), "model.layers.0.mlp.experts")


# ------------------------------------------------------------------ TP=2


@pytest.mark.slow
@pytest.mark.parametrize("check", ["inter192", "inter160"])
def test_gpt_oss_moe_tp2(check, tmp_path_factory):
    """TP=2 over two CPU processes (gloo): SGLang's loader shards the
    intermediate dim; the all-reduced MoE output matches moe_ref."""
    need_moe_kernel()
    moe_ref()
    need_gpt_oss()
    res = _tp2_results(tmp_path_factory)
    errs = {r: d.get(check, "missing") for r, d in res.items() if d.get(check) != "ok"}
    assert not errs, "\n".join(f"rank {r}: {e}" for r, e in errs.items())


_TP2 = {}


def _tp2_results(tmp_path_factory):
    if "res" not in _TP2:
        import json

        import torch.multiprocessing as mp

        import moe_tp2_worker

        out = tmp_path_factory.mktemp("moe_tp2")
        mp.spawn(moe_tp2_worker.worker, args=(2, sgl_cpu.free_port(), str(out)), nprocs=2, join=True)
        _TP2["res"] = {r: json.loads((out / f"rank{r}.json").read_text()) for r in range(2)}
        for r, d in _TP2["res"].items():
            if "setup" in d:
                pytest.fail(f"rank {r} setup failed: {d['setup']}")
    return _TP2["res"]


# ------------------------------------------------------------------ method level (CPU + real GPU)


def _method_layer(hidden, inter, experts, weights, device):
    """PetitMxfp4MoEMethod on a bare module: weights fed to its parameters'
    own weight_loader the way SGLang's gpt-oss loader does at TP=1."""
    import types

    mm = moe_mod()
    method = mm.PetitMxfp4MoEMethod("model.layers.0.mlp.experts")
    layer = torch.nn.Module()
    layer.moe_tp_size, layer.moe_ep_size = 1, 1
    with torch.device(device):
        method.create_weights(layer, experts, hidden, inter, torch.bfloat16)
    names = {
        "gate_up_proj_blocks": "w13_weight",
        "gate_up_proj_scales": "w13_weight_scale",
        "gate_up_proj_bias": "w13_weight_bias",
        "down_proj_blocks": "w2_weight",
        "down_proj_scales": "w2_weight_scale",
        "down_proj_bias": "w2_weight_bias",
    }
    for ckpt, param_name in names.items():
        t = weights[ckpt]
        if ckpt.endswith("_blocks"):
            t = t.reshape(t.shape[0], t.shape[1], -1)
        param = getattr(layer, param_name)
        param.weight_loader(param, t.to(device), weight_name=param_name, shard_id=None, expert_id=None)
    method.create_moe_runner(
        layer,
        types.SimpleNamespace(
            apply_router_weight_on_input=False, gemm1_alpha=1.702, gemm1_clamp_limit=7.0, swiglu_limit=None, routed_scaling_factor=None
        ),
    )
    method.process_weights_after_loading(layer)
    return method, layer


def _expert_weights(hidden, inter, experts, seed):
    cfg = tiny_hf_config(hidden=hidden, inter=inter, experts=experts, layers=1)
    w = random_moe_weights(cfg, seed=seed)
    p = "model.layers.0.mlp.experts."
    return {k[len(p) :]: v for k, v in w.items() if k.startswith(p)}


def _method_case(device, hidden, inter, experts, top_k, tokens, zero_gate_up=False):
    import types

    need_gpt_oss()  # apply() returns SGLang's StandardCombineInput
    ref = moe_ref()
    weights = _expert_weights(hidden, inter, experts, seed=hidden + inter)
    if zero_gate_up:
        # gate/up = their biases: the output is dominated by both biases' layouts.
        weights["gate_up_proj_blocks"] = torch.zeros_like(weights["gate_up_proj_blocks"])
    method, layer = _method_layer(hidden, inter, experts, weights, device)
    g = torch.Generator().manual_seed(tokens)
    x = torch.randn(tokens, hidden, generator=g).bfloat16()
    logits = torch.randn(tokens, experts, generator=g)
    topk_w, topk_ids = ref.route(logits, top_k)
    out = method.apply(
        layer,
        types.SimpleNamespace(hidden_states=x.to(device), topk_output=(topk_w.to(device), topk_ids.to(torch.int32).to(device), None)),
    ).hidden_states
    w13 = ref.dequantize_experts(weights["gate_up_proj_blocks"], weights["gate_up_proj_scales"])
    w2 = ref.dequantize_experts(weights["down_proj_blocks"], weights["down_proj_scales"])
    want = ref.experts_forward(x, topk_ids, topk_w, w13, weights["gate_up_proj_bias"], w2, weights["down_proj_bias"])
    assert out.shape == (tokens, hidden) and out.dtype == torch.bfloat16
    assert_close(out.cpu(), want, f"{hidden}x{inter}, E={experts}, k={top_k}, {tokens} tokens on {device}")


METHOD_CASES = [(160, 96, 4, 2, 5), (512, 256, 8, 4, 33), (2880, 2880, 2, 2, 3)]  # last: gpt-oss sizes, padded to 3072


@pytest.mark.parametrize("hidden,inter,experts,top_k,tokens", METHOD_CASES)
def test_method_matches_reference(device, hidden, inter, experts, top_k, tokens):
    need_moe_kernel()
    _method_case(device, hidden, inter, experts, top_k, tokens)


@pytest.mark.parametrize("hidden,inter", [(160, 96), (512, 256)])
def test_method_biases_match_reference(device, hidden, inter):
    need_moe_kernel()
    _method_case(device, hidden, inter, 4, 2, 9, zero_gate_up=True)


@pytest.mark.rocm
@pytest.mark.parametrize("zero_gate_up", [False, True], ids=["weights", "biases"])
@pytest.mark.parametrize("hidden,inter,experts,top_k,tokens", METHOD_CASES + [(2880, 2880, 32, 4, 64)])
def test_real_kernel_method_matches_reference(device, hidden, inter, experts, top_k, tokens, zero_gate_up):
    """On a ROCm GPU with the real petit-kernel: the layouts (native_mxfp4
    weights and scales, the bias permutation), the sorted-token inputs and the
    padding are all checked against moe_ref."""
    need_moe_kernel()
    _method_case(device, hidden, inter, experts, top_k, tokens, zero_gate_up)


# ------------------------------------------------------------------ from the tiny checkpoint


def _tiny_checkpoint(tmp_path, **sizes):
    import sys

    sys.path.insert(0, str(sgl_cpu.HERE / "checkpoints"))
    try:
        gpt_oss_tiny = importlib.import_module("gpt_oss_tiny")
    except ImportError as e:
        pytest.skip(f"checkpoints/gpt_oss_tiny.py missing: {e}")
    return gpt_oss_tiny, gpt_oss_tiny.write_gpt_oss_tiny(tmp_path / "gpt_oss_tiny", seed=3, **sizes)


@pytest.mark.parametrize("sizes", [{}, {"hidden_size": 256, "intermediate_size": 256}], ids=["padded", "aligned"])
def test_gpt_oss_from_tiny_checkpoint(monkeypatch, tmp_path, sizes):
    """The tiny checkpoint in the published gpt-oss layout (config.json with
    its quantization_config, one model.safetensors), every tensor through
    SGLang's own load_weights; each MoE block vs moe_ref from the file's
    tensors, one Petit MoE call per forward; attention loaded in BF16."""
    need_moe_kernel()
    ref = moe_ref()
    tiny, path = _tiny_checkpoint(tmp_path, **sizes)
    from safetensors.torch import load_file
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(path))
    assert cfg.quantization_config["quant_method"] == "mxfp4"
    assert mx_mod().PetitMxfp4Config.override_quantization_method(cfg.quantization_config, "petit_mxfp4") == "petit_mxfp4"
    model, _ = build_gpt_oss(cfg)
    tensors = load_file(str(path / "model.safetensors"))
    load_and_postprocess(model, tensors)
    q = tensors["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(model.model.layers[0].self_attn.qkv_proj.weight[: q.shape[0]], q)
    calls = count_moe_calls(monkeypatch)
    g = torch.Generator().manual_seed(7)
    for li, layer in enumerate(model.model.layers):
        x = torch.randn(6, cfg.hidden_size, generator=g).bfloat16()
        n0 = len(calls)
        out = layer.mlp(x)
        assert len(calls) == n0 + 1
        rw, rb = tiny.load_router(path, li)
        want = ref.moe_forward(x, rw, rb, tiny.load_expert_tensors(path, li), cfg.num_experts_per_tok)
        assert_close(out, want, f"tiny checkpoint layer {li}")


def test_gpt_oss_tiny_checkpoint_other_swiglu_limit_refused(tmp_path):
    need_moe_kernel()
    _, path = _tiny_checkpoint(tmp_path, swiglu_limit=9.0)
    from transformers import AutoConfig

    with pytest.raises(ValueError, match="limit=7.0"):
        build_gpt_oss(AutoConfig.from_pretrained(str(path)))
