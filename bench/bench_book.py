"""The book's cost: wall time and peak memory of every chapter and solution notebook, executed
exactly as the test suite executes them (pytest + nbval, lax mode, this venv), one at a time.

Each notebook runs in a fresh ``python -m pytest <notebook>`` process; its wall time is measured
around that process and its peak memory is the largest resident set among the process and the
Jupyter kernel it starts (``getrusage(RUSAGE_CHILDREN)`` of a wrapper that waits for both).
Pretrained models are assumed cached (run the book once first); ``--cold`` uses an empty cache.

``--jobs N`` runs N notebooks at a time; with ``--cores-per-job K`` each is pinned to its own K cores
and K threads, so a many-core machine measures N undisturbed K-core laptops at once.

Run: ``python bench/bench_book.py [--cold] [--jobs N [--cores-per-job K]] [notebooks...]`` (or ``make bench``). Writes
``bench/results/book.json`` and a Markdown table ``bench/results/book.md`` for the README.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import RESULTS, print_table, write_json

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 90  # per chapter (issue 7)

# Runs one notebook under pytest in a child and reports the child's wall time and peak RSS (MiB).
_WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", sys.argv[1]],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
wall = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": run.returncode, "wall_s": wall, "peak_mib": peak_kib / 1024, "tail": run.stdout[-3000:] if run.returncode else ""}))
"""


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))


def run_notebook(path: Path, env: dict[str, str], cores: list[int] | None = None) -> dict:
    """Run one notebook in a child process (pinned to ``cores`` with that many threads, if given)."""
    if cores:
        env = {**env, "OMP_NUM_THREADS": str(len(cores)), "SEQRL_NUM_THREADS": str(len(cores))}
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    out = subprocess.run([sys.executable, "-c", _WRAPPER, str(path)], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True, preexec_fn=pin)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"]:
        print(f"--- {path.name} failed:\n{result['tail']}", file=sys.stderr)
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
    parser.add_argument("--jobs", type=int, default=1,
                        help="notebooks run at a time (default 1: timings undisturbed; more only on a many-core machine)")
    parser.add_argument("--cores-per-job", type=int, default=0,
                        help="pin each notebook to its own K cores with K threads (a K-core laptop, undisturbed)")
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks to run (default: all chapters and solutions)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.cold:
        env["SEQRL_CACHE"] = tempfile.mkdtemp(prefix="seqrl-cold-cache-")
    paths = [p.resolve() for p in args.paths] or notebooks()
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    slots: queue.Queue = queue.Queue()  # the core sets, one per concurrent notebook
    if args.cores_per_job:
        available = sorted(os.sched_getaffinity(0))
        if args.jobs * args.cores_per_job > len(available):
            parser.error(f"--jobs {args.jobs} x --cores-per-job {args.cores_per_job} needs more than the {len(available)} cores here")
        for j in range(args.jobs):
            slots.put(available[j * args.cores_per_job : (j + 1) * args.cores_per_job])
    else:
        for _ in range(args.jobs):
            slots.put(None)

    def run(path: Path) -> dict:
        cores = slots.get()
        try:
            return run_notebook(path, env, cores)
        finally:
            slots.put(cores)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each notebook runs in its own process
        rows = list(pool.map(run, paths))
    total = sum(r["seconds"] for r in rows)
    at_a_time = "one notebook at a time" if args.jobs == 1 else f"{args.jobs} notebooks at a time"
    if args.cores_per_job:
        at_a_time += f", each pinned to {args.cores_per_job} cores"
    print(f"The book, {at_a_time} ({'empty' if args.cold else 'warm'} model cache); total {total:.0f} s")
    print_table(rows, list(rows[0]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "book.md").write_text(markdown(rows, total))
    path = write_json("book", {"cold_cache": args.cold, "jobs": args.jobs, "cores_per_job": args.cores_per_job, "total_s": total, "rows": rows})
    print(f"wrote {path} and {RESULTS / 'book.md'}")
    return rows


if __name__ == "__main__":
    main()
