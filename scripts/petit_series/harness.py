"""CPU test harness for the sglang-petit patch series.

Builds cached virtual environments in which a *patched* SGLang source tree
(upstream layout: ``<tree>/python/sglang/...``) can be imported and tested on a
machine without a GPU, then runs ``tests/series`` inside them.

Layout (all under ``build/venv`` by default, override with ``--root``)::

    base/               torch==2.14.1 + torchvision==0.29.1 (CUDA build, runs
                        on CPU), numpy, pytest, safetensors.  Shared, ~6 GiB.
    sglang-<V>/         one per release.  Its site-packages holds only the
                        release's own ``sglang==<V>`` (installed --no-deps) and
                        the small runtime deps it needs to import the modules
                        under test (pins taken from the release's METADATA).
                        Two .pth files make it work:
                          _petit_base.pth  -> appends base's site-packages
                                              (nothing is copied)
                          _petit_tree.pth  -> puts <tree>/python FIRST on
                                              sys.path, so the patched sources
                                              shadow the installed package.
                                              $SGLANG_PETIT_TREE overrides the
                                              tree recorded by the last
                                              ``ensure_env``.
    exporters/          torch==2.13.0+cpu, amd-quark==0.13,
                        nvidia-modelopt==0.47.0: runs
                        tests/series/checkpoints/export_tiny.py, which writes
                        tiny real checkpoints to build/checkpoints/<name>/.
    logs/               pip logs of every step.

Every environment carries a stamp (``.petit-harness.json``) with the spec it
was built from; a second call with the same spec only re-checks the stamp and
is a matter of seconds.  A pip failure raises ``HarnessError`` naming the step
and the log file.

Usage (from the repository root)::

    PYTHONPATH=scripts python3 -m petit_series.harness env   --version 0.5.9 --tree /work/dev/sg-0.5.9
    PYTHONPATH=scripts python3 -m petit_series.harness test  --version 0.5.9 --tree /work/dev/sg-0.5.9 [-- -k mxfp4 -x]
    PYTHONPATH=scripts python3 -m petit_series.harness shell --version 0.5.9 --tree /work/dev/sg-0.5.9
    PYTHONPATH=scripts python3 -m petit_series.harness exporters   # build the tiny checkpoints only

Opening a Python shell in the environment
-----------------------------------------
``harness shell`` execs an interactive Python of ``build/venv/sglang-<V>``
with ``SGLANG_PETIT_TREE`` set, after printing which ``sglang`` it imports.
Equivalently, by hand::

    SGLANG_PETIT_TREE=/path/to/tree build/venv/sglang-0.5.9/bin/python

(without the variable, the tree of the last ``env``/``test`` call is used).
Inside, ``import sglang; sglang.__file__`` shows ``<tree>/python/sglang/...``.
To get the reference ``petit_kernel`` too, add
``tests/series/petit_kernel_ref`` to ``PYTHONPATH``.

Environment variables:
  PETIT_HARNESS_PYTHON      interpreter for new venvs (default python3.11; the
                            sglang 0.5.13+ wheels are cp311-only)
  PETIT_HARNESS_FIND_LINKS  extra local wheel dirs for pip (os.pathsep-separated)
  SGLANG_PETIT_CHECKPOINTS  where the tests look for the tiny exports
                            (default build/checkpoints)

Pinned pieces: base torch==2.14.1/torchvision==0.29.1 (also passed as pip
constraints to every release env so no dependency can swap torch); per
release, the METADATA pins of the packages in COMMON_DEPS/VERSIONED_DEPS
(e.g. transformers 4.57.1 for 0.5.9, 5.3.0 for 0.5.10, 5.19.0 for 0.5.23).

The module imports only the standard library (and its own package).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from . import locking, versions

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = REPO / "build" / "venv"
CHECKPOINT_ROOT = REPO / "build" / "checkpoints"
TESTS_DIR = REPO / "tests" / "series"
STAMP = ".petit-harness.json"
HARNESS_REV = 3  # bump to force a rebuild of every env

BASE_REQS = ["torch==2.14.1", "torchvision==0.29.1", "numpy", "pytest", "safetensors"]
# Never let a release's dependency resolution replace the base torch.
BASE_CONSTRAINTS = ["torch==2.14.1", "torchvision==0.29.1"]

# Runtime deps needed to import sglang.srt.layers.{linear,quantization},
# sglang.srt.configs.model_config and sglang.srt.models.llama on CPU.  The
# version specifier comes from the release's own METADATA when it lists the
# package (transformers, openai, compressed-tensors, sentencepiece, ...).
COMMON_DEPS = [
    "aiohttp",
    "compressed-tensors",
    # sglang.test.test_utils, which the series' upstream-style tests import,
    # imports the benchmark datasets.
    "datasets",
    "dill",
    "einops",
    "gguf",
    "ipython",
    "msgspec",
    "openai",
    "orjson",
    "packaging",
    "partial_json_parser",
    "pillow",
    "psutil",
    "pybase64",
    "pydantic",
    "pyzmq",
    "regex",
    "requests",
    "sentencepiece",
    "starlette",
    "tqdm",
    "transformers",
]
# name -> first release (tuple) that needs it
VERSIONED_DEPS = {
    "xgrammar": (0, 5, 16),
    "apache-tvm-ffi": (0, 5, 20),
    "tokenizers": (0, 5, 20),
}
# Packages that come from base and must never be taken from the METADATA pins.
FROM_BASE = {"torch", "torchvision", "numpy", "safetensors", "triton", "pytest"}

VERIFY_MODULES = [
    "sglang.srt.layers.linear",
    "sglang.srt.layers.quantization",
    "sglang.srt.configs.model_config",
    "sglang.srt.models.llama",
]

EXPORTER_REQS = [
    "torch==2.13.0",
    "amd-quark==0.13",
    "nvidia-modelopt==0.47.0",
    "transformers==5.24.0",
    "safetensors",
    "requests",
    "numpy",
]


class HarnessError(RuntimeError):
    """A step of the environment build failed."""


# --------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"[harness] {msg}", file=sys.stderr, flush=True)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _read_stamp(env: Path) -> Optional[dict]:
    try:
        return json.loads((env / STAMP).read_text())
    except (OSError, ValueError):
        return None


def _is_current(env: Path, spec: dict) -> bool:
    """The env exists and was built from exactly ``spec``."""
    stamp = _read_stamp(env)
    return bool(stamp and stamp.get("spec") == _hash(spec) and _venv_python(env).exists())


def _ensure_built(env: Path, spec: dict, lock: Path, build: Callable[[], None]) -> None:
    """Run ``build`` unless ``env`` is current for ``spec``. Builds of one env are
    serialized by ``lock``; a process that waited for it checks again first."""
    if _is_current(env, spec):
        return
    with locking.FileLock(lock, f"the build of {env}", wait=math.inf):
        if not _is_current(env, spec):
            build()


# Free disk space a build needs before it starts (what the finished env takes,
# plus pip's unpacking room); measured on x86_64 with Python 3.11.
BASE_NEED_GIB = 7.0  # torch 2.14.1 (a CUDA build) + torchvision: 5.5 GiB
RELEASE_NEED_GIB = 1.5  # one release's own dependencies: 0.5-0.8 GiB
EXPORTERS_NEED_GIB = 3.0  # torch CPU, Quark, ModelOpt: 1.9 GiB
TOOL_NEED_GIB = 0.5  # a style-tool venv: under 0.1 GiB


def _require_free_space(path: Path, need_gib: float, what: str) -> None:
    """Refuse to start a build that cannot fit: a pip run that fills the disk
    fails late, half-installed, and may starve whatever else shares the disk."""
    probe = Path(path)
    while not probe.exists():
        probe = probe.parent
    free_gib = shutil.disk_usage(probe).free / 2**30
    if free_gib < need_gib:
        raise HarnessError(
            f"building {what} needs about {need_gib:.1f} GiB free under {probe}, "
            f"but {free_gib:.1f} GiB is free; free some space (old clones, build/ "
            "folders of other checkouts) and run again, or set TEST_SERIES=0 to skip "
            "the tests that need it"
        )


def _run_step(step: str, cmd: Sequence[str], log: Path, env: Optional[dict] = None) -> str:
    """Run one build step, teeing output to ``log``; raise HarnessError on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    _log(f"{step}: {' '.join(map(str, cmd))}")
    t0 = time.time()
    proc = subprocess.run(
        [str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    with open(log, "a") as fh:
        fh.write(f"\n===== {step} ({time.strftime('%F %T')}) rc={proc.returncode} {time.time() - t0:.1f}s\n")
        fh.write("$ " + " ".join(map(str, cmd)) + "\n")
        fh.write(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-25:])
        hint = ""
        if "No space left on device" in proc.stdout:
            free_gib = shutil.disk_usage(log.parent).free / 2**30
            hint = f"\nthe disk is full ({free_gib:.1f} GiB free under {log.parent}): free some space and run again"
        raise HarnessError(f"step '{step}' failed (exit {proc.returncode}); full log: {log}\n{tail}{hint}")
    return proc.stdout


def _clean_env(extra: Optional[dict] = None) -> dict:
    env = dict(os.environ)
    for k in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV"):
        env.pop(k, None)
    env["PYTHONNOUSERSITE"] = "1"
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    if extra:
        env.update(extra)
    return env


def _venv_python(env: Path) -> Path:
    return env / "bin" / "python"


def _site_packages(py: Path) -> Path:
    out = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        env=_clean_env(),
    ).stdout.strip()
    return Path(out)


def _pip_extra_args() -> List[str]:
    """Optional local wheel dirs: $PETIT_HARNESS_FIND_LINKS (os.pathsep-separated)."""
    args: List[str] = []
    for d in filter(None, os.environ.get("PETIT_HARNESS_FIND_LINKS", "").split(os.pathsep)):
        args += ["--find-links", d]
    return args


def _base_python() -> str:
    return os.environ.get("PETIT_HARNESS_PYTHON") or shutil.which("python3.11") or sys.executable


def _create_venv(step: str, env: Path, python: str, log: Path) -> None:
    if env.exists():
        shutil.rmtree(env)
    _run_step(step, [python, "-m", "venv", str(env)], log, env=_clean_env())


# --------------------------------------------------------------------------
# base env
# --------------------------------------------------------------------------


def ensure_base(root: Path = DEFAULT_ROOT) -> Path:
    """Create (or reuse) ``root/base``; returns its python."""
    root = Path(root)
    base = root / "base"
    spec = {"rev": HARNESS_REV, "reqs": BASE_REQS}
    _ensure_built(base, spec, root / ".lock-base", lambda: _build_base(base, spec, root))
    return _venv_python(base)


def _build_base(base: Path, spec: dict, root: Path) -> None:
    py = _venv_python(base)
    log = root / "logs" / "base.log"
    t0 = time.time()
    _require_free_space(root, BASE_NEED_GIB, f"the base torch environment ({base})")
    if not py.exists():
        _create_venv("create base venv", base, _base_python(), log)
    cons = base / "petit-constraints.txt"
    cons.write_text("\n".join(BASE_CONSTRAINTS) + "\n")
    _run_step(
        "pip install base (torch/torchvision/numpy/pytest/safetensors)",
        [py, "-m", "pip", "install", *_pip_extra_args(), "-c", cons, *BASE_REQS],
        log,
        env=_clean_env(),
    )
    _run_step(
        "verify base imports",
        [py, "-c", "import torch, torchvision, numpy, pytest, safetensors; print(torch.__version__, torchvision.__version__)"],
        log,
        env=_clean_env(),
    )
    locking.write_atomic(base / STAMP, json.dumps({"spec": _hash(spec), "reqs": BASE_REQS, "built_s": round(time.time() - t0, 1)}))
    _log(f"base env ready in {time.time() - t0:.0f}s")


# --------------------------------------------------------------------------
# per-release env
# --------------------------------------------------------------------------


def _parse_requires(metadata_text: str) -> Dict[str, str]:
    """Requires-Dist lines without an ``extra ==`` marker -> {normalised name: requirement}."""
    reqs: Dict[str, str] = {}
    for line in metadata_text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = line.split(":", 1)[1].strip()
        req, _, marker = req.partition(";")
        if "extra" in marker:
            continue
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$", req)
        if not m:
            continue
        name, spec = m.group(1), m.group(3).strip().strip("()")
        reqs[_norm(name)] = f"{name}{spec}"
    return reqs


def _installed_metadata(site: Path, dist: str, version: str) -> str:
    for d in site.glob("*.dist-info"):
        if _norm(d.name).startswith(_norm(f"{dist}-{version}.dist-info")):
            return (d / "METADATA").read_text(errors="replace")
    raise HarnessError(f"no {dist}-{version}.dist-info in {site}")


def release_requirements(version: str, metadata_text: str) -> List[str]:
    """The runtime deps to install for ``version``, pinned as its METADATA pins them."""
    pins = _parse_requires(metadata_text)
    release = versions.key(version)[:3]
    names = list(COMMON_DEPS) + [n for n, since in VERSIONED_DEPS.items() if release >= since]
    out = []
    for n in names:
        if _norm(n) in FROM_BASE:
            continue
        out.append(pins.get(_norm(n), n))
    return out


def _tree_pth_text(tree: Path) -> str:
    # One line, executed by site.py at startup: the patched tree goes FIRST.
    return (
        "import os, sys; "
        f"_t = os.environ.get('SGLANG_PETIT_TREE') or {str(tree)!r}; "
        "_p = os.path.join(_t, 'python'); "
        "(_p in sys.path) or sys.path.insert(0, _p)\n"
    )


def _check_tree(tree: Path) -> Path:
    tree = Path(tree).resolve()
    if not (tree / "python" / "sglang" / "__init__.py").is_file():
        raise HarnessError(f"{tree} is not an upstream-layout SGLang tree (no python/sglang/__init__.py)")
    return tree


def env_dir(version: str, root: Path = DEFAULT_ROOT) -> Path:
    return Path(root) / f"sglang-{version}"


def ensure_env(version: str, tree: Path, root: Path = DEFAULT_ROOT) -> Path:
    """Build or reuse ``root/sglang-<version>`` for ``tree``; returns its python executable."""
    root = Path(root).resolve()
    tree = _check_tree(tree)
    base_py = ensure_base(root)
    env = env_dir(version, root)
    py = _venv_python(env)
    spec = {"rev": HARNESS_REV, "version": version, "base": BASE_REQS, "deps": COMMON_DEPS, "vdeps": VERSIONED_DEPS}
    _ensure_built(env, spec, root / f".lock-sglang-{version}", lambda: _build_release_env(version, env, base_py, root, spec))
    # (Re)point the tree .pth at this tree (cheap; atomic).
    site = Path((_read_stamp(env) or {}).get("site") or _site_packages(py))
    pth = site / "_petit_tree.pth"
    text = _tree_pth_text(tree)
    if not pth.exists() or pth.read_text() != text:
        locking.write_atomic(pth, text)
    return py


def _build_release_env(version: str, env: Path, base_py: Path, root: Path, spec: dict) -> None:
    log = root / "logs" / f"sglang-{version}.log"
    if log.exists():
        log.unlink()
    t0 = time.time()
    _require_free_space(root, RELEASE_NEED_GIB, f"the sglang-{version} environment ({env})")
    # Same interpreter as base (the shared site-packages holds compiled code).
    _create_venv(f"create venv sglang-{version}", env, str(base_py), log)
    py = _venv_python(env)
    site = _site_packages(py)
    base_site = _site_packages(base_py)
    # Reuse base packages without copying them: appended after our own site-packages.
    (site / "_petit_base.pth").write_text(str(base_site) + "\n")
    cons = env / "petit-constraints.txt"
    cons.write_text("\n".join(BASE_CONSTRAINTS) + "\n")
    pip = [py, "-m", "pip", "install", *_pip_extra_args(), "-c", cons]
    _run_step(f"pip install sglang=={version} --no-deps", pip + ["--no-deps", f"sglang=={version}"], log, env=_clean_env())
    meta = _installed_metadata(site, "sglang", version)
    reqs = release_requirements(version, meta)
    (env / "petit-requirements.txt").write_text("\n".join(reqs) + "\n")
    _run_step(f"pip install runtime deps of sglang {version}", pip + reqs, log, env=_clean_env())
    _run_step(
        f"check torch is still the base one in sglang-{version}",
        [py, "-c", f"import torch, sys; p = torch.__file__; print(p); sys.exit(0 if p.startswith({str(base_site)!r}) else 1)"],
        log,
        env=_clean_env(),
    )
    locking.write_atomic(
        env / STAMP,
        json.dumps(
            {
                "spec": _hash(spec),
                "version": version,
                "site": str(site),
                "base_site": str(base_site),
                "requirements": reqs,
                "built_s": round(time.time() - t0, 1),
            },
            indent=1,
        ),
    )
    _log(f"sglang-{version} env ready in {time.time() - t0:.0f}s")


def verify_env(version: str, tree: Path, root: Path = DEFAULT_ROOT) -> dict:
    """Import the modules under test inside the env; check the tree wins."""
    tree = _check_tree(tree)
    py = ensure_env(version, tree, root)
    code = (
        "import json, importlib, sys, time; t=time.time();\n"
        "import sglang, torch, torchvision\n"
        f"mods = {VERIFY_MODULES!r}\n"
        "for m in mods: importlib.import_module(m)\n"
        "from importlib.metadata import version as v\n"
        "print(json.dumps({'sglang_file': sglang.__file__, 'dist_version': v('sglang'),"
        " 'torch': torch.__version__, 'torchvision': torchvision.__version__,"
        " 'transformers': v('transformers'), 'import_s': round(time.time()-t, 1)}))\n"
    )
    env = _clean_env({"SGLANG_PETIT_TREE": str(tree), "SGLANG_PETIT_VERSION": version})
    log = Path(root) / "logs" / f"sglang-{version}.log"
    out = _run_step(f"verify sglang {version} imports from {tree}", [py, "-c", code], log, env=env)
    info = json.loads(out.strip().splitlines()[-1])
    if not info["sglang_file"].startswith(str(tree / "python")):
        raise HarnessError(f"sglang imported from {info['sglang_file']}, not from {tree}/python")
    return info


# --------------------------------------------------------------------------
# exporters env + tiny checkpoints
# --------------------------------------------------------------------------


def ensure_tool_venv(env: Path, reqs: Sequence[str], log: Path, what: str, need_gib: float = TOOL_NEED_GIB) -> Path:
    """A venv at ``env`` holding ``reqs`` from PyPI, built once (again when ``reqs``
    or HARNESS_REV change; builds serialized by a lock beside it); returns its python.
    The one builder of tool venvs: the exporters here, the style tools of `make pr`."""
    env = Path(env)
    spec = {"rev": HARNESS_REV, "reqs": list(reqs)}

    def build() -> None:
        py = _venv_python(env)
        t0 = time.time()
        _require_free_space(env.parent, need_gib, f"the {what} venv ({env})")
        _create_venv(f"create {what} venv", env, _base_python(), log)
        _run_step(f"pip install {what} ({' '.join(reqs)})", [py, "-m", "pip", "install", *_pip_extra_args(), *reqs], log, env=_clean_env())
        locking.write_atomic(env / STAMP, json.dumps({"spec": _hash(spec), "reqs": list(reqs), "built_s": round(time.time() - t0, 1)}))

    _ensure_built(env, spec, env.parent / f".lock-{env.name}", build)
    return _venv_python(env)


def ensure_exporters(root: Path = DEFAULT_ROOT) -> Path:
    root = Path(root).resolve()
    return ensure_tool_venv(root / "exporters", EXPORTER_REQS, root / "logs" / "exporters.log", "exporters (quark/modelopt/torch cpu)", EXPORTERS_NEED_GIB)


def ensure_checkpoints(root: Path = DEFAULT_ROOT, out: Path = CHECKPOINT_ROOT, names: Iterable[str] = ()) -> int:
    """Build the tiny exports (cached).  Failures are recorded by export_tiny.py
    in ``<out>/<name>.FAILED`` so that tests skip with the reason."""
    try:
        py = ensure_exporters(root)
    except HarnessError as e:
        out.mkdir(parents=True, exist_ok=True)
        (out / "EXPORTERS_ENV.FAILED").write_text(str(e))
        _log(f"exporters env failed; checkpoint tests will skip: {e}")
        return 1
    stale = out / "EXPORTERS_ENV.FAILED"
    if stale.exists():
        stale.unlink()
    cmd = [py, str(TESTS_DIR / "checkpoints" / "export_tiny.py"), "--out", str(out), *names]
    return subprocess.call([str(c) for c in cmd], env=_clean_env())


# --------------------------------------------------------------------------
# tests / shell
# --------------------------------------------------------------------------


def _test_env(version: str, tree: Path) -> dict:
    return _clean_env(
        {
            "SGLANG_PETIT_TREE": str(Path(tree).resolve()),
            "SGLANG_PETIT_VERSION": version,
            "SGLANG_PETIT_CHECKPOINTS": os.environ.get("SGLANG_PETIT_CHECKPOINTS", str(CHECKPOINT_ROOT)),
        }
    )


def run_tests(version: str, tree: Path, pytest_args: Sequence[str] = (), root: Path = DEFAULT_ROOT) -> int:
    """Run pytest on tests/series inside the env of ``version``; returns its exit code."""
    py = ensure_env(version, tree, root)
    # Default to the whole suite unless the caller named test paths/node ids.
    named = any(Path(a.split("::")[0]).exists() for a in pytest_args if not a.startswith("-"))
    cmd = [str(py), "-m", "pytest", *([] if named else [str(TESTS_DIR)]), "-p", "no:cacheprovider", *pytest_args]
    _log("run: " + " ".join(cmd))
    return subprocess.call(cmd, cwd=str(REPO), env=_test_env(version, tree))


def shell_command(version: str, tree: Path, root: Path = DEFAULT_ROOT) -> List[str]:
    """argv of an interactive python in the env (the environment variables are
    passed through ``env`` so the list is self-contained)."""
    py = ensure_env(version, tree, root)
    envvars = _test_env(version, tree)
    banner = "import sglang, torch; print('sglang', sglang.__file__, '| torch', torch.__version__)"
    return [
        "env",
        "-u",
        "PYTHONPATH",
        "PYTHONNOUSERSITE=1",
        f"SGLANG_PETIT_TREE={envvars['SGLANG_PETIT_TREE']}",
        f"SGLANG_PETIT_VERSION={version}",
        f"SGLANG_PETIT_CHECKPOINTS={envvars['SGLANG_PETIT_CHECKPOINTS']}",
        str(py),
        "-i",
        "-c",
        banner,
    ]


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: List[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(prog="petit_series.harness", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="venv root (default build/venv)")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, helptext in (
        ("env", "build/refresh the env and print what it imports"),
        ("test", "run tests/series in the env (pytest args after --)"),
        ("shell", "interactive python in the env"),
    ):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--version", required=True, help="SGLang release, e.g. 0.5.9")
        sp.add_argument("--tree", required=True, type=Path, help="patched upstream-layout tree (has python/sglang)")
        if name == "test":
            sp.add_argument("--no-checkpoints", action="store_true", help="don't build the tiny exports first")
    sp = sub.add_parser("exporters", help="build the exporters env and the tiny checkpoints")
    sp.add_argument("names", nargs="*")
    args = p.parse_args(argv)
    try:
        if args.cmd == "env":
            t0 = time.time()
            info = verify_env(args.version, args.tree, args.root)
            info["python"] = str(_venv_python(env_dir(args.version, args.root)))
            info["seconds"] = round(time.time() - t0, 1)
            print(json.dumps(info, indent=1))
            return 0
        if args.cmd == "test":
            if not args.no_checkpoints:
                ensure_checkpoints(args.root)
            return run_tests(args.version, args.tree, passthrough, args.root)
        if args.cmd == "shell":
            cmd = shell_command(args.version, args.tree, args.root)
            os.execvp(cmd[0], cmd)
        if args.cmd == "exporters":
            return ensure_checkpoints(args.root, CHECKPOINT_ROOT, args.names)
    except HarnessError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
