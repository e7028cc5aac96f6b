"""The ``seqrl`` command: ``seqrl exercises`` and ``seqrl book`` (more subcommands join as they land)."""
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
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
