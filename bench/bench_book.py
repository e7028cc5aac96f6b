"""The book's cost: wall time and peak memory of every chapter and solution notebook, executed
exactly as the test suite executes them (pytest + nbval, lax mode, this venv), one at a time.

Each notebook runs in a fresh ``python -m pytest <notebook>`` process; its wall time is measured
around that process and its peak memory is the largest resident set among the process and the
Jupyter kernel it starts (``getrusage(RUSAGE_CHILDREN)`` of a wrapper that waits for both).
Pretrained models are assumed cached (run the book once first); ``--cold`` uses an empty cache.

Run: ``python bench/bench_book.py [--cold] [notebooks...]`` (or ``make bench``). Writes
``bench/results/book.json`` and a Markdown table ``bench/results/book.md`` for the README.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, print_table, write_json

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 90  # per chapter (issue 7)

# Runs one notebook under pytest in a child and reports the child's wall time and peak RSS (MiB).
_WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", sys.argv[1]],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wall = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": rc, "wall_s": wall, "peak_mib": peak_kib / 1024}))
"""


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))


def run_notebook(path: Path, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", _WRAPPER, str(path)], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"notebook": str(path.relative_to(ROOT)), "seconds": round(result["wall_s"], 1),
            "peak_MiB": int(result["peak_mib"]), "passed": result["rc"] == 0, "within_budget": result["wall_s"] <= BUDGET_S}


def markdown(rows: list[dict], total: float) -> str:
    lines = ["| notebook | seconds | peak MiB | passed |", "| --- | ---: | ---: | :---: |"]
    lines += [f"| `{r['notebook']}` | {r['seconds']} | {r['peak_MiB']} | {'yes' if r['passed'] else 'NO'} |" for r in rows]
    lines.append(f"| **total** | **{total:.0f}** | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="start from an empty model cache")
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks to run (default: all chapters and solutions)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.cold:
        env["SEQRL_CACHE"] = tempfile.mkdtemp(prefix="seqrl-cold-cache-")
    paths = [p.resolve() for p in args.paths] or notebooks()
    rows = [run_notebook(p, env) for p in paths]
    total = sum(r["seconds"] for r in rows)
    print(f"The book, one notebook at a time ({'empty' if args.cold else 'warm'} model cache); total {total:.0f} s")
    print_table(rows, list(rows[0]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "book.md").write_text(markdown(rows, total))
    path = write_json("book", {"cold_cache": args.cold, "total_s": total, "rows": rows})
    print(f"wrote {path} and {RESULTS / 'book.md'}")
    return rows


if __name__ == "__main__":
    main()
