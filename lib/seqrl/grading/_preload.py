"""Imported once by the grader's fork server, so each sandboxed submission starts in milliseconds.

Forking a process that has already imported torch, numpy, matplotlib (Agg) and the library costs a
few milliseconds; importing them again in a fresh interpreter costs seconds per submission. Nothing
here runs student code. A module that fails to import is skipped: the sandbox imports it on demand
(and a notebook that needs it reports the error). Not meant to be imported by anything else.
"""
import importlib

import matplotlib

matplotlib.use("Agg")

for _name in (
    "matplotlib.pyplot",  # builds the font cache once, here
    "numpy",
    "torch",
    "seqrl",
    "seqrl.rl",
    "seqrl.pomdp",
    "seqrl.grading.checks",
    "seqrl.grading.catalog",  # every exercise module and what it imports
    "seqrl.grading.sandbox",
    "seqrl.grading.runner",
    "seqrl.grading.landlock",
    "seqrl.grading.wire",
    "IPython.display",  # notebooks may import it
):
    try:
        importlib.import_module(_name)
    except Exception:  # noqa: BLE001
        pass
