"""Command line of the tiny world: ``python -m saebook.tinyworld build [--micro] [--out DIR]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from saebook.tinyworld.build import DATA_DIR, FULL, MICRO, build


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the build."""
    parser = argparse.ArgumentParser(prog="python -m saebook.tinyworld")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="rebuild tokenizer, model, SAEs and model card from seed")
    b.add_argument("--out", type=Path, default=DATA_DIR, help=f"output folder (default {DATA_DIR})")
    b.add_argument("--micro", action="store_true", help="toy sizes: checks the pipeline in seconds")
    b.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    b.add_argument(
        "--reuse-model",
        action="store_true",
        help="keep the tokenizer and language model in --out; retrain SAEs and re-measure",
    )
    args = parser.parse_args(argv)
    build(
        args.out, MICRO if args.micro else FULL, threads=args.threads, reuse_model=args.reuse_model
    )


if __name__ == "__main__":
    main()
