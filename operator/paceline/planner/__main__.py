"""`python -m paceline.planner plan|graph ...`: the planner's subcommands without the main CLI."""

from __future__ import annotations

import argparse
import sys

from paceline.planner.cli import add_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paceline.planner")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
