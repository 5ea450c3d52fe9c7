"""The ``ordinal-explorer`` command line: one module per group of sub-commands, registered by name.

Errors a user can fix print one readable line (``error: ...``) and exit with status 2; an unexpected
error says so in one line and exits 1; a cancelled run exits 130; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys

from explorer.cli import analysis_commands, checkpoint_commands, decision_commands, training_commands
from explorer.cli.common import COMMANDS, command
from explorer.core.errors import ExplorerError
from explorer.training.config import Cancelled

__all__ = ["COMMANDS", "build_parser", "command", "main"]


# --- parser -------------------------------------------------------------------------------------


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argparse parser for every sub-command (``only="predict"``: that one alone, built without torch)."""
    parser = argparse.ArgumentParser(
        prog="ordinal-explorer",
        description="OrdinalCLIP Explorer: train, inspect, analyse and use CLIP prompt learners for ordinal regression (OrdinalCLIP, CoOp, zero-shot, linear probe, NumCLIP).",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str, backbone: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
        if backbone:
            p.add_argument("--backbone", help="backbone spec to use instead of the checkpoint's (must be the same weights)")
            p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
        return p

    if only == "predict":
        checkpoint_commands.add_predict_parser(add)
        return parser
    checkpoint_commands.add_checkpoint_parsers(add)
    training_commands.add_training_parsers(add)
    analysis_commands.add_analysis_parsers(add)
    decision_commands.add_decision_parsers(add)
    return parser


def _command_name(argv: list[str] | None) -> str | None:
    """The sub-command named in ``argv`` (the first word that is not an option)."""
    return next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ordinal-explorer``."""
    parser = build_parser(only="predict" if _command_name(argv) == "predict" else None)
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    except ExplorerError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Cancelled as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure: still one line unless --debug
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (a bug; run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
