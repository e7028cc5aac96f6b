"""The exercises ``seqrl.grading.check`` knows by name: ``CATALOG`` maps a name to a factory.

This package is imported on the first ``check``, not with ``seqrl.grading``. Each module in it
defines ``EXERCISES: dict[str, Callable[[], Exercise]]`` for one exercise set; adding an exercise
is adding a module (or cases to one), never changing the checking code. Each factory builds an
:class:`~seqrl.grading.checks.Exercise`: the reference from ``seqrl`` (one implementation of each
idea), the cases, and the typical wrong answers written as code, each with its hint. A case list is
good when every wrong answer fails at least one case and no two wrong answers agree on all the cases
the first one fails, so each mistake gets its own hint (tests/test_grading.py checks this).
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from ..checks import Exercise

__all__ = ["CATALOG"]


def _collect() -> dict[str, Callable[[], Exercise]]:
    catalog: dict[str, Callable[[], Exercise]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, factory in getattr(module, "EXERCISES", {}).items():
            if name in catalog:
                raise RuntimeError(f"exercise {name!r} is defined twice (again in catalog/{info.name}.py)")
            catalog[name] = factory
    return catalog


CATALOG = _collect()
