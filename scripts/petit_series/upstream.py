"""Upstream SGLang trees: from git, from PyPI, or from a local checkout.

Every tree fetched or built from PyPI lands in one bare cache repository
(`<cache>/upstream.git`): git refs under `refs/git/`, PyPI releases under
`refs/pypi/v<version>`. Work trees borrow its objects (git alternates), so the
preimages that 3-way merges need are there for every release ever materialized,
and a second run needs no network.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Callable, Optional

from . import gitlib, objcheck, pypi, versions
from .locking import FileLock

DEFAULT_REPO = "https://github.com/sgl-project/sglang.git"
SOURCES = ("auto", "git", "pypi")


class UpstreamError(RuntimeError):
    """The requested upstream tree cannot be had; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Upstream:
    ref: str  # the ref as the user named it, normalized (`v0.5.9`, `main`)
    commit: str
    version: Optional[str]  # release version when known
    source: str  # "git", "pypi" or "path"
    repo: Path  # git dir (cache) or work tree (path source) holding `commit`
    coverage: Optional[tuple[str, ...]] = None  # None: a full repository tree
    detail: str = ""

    @property
    def partial(self) -> bool:
        return self.coverage is not None

    def covers(self, path: str) -> bool:
        return self.coverage is None or any(path.startswith(c) for c in self.coverage)


def log(msg: str) -> None:
    print(msg, flush=True)


class Cache:
    """The download cache and the bare repository of upstream snapshots."""

    def __init__(self, root: Path):
        self.root = root
        self.git_dir = root / "upstream.git"
        self._sound: set[str] = set()  # snapshot commits checked by this process

    def ensure(self) -> None:
        if not (self.git_dir / "HEAD").exists():
            self.root.mkdir(parents=True, exist_ok=True)
            gitlib.run(["init", "--bare", "--quiet", str(self.git_dir)])

    def lock(self) -> FileLock:
        self.ensure()
        return FileLock(self.git_dir / "petit-cache.lock", "the upstream cache", wait=900)

    def resolve(self, ref: str) -> Optional[str]:
        if not (self.git_dir / "HEAD").exists():
            return None
        proc = gitlib.run(
            ["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            git_dir=self.git_dir,
            check=False,
        )
        return proc.stdout.strip() or None

    def message(self, commit: str) -> str:
        return gitlib.out(["log", "-1", "--format=%B", commit], git_dir=self.git_dir)

    # -- PyPI -------------------------------------------------------------

    def pypi_index(self, offline: bool = False) -> dict:
        return pypi.load_index(self.root, offline=offline)

    def materialize_pypi(self, version: str) -> Upstream:
        """The PyPI release as a commit `refs/pypi/v<version>` (built once)."""
        version = versions.normalize(version)
        ref = f"refs/pypi/{versions.tag(version)}"
        with self.lock():
            self._drop_corrupt_tip(ref)
            commit = self.resolve(ref)
            if commit is None:
                commit = self._build_pypi_commit(version, ref)
        trailers = _trailers(self.message(commit))
        coverage = tuple(trailers.get("Petit-Coverage", "python/").split(","))
        return Upstream(
            ref=versions.tag(version),
            commit=commit,
            version=version,
            source="pypi",
            repo=self.git_dir,
            coverage=coverage,
            detail=f"{trailers.get('Petit-File', '?')} (sha256 verified)",
        )

    def _drop_corrupt_tip(self, ref: str) -> bool:
        """A snapshot ref whose commit object is corrupt: drop both (it is rebuilt)."""
        proc = gitlib.run(["show-ref", "--hash", "--verify", ref], git_dir=self.git_dir, check=False)
        oid = proc.stdout.strip()
        if proc.returncode != 0 or not oid:
            return False
        why = objcheck.is_sound_object(self.git_dir, oid)
        if why is None:
            return False
        objcheck.drop(self.git_dir, [objcheck.BadObject(oid, "", why)])
        gitlib.run(["update-ref", "-d", ref], git_dir=self.git_dir, check=False)
        log(f"cache: the commit of {ref} in {self.git_dir} was corrupt ({why}); rebuilding it")
        return True

    def check_snapshot(self, up: "Upstream", repo_url: str) -> None:
        """Check every object of a cached snapshot; rebuild the snapshot when one is bad.

        Raises UpstreamError when it cannot be rebuilt. A full check reads and
        hashes every object (about 0.5 s for a 6,000-object release; see objcheck);
        it is then recorded in `petit-checked/<commit>` with a digest of the objects'
        stored bytes, and later runs only recompute that digest (about a third of
        the time) unless it changed.
        """
        if up.source not in ("pypi", "git") or up.commit in self._sound:
            return
        stamp = self.git_dir / "petit-checked" / up.commit
        oids = stamp.read_text().split() if stamp.exists() else []
        if oids and oids[0] == objcheck.fingerprint(self.git_dir, oids[1:]):
            self._sound.add(up.commit)
            return
        listing: list[str] = []
        if objcheck.check_commit(self.git_dir, up.commit, listing):
            with self.lock():
                listing = []  # another run may have fixed it meanwhile
                bad = objcheck.check_commit(self.git_dir, up.commit, listing)
                if bad:
                    self._rebuild(up, repo_url, bad)
                    listing = []
                    objcheck.check_commit(self.git_dir, up.commit, listing)
        stamp.parent.mkdir(exist_ok=True)
        tmp = stamp.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")  # matrix: threads
        tmp.write_text("\n".join([objcheck.fingerprint(self.git_dir, listing), *listing]) + "\n")
        tmp.replace(stamp)
        self._sound.add(up.commit)

    def _rebuild(self, up: "Upstream", repo_url: str, bad: list) -> None:
        what = objcheck.describe(bad)
        where = f"the cached snapshot of {up.ref} ({self.git_dir})"
        objcheck.drop(self.git_dir, bad)
        try:
            if up.source == "pypi":
                ref = f"refs/pypi/{versions.tag(up.version)}"
                gitlib.run(["update-ref", "-d", ref], git_dir=self.git_dir, check=False)
                commit = self._build_pypi_commit(up.version, ref, quiet=True)
                origin = _trailers(self.message(commit)).get("Petit-File", "PyPI") + " (sha256 verified)"
            else:
                local = f"refs/git/{versions.safe_ref_name(up.ref)}"
                want = _remote_name(up)
                gitlib.run(["update-ref", "-d", local], git_dir=self.git_dir, check=False)
                proc = gitlib.run(
                    ["fetch", "--quiet", "--no-tags", "--refetch", "--depth=1", repo_url, f"+{want}:{local}"],
                    git_dir=self.git_dir, check=False,
                )
                if proc.returncode != 0:
                    raise UpstreamError(f"git fetch {want} from {repo_url} failed: {proc.stderr.strip()}")
                commit = self.resolve(local)
                origin = f"{repo_url} {want} (fetched again)"
        except (UpstreamError, gitlib.GitError) as exc:
            raise UpstreamError(
                f"{where} has {what}; they were removed, but rebuilding it failed: {exc}. "
                "Run again when that is fixed; nothing else was changed"
            ) from exc
        still = objcheck.check_commit(self.git_dir, up.commit)
        if commit != up.commit or still:
            detail = objcheck.describe(still) if still else f"it is now {str(commit)[:12]}, not {up.commit[:12]}"
            raise UpstreamError(
                f"{where} had {what} and could not be rebuilt ({detail}); remove {self.git_dir} "
                "and run again"
            )
        log(f"cache: {where} had {what}; rebuilt it from {origin}")

    def _build_pypi_commit(self, version: str, ref: str, quiet: bool = False) -> str:
        try:
            index = self.pypi_index()
        except pypi.PypiError as exc:
            raise UpstreamError(str(exc)) from exc
        known = pypi.release_versions(index)
        if version not in known:
            near = versions.suggest(version, known)
            hint = f" Did you mean: {', '.join('v' + n for n in near)}?" if near else ""
            raise UpstreamError(f"sglang {version} is not on PyPI.{hint}")
        release = pypi.pick_file(index, version)
        if not quiet:
            log(f"  downloading {release.filename} from PyPI")
        try:
            archive = pypi.download(release, self.root)
        except pypi.PypiError as exc:
            raise UpstreamError(str(exc)) from exc
        tmp_root = self.root / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"unpack-{version}-", dir=tmp_root))
        try:
            try:
                count = pypi.unpack(archive, release.kind, staging)
            except pypi.PypiError as exc:
                raise UpstreamError(str(exc)) from exc
            index_file = staging.parent / (staging.name + ".index")
            env = {"GIT_INDEX_FILE": str(index_file), "GIT_WORK_TREE": str(staging)}
            gitlib.run(["add", "-A", "-f", "."], cwd=staging, git_dir=self.git_dir, env=env)
            tree = gitlib.out(["write-tree"], git_dir=self.git_dir, env=env)
            index_file.unlink(missing_ok=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        when = release.upload_time or "1970-01-01T00:00:00Z"
        message = (
            f"sglang {version} from PyPI\n\n"
            f"Upstream-layout tree built from {release.filename}; it is partial: only\n"
            f"{', '.join(release.coverage)} is present ({count} files), no test/, docs/ "
            "or .github/.\n\n"
            f"Petit-Source: pypi\nPetit-File: {release.filename}\n"
            f"Petit-Sha256: {release.sha256}\nPetit-Version: {version}\n"
            f"Petit-Coverage: {','.join(release.coverage)}\n"
        )
        env = {
            "GIT_AUTHOR_DATE": when,
            "GIT_COMMITTER_DATE": when,
            "GIT_AUTHOR_NAME": "PyPI",
            "GIT_AUTHOR_EMAIL": "sglang@pypi.org",
        }
        commit = gitlib.out(["commit-tree", tree, "-m", message], git_dir=self.git_dir, env=env)
        gitlib.run(["update-ref", ref, commit], git_dir=self.git_dir)
        if not quiet:
            log(f"  built {versions.tag(version)} from {release.filename} ({count} files)")
        return commit

    # -- git --------------------------------------------------------------

    def remote_refs(self, url: str, timeout: float = 30.0) -> dict[str, str]:
        """`git ls-remote` of the repository: ref name -> object id."""
        try:
            proc = gitlib.run(["ls-remote", url], timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise UpstreamError(f"git: {url} did not answer within {timeout:.0f}s") from exc
        if proc.returncode != 0:
            raise UpstreamError(f"git: cannot reach {url}: {proc.stderr.strip()}")
        refs = {}
        for line in proc.stdout.splitlines():
            oid, _, name = line.partition("\t")
            refs[name] = oid
        return refs

    def materialize_git(self, url: str, ref: str, depth: Optional[int] = 1) -> Upstream:
        """Fetch `ref` (tag, branch or commit) into `refs/git/...` (shallow)."""
        name = versions.tag(ref) if versions.is_version(ref) else ref
        local = f"refs/git/{versions.safe_ref_name(name)}"
        with self.lock():
            refs = self.remote_refs(url)
            candidates = [f"refs/tags/{name}", f"refs/heads/{name}"]
            remote = next((c for c in candidates if c in refs), None)
            if remote is None and not _looks_like_sha(name):
                names = sorted({r.split("/", 2)[-1] for r in refs if r.startswith("refs/")})
                near = versions.suggest(name, names) or [
                    n for n in names if n.startswith(name[:4])
                ][:3]
                hint = f" Did you mean: {', '.join(near)}?" if near else ""
                raise UpstreamError(f"{url} has no tag or branch {name!r}.{hint}")
            want = remote or name
            dropped = self._drop_corrupt_tip(local)
            cached = self.resolve(local)
            if cached and remote and refs.get(remote) in (cached, None):
                commit = cached
            else:
                args = ["fetch", "--quiet", "--no-tags"] + (["--refetch"] if dropped else [])
                if depth:
                    args.append(f"--depth={depth}")
                proc = gitlib.run(
                    [*args, url, f"+{want}:{local}"], git_dir=self.git_dir, check=False
                )
                if proc.returncode != 0:
                    raise UpstreamError(f"git fetch {want} from {url} failed: {proc.stderr.strip()}")
                commit = self.resolve(local)
        version = versions.normalize(name) if versions.is_version(name) else None
        return Upstream(
            ref=name, commit=commit, version=version, source="git", repo=self.git_dir,
            detail=f"{url} {want}",
        )


def _looks_like_sha(text: str) -> bool:
    return 7 <= len(text) <= 40 and all(c in "0123456789abcdef" for c in text.lower())


def _trailers(message: str) -> dict[str, str]:
    """The `Petit-*` trailers of a snapshot commit's message, as git parses them."""
    return {k: v for k, v in gitlib.parse_trailers(message).items() if k.startswith("Petit-")}


def from_path(path: Path, ref: Optional[str]) -> Upstream:
    """An existing local checkout: the series goes on a new branch there."""
    path = path.resolve()
    if not path.is_dir():
        raise UpstreamError(f"{path} does not exist")
    if not gitlib.ok(["rev-parse", "--git-dir"], path):
        raise UpstreamError(
            f"{path} is not a git checkout; run `git init && git add -A && git commit` "
            "there first, or use SGLANG_SOURCE=pypi"
        )
    # A `git am` this tool stopped is refused later, with the commands to resume it.
    ours = (gitlib.git_dir_of(path) / "petit-series" / "state.json").exists()
    if gitlib.am_in_progress(path) and not ours:
        raise UpstreamError(f"{path}: a `git am` is in progress there; finish or abort it first")
    rev = ref or "HEAD"
    commit = gitlib.rev_parse(path, rev)
    if commit is None and ref and versions.is_version(ref):
        commit = gitlib.rev_parse(path, versions.tag(ref))
        if commit is None:
            # Checkouts in release images often carry no tags: take HEAD as that release.
            commit = gitlib.rev_parse(path, "HEAD")
            print(f"note: {path} has no tag {versions.tag(ref)}; applying to its HEAD as release {versions.normalize(ref)}")
    if commit is None:
        raise UpstreamError(f"{path} has no commit {rev!r}")
    if ref and versions.is_version(ref):
        version = versions.normalize(ref)
    else:
        version, why = _checkout_version(path, commit)
        if version is None:
            at = f" (at {ref}; check that out first)" if ref else ""
            raise UpstreamError(
                f"cannot tell which SGLang release {path} is; name it: SGLANG_REF=v0.5.x{at}. "
                "It has no release tag before its commit, and neither python/sglang/_version.py "
                "(written by an install) nor python/sglang/version.py names a release. "
                "Nothing was changed."
            )
        print(f"note: {path} taken as SGLang {version}: {why}; if that is wrong, name it: SGLANG_REF=v0.5.x")
    problem = versions.unsupported(version, allow_pre=True)
    if problem:
        raise UpstreamError(f"{path}: {problem}")
    label = ref or versions.tag(version)
    # A checkout of a snapshot this tool built (a PyPI release, the next-release
    # fixture) is as partial as the snapshot: its commit says so.
    coverage = _trailers(gitlib.out(["log", "-1", "--format=%B", commit], path)).get("Petit-Coverage")
    return Upstream(
        ref=label, commit=commit, version=version, source="path", repo=path,
        coverage=tuple(coverage.split(",")) if coverage else None,
        detail=f"local checkout {path}",
    )


# A top-level `__version__ = "0.5.9"` (setuptools-scm writes `__version__ = version = '0.5.9'`).
# Indented ones are fallbacks, such as 0.5.x's version.py `__version__ = "0.0.0.dev0"`.
_VERSION_ASSIGN = re.compile(
    r"""^__version__(?:\s*:\s*str)?\s*=\s*(?:version\s*=\s*)?['"]([^'"]+)['"]""", re.MULTILINE
)


def _checkout_version(path: Path, commit: str) -> tuple[Optional[str], str]:
    """The release of a checkout and how it was found, or (None, "").

    In order: the nearest release tag (`git describe`); the `_version.py` that an
    installed (editable) SGLang writes, when it names a release; the
    `python/sglang/version.py` that some releases track.
    """
    described = gitlib.run(
        ["describe", "--tags", "--abbrev=0", "--match", "v[0-9]*", commit], path, check=False
    )
    tag = described.stdout.strip()
    if described.returncode == 0 and versions.is_version(tag):
        ahead = gitlib.out(["rev-list", "--count", f"{tag}..{commit}"], path)
        where = "its commit is that tag" if ahead == "0" else f"{ahead} commits after that tag"
        return versions.normalize(tag), f"nearest release tag {tag} (`git describe`; {where})"
    generated = path / "python" / "sglang" / "_version.py"
    if generated.is_file():
        m = _VERSION_ASSIGN.search(generated.read_text(errors="replace"))
        # A setuptools-scm dev version (`0.5.10.dev3+g...`) names no release.
        if m and versions.is_final(m.group(1)):
            return versions.normalize(m.group(1)), (
                "python/sglang/_version.py (written when it was installed)"
            )
    tracked = gitlib.run(["show", f"{commit}:python/sglang/version.py"], path, check=False)
    if tracked.returncode == 0:
        m = _VERSION_ASSIGN.search(tracked.stdout)
        if m and versions.is_final(m.group(1)):
            return versions.normalize(m.group(1)), "python/sglang/version.py"
    return None, ""


def resolve(
    cache: Cache,
    ref: Optional[str],
    source: str,
    repo_url: str,
    *,
    git_timeout: float = 8.0,
) -> Upstream:
    """Find or build the upstream tree for `ref` from the chosen source."""
    if source not in SOURCES:
        return from_path(Path(source), ref)
    if ref is not None and versions.is_version(ref):
        problem = versions.unsupported(ref)
        if problem:  # before any download
            raise UpstreamError(problem)
    cache.ensure()
    if ref is None:
        ref = default_ref(cache)
    if source == "pypi":
        if not versions.is_version(ref):
            raise UpstreamError(
                f"{ref!r} is not a release version; PyPI has releases only "
                "(use SGLANG_SOURCE=git for branches and commits)"
            )
        return cache.materialize_pypi(ref)
    if source == "git":
        return cache.materialize_git(repo_url, ref)
    # auto: git when it answers quickly, else PyPI.
    try:
        cache.remote_refs(repo_url, timeout=git_timeout)
    except UpstreamError as exc:
        if not versions.is_version(ref):
            raise UpstreamError(
                f"{exc}; PyPI cannot stand in for {ref!r} (not a release)"
            ) from exc
        log(f"source: git unavailable ({exc}); using PyPI")
        return cache.materialize_pypi(ref)
    log(f"source: git ({repo_url})")
    return cache.materialize_git(repo_url, ref)


def default_ref(cache: Cache) -> str:
    """The newest supported release on PyPI (from the cached index when offline)."""
    try:
        index = cache.pypi_index()
    except pypi.PypiError as exc:
        raise UpstreamError(f"{exc}; name a ref with SGLANG_REF=<tag>") from exc
    supported = versions.supported(pypi.release_versions(index))
    if not supported:
        raise UpstreamError("no supported SGLang release found on PyPI")
    return versions.tag(supported[-1])


def base_provider(cache: Cache, upstream: Upstream, repo_url: str) -> Callable[[str], Optional[str]]:
    """A function that makes the snapshot of a release available for 3-way merges."""

    def provide(version: str) -> Optional[str]:
        try:
            base = None
            if upstream.source == "pypi":
                base = cache.materialize_pypi(version)
            elif upstream.source == "git":
                base = cache.materialize_git(repo_url, version)
            if base is not None:
                cache.check_snapshot(base, repo_url)
                return base.commit
        except UpstreamError as exc:
            log(f"  note: preimages of {version} unavailable ({exc})")
        return None

    return provide


def snapshot_checker(cache: Cache, upstream: Upstream, repo_url: str) -> Callable[[], None]:
    """A function that checks (and if need be rebuilds) the snapshot before it is used."""

    def check() -> None:
        cache.check_snapshot(upstream, repo_url)

    return check


def _changes(git_dir: Path, base: str, target: str, files: list[str]) -> list[str]:
    """Upstream commits touching `files` in base..target, or a diffstat without history."""
    if gitlib.ok(["merge-base", "--is-ancestor", base, target], git_dir=git_dir):
        text = gitlib.out(
            ["log", "--format=%h %s", "-n", "20", f"{base}..{target}", "--", *files],
            git_dir=git_dir,
        )
        return text.splitlines()
    text = gitlib.out(["diff", "--numstat", base, target, "--", *files], git_dir=git_dir)
    return [
        f"{name}: +{add} -{rem} lines between the patch's base and the target (no shared history)"
        for add, rem, name in (line.split("\t") for line in text.splitlines() if line)
    ]


def history_explainer(
    cache: Cache, upstream: Upstream, repo_url: str
) -> Callable[[Optional[str], list[str]], list[str]]:
    """A function telling how upstream changed files since a patch's base release."""

    def explain(base_version: Optional[str], files: list[str]) -> list[str]:
        if not base_version or not files:
            return []
        try:
            if upstream.source == "path":
                base = gitlib.rev_parse(upstream.repo, versions.tag(base_version))
                git_dir = gitlib.git_dir_of(upstream.repo)
            elif upstream.source == "pypi":
                base = cache.materialize_pypi(base_version).commit
                git_dir = cache.git_dir
            else:
                base = cache.materialize_git(repo_url, base_version).commit
                # Deepen the target down to (not including) the base: every commit then
                # reachable from the target is one upstream made after the base.
                fetched = gitlib.run(
                    ["fetch", "--quiet", "--no-tags",
                     f"--shallow-exclude={versions.tag(base_version)}", repo_url,
                     _remote_name(upstream)],
                    git_dir=cache.git_dir, check=False,
                )
                if fetched.returncode == 0:
                    text = gitlib.out(
                        ["log", "--format=%h %s", "-n", "20", upstream.commit, "--", *files],
                        git_dir=cache.git_dir,
                    )
                    return text.splitlines()
                git_dir = cache.git_dir
            if not base:
                return []
            return _changes(git_dir, base, upstream.commit, files)
        except (UpstreamError, gitlib.GitError) as exc:
            return [f"(history unavailable: {exc})"]

    return explain


def _remote_name(upstream: Upstream) -> str:
    return upstream.detail.rsplit(" ", 1)[-1]


def prepare_tree(upstream: Upstream, tree: Path) -> Path:
    """A work tree for `upstream` that borrows the cache's objects."""
    if upstream.source == "path":
        return upstream.repo
    if not (tree / ".git").exists():
        if tree.exists() and any(tree.iterdir()):
            raise UpstreamError(f"{tree} exists and is not a git tree; move it away first")
        tree.mkdir(parents=True, exist_ok=True)
        gitlib.run(["init", "--quiet", str(tree)])
    alternates = tree / ".git" / "objects" / "info" / "alternates"
    alternates.parent.mkdir(parents=True, exist_ok=True)
    wanted = str((upstream.repo / "objects").resolve())
    if not alternates.exists() or wanted not in alternates.read_text().split():
        alternates.write_text(wanted + os.linesep)
    return tree
