"""Version-tolerant helpers to run SGLang's model code on a CPU in tests.

Covers the per-release differences seen between SGLang 0.5.9/0.5.10 and 0.5.23
(see docs/sglang-on-cpu.md):

* server args are published with ``set_global_server_args_for_scheduler`` up to
  ~0.5.2x and with ``runtime_context.publish(..., ranks=SpawnRanks(...))`` later;
* ``initialize_model_parallel(tensor_model_parallel_size=...)`` (old) versus
  ``initialize_model_parallel()`` reading the published widths (new);
* ``RotaryEmbedding`` imports ``vllm._custom_ops`` on an unknown platform: a
  stand-in module is installed (it raises if the op is actually called).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import socket
import sys
import types
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
REF_KERNEL_DIR = HERE / "petit_kernel_ref"
TREE = os.environ.get("SGLANG_PETIT_TREE", "")
VERSION = os.environ.get("SGLANG_PETIT_VERSION", "")
CHECKPOINTS = Path(os.environ.get("SGLANG_PETIT_CHECKPOINTS", HERE.parents[1] / "build" / "checkpoints"))
FAKE_ARCH = "gfx942"


def version_tuple(v: Optional[str] = None) -> tuple:
    v = v or VERSION
    if not v:
        try:
            from importlib.metadata import version

            v = version("sglang")
        except Exception:
            return ()
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


# --------------------------------------------------------------------------
# petit_kernel: real (ROCm GPU) or the CPU reference
# --------------------------------------------------------------------------


def rocm_gpu_available() -> bool:
    try:
        import torch

        return bool(getattr(torch.version, "hip", None)) and torch.cuda.is_available()
    except Exception:
        return False


def real_petit_importable() -> bool:
    spec = importlib.util.find_spec("petit_kernel")
    if spec is None or spec.origin is None:
        return False
    return not Path(spec.origin).resolve().is_relative_to(REF_KERNEL_DIR)


REAL_PETIT = None  # the real petit_kernel module when it can run here


def select_petit_kernel() -> str:
    """Called at conftest import time, before anything imports sglang.

    The CPU reference always becomes ``sys.modules["petit_kernel"]`` (the
    CPU tests need it).  When a real petit_kernel can run (ROCm GPU present
    and the package importable) its module object is kept in REAL_PETIT and
    conftest swaps it in for the tests marked ``rocm``; returns "real" then,
    else "reference".  SGLANG_PETIT_FORCE_REFERENCE=1 ignores the real one."""
    global REAL_PETIT
    mode = "reference"
    force_ref = os.environ.get("SGLANG_PETIT_FORCE_REFERENCE") == "1"
    if not force_ref and rocm_gpu_available() and real_petit_importable():
        REAL_PETIT = importlib.import_module("petit_kernel")
        mode = "real"
    sys.modules.pop("petit_kernel", None)
    if str(REF_KERNEL_DIR) not in sys.path:
        sys.path.insert(0, str(REF_KERNEL_DIR))
    import petit_kernel

    assert getattr(petit_kernel, "IS_REFERENCE", False), petit_kernel.__file__
    # Make sure child processes (TP=2 spawn) find the reference too.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REF_KERNEL_DIR), str(HERE), os.environ.get("PYTHONPATH", "")]))
    return mode


# --------------------------------------------------------------------------
# stand-ins
# --------------------------------------------------------------------------


def install_vllm_stub() -> None:
    """``RotaryEmbedding.__init__`` does ``from vllm._custom_ops import
    rotary_embedding`` on platforms it does not know.  Tests never run the
    rotary op, so a stand-in that raises if called is enough."""
    if "vllm" in sys.modules or importlib.util.find_spec("vllm") is not None:
        return
    vllm = types.ModuleType("vllm")
    ops = types.ModuleType("vllm._custom_ops")

    def rotary_embedding(*a, **k):
        raise RuntimeError("vllm stand-in: rotary_embedding is not available in CPU tests")

    ops.rotary_embedding = rotary_embedding
    vllm._custom_ops = ops
    vllm.__path__ = []  # a package, so submodule imports resolve to our stub
    sys.modules["vllm"] = vllm
    sys.modules["vllm._custom_ops"] = ops


# --------------------------------------------------------------------------
# server args / distributed
# --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_server_args(tp_size: int = 1, model_path: Optional[str] = None, **kw):
    from sglang.srt.server_args import ServerArgs

    model_path = model_path or str(HERE / "checkpoints" / "dummy_model")
    fields = {f for f in inspect.signature(ServerArgs).parameters}
    args = dict(model_path=model_path, device="cpu", tp_size=tp_size)
    args.update(kw)
    args = {k: v for k, v in args.items() if k in fields}
    return ServerArgs(**args)


def publish_server_args(server_args, rank: int = 0) -> None:
    try:
        from sglang.srt import runtime_context as rc  # 0.5.2x
    except ImportError:
        rc = None
    if rc is not None and hasattr(rc, "publish") and hasattr(rc, "SpawnRanks"):
        rc.publish(server_args, role="scheduler", ranks=rc.SpawnRanks(world_rank=rank, dp_rank=None, gpu_id=None))
        return
    from sglang.srt import server_args as sa

    if hasattr(sa, "set_global_server_args_for_scheduler"):
        sa.set_global_server_args_for_scheduler(server_args)
    else:  # pragma: no cover - very old releases
        from sglang.srt.managers import schedule_batch

        schedule_batch.global_server_args_dict.update(vars(server_args))


def init_parallel(rank: int = 0, world_size: int = 1, port: Optional[int] = None, model_path: Optional[str] = None) -> None:
    """gloo process group + SGLang model-parallel groups with TP = world_size."""
    import torch.distributed as dist
    from sglang.srt.distributed import parallel_state as ps

    publish_server_args(make_server_args(tp_size=world_size, model_path=model_path), rank=rank)
    if not dist.is_initialized() or getattr(ps, "_WORLD", None) is None:
        port = port or free_port()
        ps.init_distributed_environment(
            world_size=world_size,
            rank=rank,
            distributed_init_method=f"tcp://127.0.0.1:{port}",
            local_rank=rank,
            backend="gloo",
        )
    if ps.model_parallel_is_initialized():
        return
    if world_size > 1:
        _cpu_only_group_communicators(ps)
    params = inspect.signature(ps.initialize_model_parallel).parameters
    if "tensor_model_parallel_size" in params:
        ps.initialize_model_parallel(tensor_model_parallel_size=world_size, backend="gloo")
    else:
        ps.initialize_model_parallel(backend="gloo")


def _cpu_only_group_communicators(ps) -> None:
    """On a CPU box the TP group must not build pynccl / custom all-reduce
    communicators (they need CUDA devices); gloo does the collectives."""
    if getattr(ps.init_model_parallel_group, "_petit_cpu", False):
        return
    orig = ps.init_model_parallel_group
    params = inspect.signature(orig).parameters
    off = [k for k in ("use_pynccl", "use_custom_allreduce", "use_mscclpp_allreduce", "use_torch_symm_mem_allreduce", "use_message_queue_broadcaster") if k in params]

    def patched(*a, **kw):
        for k in off:
            kw[k] = False
        return orig(*a, **kw)

    patched._petit_cpu = True
    ps.init_model_parallel_group = patched
    if hasattr(ps, "set_custom_all_reduce"):
        ps.set_custom_all_reduce(False)


def run_tp_worker(rank: int, world: int, port: int, out_dir: str, checks) -> None:
    """Body of a TP worker process: emulated ROCm with the reference kernel, a gloo
    group of `world`, then `checks(rank, world)` -> {name: "ok" | error}, written to
    `<out_dir>/rank<rank>.json` (a setup failure is reported as "setup")."""
    import json
    import traceback

    res = {}
    try:
        select_petit_kernel()
        install_vllm_stub()
        import torch

        torch.set_num_threads(1)
        init_parallel(rank=rank, world_size=world, port=port)
        pu = importlib.import_module("sglang.srt.layers.quantization.petit_utils")
        pu.get_petit_gpu_arch = lambda *a, **k: FAKE_ARCH
        res = checks(rank, world)
    except BaseException as e:  # noqa: BLE001
        res["setup"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}"
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(res, indent=1))
    try:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    except Exception:
        pass


def tp_rank_size():
    from sglang.srt.distributed import get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size

    return get_tensor_model_parallel_rank(), get_tensor_model_parallel_world_size()


# --------------------------------------------------------------------------
# patched-code discovery
# --------------------------------------------------------------------------


def module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def has_petit_mxfp4() -> bool:
    return module_available("sglang.srt.layers.quantization.petit_mxfp4")


STUBBED: list = []


def ensure_fused_moe_importable() -> None:
    """Quant configs (upstream quark, and petit_mxfp4) import
    ``sglang.srt.layers.moe.fused_moe_triton`` lazily inside get_quant_method()
    for non-linear layers.  On a CPU box that import chain ends in
    ``sgl_kernel`` (mem_cache/memory_pool_host.py), which is CUDA/ROCm-only.
    If it cannot be imported here, register a stand-in module whose FusedMoE
    class nothing is an instance of (the tiny Llama has no MoE layers)."""
    name = "sglang.srt.layers.moe.fused_moe_triton"
    try:
        importlib.import_module(name)
        return
    except ImportError as e:
        reason = f"{type(e).__name__}: {e}"
        if isinstance(e, ModuleNotFoundError) and e.name == "sgl_kernel":
            try:
                import_with_kvcacheio_stand_in(name)
                return
            except ImportError as e2:
                reason += f"; with a kvcacheio stand-in: {type(e2).__name__}: {e2}"
    for mod in list(sys.modules):
        if mod == name or mod.startswith(name + "."):
            sys.modules.pop(mod, None)
    stub = types.ModuleType(name)

    class FusedMoE:  # noqa: D401 - placeholder type
        """CPU-test stand-in: no layer is a FusedMoE."""

    stub.FusedMoE = FusedMoE
    stub.__path__ = []
    layer_mod = types.ModuleType(name + ".layer")
    layer_mod.FusedMoE = FusedMoE
    stub.layer = layer_mod
    sys.modules[name] = stub
    sys.modules[name + ".layer"] = layer_mod
    STUBBED.append(f"{name} ({reason})")


def import_with_kvcacheio_stand_in(*names: str):
    """Import SGLang modules whose import chain needs ``sgl_kernel.kvcacheio``
    (KV-cache host transfers, CUDA/ROCm only; e.g. 0.5.9's
    mem_cache/memory_pool_host.py on the way to FusedMoE) with a stand-in of
    that one module, whose functions raise if called.  The stand-in is taken
    out of sys.modules again afterwards, so later imports of sgl_kernel fail
    as before.  Returns the last module imported."""
    pkg = types.ModuleType("sgl_kernel")
    pkg.__path__ = []
    kv = types.ModuleType("sgl_kernel.kvcacheio")

    def missing(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)

        def unavailable(*args, **kwargs):
            raise RuntimeError(f"sgl_kernel.kvcacheio.{attr}: CPU test stand-in")

        return unavailable

    kv.__getattr__ = missing
    pkg.kvcacheio = kv
    sys.modules["sgl_kernel"], sys.modules["sgl_kernel.kvcacheio"] = pkg, kv
    module = None
    try:
        for name in names:
            module = importlib.import_module(name)
    finally:
        for name in ("sgl_kernel.kvcacheio", "sgl_kernel"):
            if sys.modules.get(name) in (pkg, kv):
                del sys.modules[name]
    note = "sgl_kernel.kvcacheio (only while importing SGLang's FusedMoE)"
    if note not in STUBBED:
        STUBBED.append(note)
    return module


def verify_quantization(monkeypatch, model_path, quant_cfg, user):
    """Run the real ``ModelConfig._verify_quantization`` with is_hip() faked
    True, on a bare ModelConfig carrying ``quant_cfg`` as its HF
    quantization_config.  Returns the resolved ``quantization``, or
    "rejected: <message>" when it raises ValueError."""
    import copy

    import pytest

    mc_mod = importlib.import_module("sglang.srt.configs.model_config")
    monkeypatch.setattr(mc_mod, "is_hip", lambda: True)
    mc = mc_mod.ModelConfig.__new__(mc_mod.ModelConfig)
    mc.quantization = user
    mc.is_draft_model = False
    mc.model_path = str(model_path)
    mc.hf_config = types.SimpleNamespace(quantization_config=copy.deepcopy(quant_cfg))
    mc.hf_text_config = mc.hf_config
    mc.preserve_online_draft_quantization = False
    try:
        mc._verify_quantization()
    except AttributeError as e:  # internals of a newer release we do not emulate
        pytest.skip(f"ModelConfig internals differ in this release: {e}")
    except ValueError as e:
        return f"rejected: {e}"
    return mc.quantization


def build_llama(hf_config, quant_config):
    """SGLang's LlamaForCausalLM, built under a BF16 default dtype as the model runner does."""
    import torch
    from sglang.srt.models.llama import LlamaForCausalLM

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        return LlamaForCausalLM(hf_config, quant_config=quant_config)
    finally:
        torch.set_default_dtype(old)
