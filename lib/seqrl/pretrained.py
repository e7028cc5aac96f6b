"""Named, seeded recipes for the book's tiny checkpoints, trained once and cached on disk.

``pretrained("sentences")`` returns the model the recipe ``sentences`` trains. The first call
trains it (deterministically, from data the library generates) and saves it under
``$SEQRL_CACHE`` (default: the user's cache folder, e.g. ``~/.cache/seqrl``); later calls load
the file. A file is written atomically (temporary file + rename, under a lock, so two notebooks
starting together train once), verified on load (recipe fingerprint and a SHA-256 of every
weight), and rebuilt with a warning if it is missing, truncated or corrupt.

A recipe's fingerprint hashes its name, version, seed and hyper-parameters, so changing any of
them builds a new file instead of silently loading a stale one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .models.gpt import GPT, GPTConfig
from .models.training import TrainHistory
from .text.tokenizer import Tokenizer

__all__ = ["Recipe", "Pretrained", "register", "recipes", "pretrained", "cache_dir", "cache_path"]

FORMAT_VERSION = 1


@dataclass
class Pretrained:
    """What a recipe produces: the model (in eval mode), its tokenizer, how training went."""

    name: str
    model: GPT
    tokenizer: Tokenizer
    history: TrainHistory
    metrics: dict[str, float] = field(default_factory=dict)
    path: Path | None = None


@dataclass(frozen=True)
class Recipe:
    """How to make a checkpoint: ``build(seed, **params)`` trains and returns a :class:`Pretrained`."""

    name: str
    description: str
    build: Callable[..., Pretrained]
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    version: int = 1

    def fingerprint(self) -> str:
        spec = {"name": self.name, "version": self.version, "seed": self.seed, "params": self.params}
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


_REGISTRY: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Add a recipe to the registry (a name can be registered once; re-registering replaces it only
    if it is the same recipe, so re-running a notebook cell is harmless)."""
    old = _REGISTRY.get(recipe.name)
    if old is not None and old.fingerprint() != recipe.fingerprint():
        raise ValueError(f"a different recipe named {recipe.name!r} is already registered")
    _REGISTRY[recipe.name] = recipe
    return recipe


def recipes() -> dict[str, Recipe]:
    """All registered recipes by name (the built-in ones are loaded on first use)."""
    from . import zoo as _builtin  # noqa: F401  (registers the book's recipes)
    from .offline import recipes as _offline  # noqa: F401  (and Part 3's offline baselines)

    return dict(_REGISTRY)


def cache_dir() -> Path:
    """``$SEQRL_CACHE`` if set, else the user's cache folder for seqrl."""
    env = os.environ.get("SEQRL_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("seqrl"))


def cache_path(name: str, directory: Path | None = None) -> Path:
    """Where the checkpoint of recipe ``name`` lives."""
    recipe = _lookup(name)
    return Path(directory or cache_dir()) / f"{recipe.name}-{recipe.fingerprint()}.pt"


def _lookup(name: str) -> Recipe:
    known = recipes()
    if name not in known:
        raise KeyError(f"no pretrained recipe named {name!r}; known recipes: {sorted(known)}")
    return known[name]


def pretrained(
    name: str,
    *,
    device: torch.device | str | None = None,
    directory: Path | str | None = None,
    rebuild: bool = False,
) -> Pretrained:
    """Load the checkpoint of recipe ``name``, training and caching it first if needed.

    Args:
        name: a registered recipe (see :func:`recipes`).
        device: where to put the model (default :func:`seqrl.device`).
        directory: cache folder (default :func:`cache_dir`).
        rebuild: train again even if a valid file exists.
    """
    from .utils import device as default_device

    recipe = _lookup(name)
    path = cache_path(name, Path(directory) if directory else None)
    target = torch.device(device) if device is not None else default_device()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rebuild:
        loaded = _try_load(recipe, path, target, warn_if_bad=True)
        if loaded is not None:
            return loaded
    with _file_lock(path):
        if not rebuild:  # another process may have built it while we waited for the lock
            loaded = _try_load(recipe, path, target, warn_if_bad=False)
            if loaded is not None:
                return loaded
        result = recipe.build(recipe.seed, **recipe.params)
        _save_atomically(recipe, result, path)
    result.model.to(target).eval()
    result.path = path
    return result


# ---------------------------------------------------------------------------- file format
def _state_checksum(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def _save_atomically(recipe: Recipe, result: Pretrained, path: Path) -> None:
    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    payload = {
        "format": FORMAT_VERSION,
        "recipe": recipe.name,
        "fingerprint": recipe.fingerprint(),
        "config": result.model.config.to_dict(),
        "tokenizer": result.tokenizer.to_dict(),
        "history": result.history.to_dict(),
        "metrics": dict(result.metrics),
        "state_dict": state,
        "checksum": _state_checksum(state),
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _try_load(recipe: Recipe, path: Path, target: torch.device, warn_if_bad: bool) -> Pretrained | None:
    """The verified checkpoint at ``path``, or ``None`` (with a warning if the file is bad)."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        problem = _verify(recipe, payload)
    except Exception as exc:  # truncated zip, unpickling error, ...
        problem = f"it cannot be read ({type(exc).__name__}: {exc})"
    if problem is None:
        config = GPTConfig(**payload["config"])
        model = GPT(config)
        model.load_state_dict(payload["state_dict"])
        return Pretrained(
            name=recipe.name,
            model=model.to(target).eval(),
            tokenizer=Tokenizer.from_dict(payload["tokenizer"]),
            history=TrainHistory.from_dict(payload["history"]),
            metrics=dict(payload["metrics"]),
            path=path,
        )
    if warn_if_bad:
        warnings.warn(f"cached checkpoint {path} is invalid: {problem}; rebuilding it", RuntimeWarning, stacklevel=3)
    return None


def _verify(recipe: Recipe, payload: Any) -> str | None:
    """Why ``payload`` is not a valid checkpoint of ``recipe``, or ``None`` if it is."""
    required = {"format", "recipe", "fingerprint", "config", "tokenizer", "history", "metrics", "state_dict", "checksum"}
    if not isinstance(payload, dict) or not required <= payload.keys():
        return "required fields are missing"
    if payload["format"] != FORMAT_VERSION:
        return f"file format {payload['format']} is not {FORMAT_VERSION}"
    if payload["recipe"] != recipe.name or payload["fingerprint"] != recipe.fingerprint():
        return "it was made by a different recipe"
    if _state_checksum(payload["state_dict"]) != payload["checksum"]:
        return "the weights do not match their checksum"
    try:
        expected = GPT(GPTConfig(**payload["config"])).state_dict()
    except (TypeError, ValueError) as exc:
        return f"its model configuration is invalid ({exc})"
    state = payload["state_dict"]
    if expected.keys() != state.keys() or any(expected[k].shape != state[k].shape for k in expected):
        return "the weights do not fit the model configuration"
    return None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path.lock`` (POSIX); a no-op where ``fcntl`` is unavailable."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path.with_suffix(path.suffix + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------- warming the cache
_WARM_ONE = "import sys, seqrl; seqrl.pretrained(sys.argv[1]); print(sys.argv[1])"


def is_cached(name: str, directory: Path | str | None = None) -> bool:
    """Whether recipe ``name`` has a valid checkpoint in the cache (it is loaded to verify it)."""
    recipe = _lookup(name)
    path = cache_path(name, Path(directory) if directory else None)
    return path.exists() and _try_load(recipe, path, torch.device("cpu"), warn_if_bad=False) is not None


def build_order(names: list[str]) -> list[str]:
    """``names`` with the recipes that start from another checkpoint (an ``init`` parameter) last,
    otherwise in the given order: those wait for their starting point, so building them last keeps
    every worker of :func:`warm_cache` training instead of waiting on a lock."""
    return sorted(names, key=lambda name: _lookup(name).params.get("init") is not None)


def warm_cache(names: list[str] | None = None, jobs: int = 2, directory: Path | str | None = None) -> dict[str, float]:
    """Build every missing checkpoint (default: all recipes), ``jobs`` recipes at a time, each in its
    own single-threaded process; returns the seconds each build took (0 for those already cached).

    The test suite calls this first (``seqrl models``) so that no chapter pays for training its
    pretrained models inside its own time budget.
    """
    import subprocess
    import sys
    import time
    from concurrent.futures import ThreadPoolExecutor

    names = list(names) if names else sorted(recipes())
    for name in names:
        _lookup(name)  # unknown names fail before anything runs
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    env = dict(os.environ, SEQRL_NUM_THREADS="1", OMP_NUM_THREADS="1")
    if directory is not None:
        env["SEQRL_CACHE"] = str(directory)
    missing = build_order([n for n in names if not is_cached(n, directory)])

    def build(name: str) -> float:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _WARM_ONE, name], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building the pretrained model {name!r} failed:\n{done.stderr[-2000:]}")
        return time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        seconds = dict(zip(missing, pool.map(build, missing)))
    return {name: seconds.get(name, 0.0) for name in names}
