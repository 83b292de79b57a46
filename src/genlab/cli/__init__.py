"""The `genlab` command line: one module per command group, each with `register(commands)`.

Every user error surfaces as one line on stderr and exit code 2; Ctrl-C during training saves a
checkpoint and exits with 130. A new command group is a module here with a `register` function that
adds its subparsers (each with `set_defaults(handler=...)`), listed in COMMAND_GROUPS.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import GenlabError
from . import evaluate, explore, serve, train, trust, uses
from .common import Parser

COMMAND_GROUPS = [train, explore, evaluate, uses, trust, serve]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="genlab", description="Train, sample and inspect generative image models.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args) or 0
    except GenlabError as exc:
        print(f"genlab: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unwritable --out, full disk...: the user's to fix, not a traceback
        print(f"genlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genlab: interrupted", file=sys.stderr)
        return 130
