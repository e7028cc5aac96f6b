"""Run every benchmark in bench/ (``make bench``); each prints a table and writes bench/results/*.json."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    scripts = sorted(HERE.glob("bench_*.py"))
    for script in scripts:
        print(f"\n=== {script.name} ===")
        runpy.run_path(str(script), run_name="__main__")
