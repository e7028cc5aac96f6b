"""The ``seqrl`` command: ``seqrl exercises``, ``seqrl book``, ``seqrl grade`` and ``seqrl check``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _repo_root() -> Path:
    """The repository holding solutions/ and notebooks/: the current folder or one above it."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "solutions").is_dir() and (folder / "notebooks").is_dir():
            return folder
    return here


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seqrl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ex = sub.add_parser("exercises", help="generate exercises/ (student versions) from solutions/")
    ex.add_argument("--solutions", type=Path, default=None, help="folder of solution notebooks (default: ./solutions)")
    ex.add_argument("--out", type=Path, default=None, help="folder for the student notebooks (default: ./exercises)")
    ex.add_argument("--check", action="store_true", help="only report whether exercises/ is up to date (exit 1 if not)")

    book = sub.add_parser("book", help="execute every chapter and write an HTML book")
    book.add_argument("--notebooks", type=Path, default=None, help="folder of chapters (default: ./notebooks)")
    book.add_argument("--out", type=Path, default=Path("build"), help="output folder (default: build)")
    book.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")

    grade = sub.add_parser("grade", help="grade students' exercise notebooks into a gradebook (see docs/grading.md)")
    grade.add_argument("submissions", nargs="+", type=Path, help="folders, zips or notebooks handed in")
    grade.add_argument("--out", type=Path, default=Path("gradebook.csv"), help="gradebook CSV (default: gradebook.csv)")
    grade.add_argument("--json", type=Path, default=None, help="gradebook JSON (default: the CSV's name with .json)")
    grade.add_argument("--jobs", type=int, default=2, help="submissions graded at the same time (default: 2)")
    grade.add_argument("--timeout", type=float, default=60.0, help="seconds each submission may run (default: 60)")
    grade.add_argument("--memory-mb", type=int, default=2048,
                       help="memory each submission may allocate, on top of the preloaded libraries (default: 2048)")
    grade.add_argument("--hidden-tests", type=Path, default=None, help="folder of instructor-only tests (*.py)")
    grade.add_argument("--feedback", type=Path, default=None, help="folder for one Markdown feedback file per student")
    grade.add_argument("--solutions", type=Path, default=None, help="canonical notebooks (default: ./solutions)")
    grade.add_argument("--watch", type=Path, action="append", default=[],
                       help="a file or folder that must not change while grading (repeatable)")
    grade.add_argument("--no-isolation", action="store_true",
                       help="no Landlock and no audit hook (only to debug the grader; never for untrusted code)")

    chk = sub.add_parser("check", help="run the graded checks on your own notebook and see your score")
    chk.add_argument("notebook", type=Path, help="your exercise notebook, e.g. exercises/ex01_returns.ipynb")
    chk.add_argument("--timeout", type=float, default=300.0, help="seconds your notebook may run (default: 300)")
    chk.add_argument("--memory-mb", type=int, default=4096, help="memory it may allocate (default: 4096)")
    chk.add_argument("--solutions", type=Path, default=None, help=argparse.SUPPRESS)

    models = sub.add_parser("models", help="build the pretrained models the book uses into the cache (those missing)")
    models.add_argument("names", nargs="*", help="recipes to build (default: all)")
    models.add_argument("--jobs", type=int, default=2, help="recipes built at the same time (default: 2)")
    models.add_argument("--list", action="store_true", help="only list the recipes and whether each is cached")

    args = parser.parse_args(argv)
    root = _repo_root()
    if args.command == "exercises":
        from .grading.exercises import main as exercises_main

        return exercises_main(
            solutions=args.solutions or root / "solutions",
            out=args.out or root / "exercises",
            check=args.check,
        )
    if args.command == "book":
        from .book import build_book

        build_book(args.notebooks or root / "notebooks", args.out, timeout=args.timeout)
        return 0
    if args.command == "grade":
        from .grading.commands import grade_command

        return grade_command(args.submissions, out=args.out, json_path=args.json, jobs=args.jobs, timeout=args.timeout,
                             memory_mb=args.memory_mb, hidden_tests=args.hidden_tests, feedback=args.feedback,
                             solutions=args.solutions, watch=args.watch, isolate=not args.no_isolation, root=root)
    if args.command == "check":
        from .grading.commands import check_command

        return check_command(args.notebook, timeout=args.timeout, memory_mb=args.memory_mb, solutions=args.solutions,
                             root=root)
    if args.command == "models":
        from .pretrained import cache_dir, is_cached, recipes, warm_cache

        if args.list:
            for name, recipe in sorted(recipes().items()):
                print(f"{name:30s} {'cached' if is_cached(name) else 'missing':8s} {recipe.description}")
            return 0
        try:
            seconds = warm_cache(args.names or None, jobs=args.jobs)
        except (KeyError, ValueError, RuntimeError) as error:
            print(f"seqrl models: {error}")
            return 1
        for name, s in seconds.items():
            print(f"{name:30s} {'built in %.0f s' % s if s else 'already cached'}")
        print(f"cache: {cache_dir()}")
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
