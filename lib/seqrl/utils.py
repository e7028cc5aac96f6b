"""Small utilities every chapter uses: seeding, the compute device, threads, progress bars and eval mode."""
from __future__ import annotations

import os
import random
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

import numpy as np
import torch

T = TypeVar("T")

__all__ = ["seed_everything", "device", "progress", "in_ci", "configure_threads", "evaluating"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators (CPU and CUDA) with ``seed``.

    Returns a fresh ``torch.Generator`` seeded with the same value, for code that prefers an
    explicit generator (sampling, data shuffling) to the global state.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def device() -> torch.device:
    """The device to compute on: CUDA if present, else the CPU.

    Set ``SEQRL_DEVICE`` (e.g. ``cpu``) to override, for instance to reproduce CPU numbers on a
    GPU machine.
    """
    override = os.environ.get("SEQRL_DEVICE")
    if override:
        return torch.device(override)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def in_ci() -> bool:
    """True under continuous integration or when ``SEQRL_QUIET`` is set: progress bars stay quiet."""
    return any(os.environ.get(name, "").lower() not in ("", "0", "false") for name in ("CI", "SEQRL_QUIET"))


def progress(iterable: Iterable[T], desc: str | None = None, total: int | None = None, **kwargs) -> Iterator[T]:
    """A ``tqdm.auto`` progress bar over ``iterable`` that is silent under CI (see :func:`in_ci`)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", in_ci())
    kwargs.setdefault("leave", False)
    return iter(tqdm(iterable, desc=desc, total=total, **kwargs))


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (default: ``SEQRL_NUM_THREADS`` or all cores, at most 8).

    Tiny models gain nothing from more threads than cores, and oversubscription (two pytest workers
    each using every core) makes them several times slower.
    """
    if n is None:
        n = int(os.environ.get("SEQRL_NUM_THREADS", "0")) or min(os.cpu_count() or 1, 8)
    if n < 1:
        raise ValueError(f"the number of threads must be at least 1, got {n}")
    torch.set_num_threads(n)
    return n


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode (no dropout) inside the block, then back in the mode it was in, also
    when the block raises: ``with evaluating(model): ...``."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
