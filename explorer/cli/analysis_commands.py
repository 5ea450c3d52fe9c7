"""The analysis sub-commands of ``ordinal-explorer``: ``decode`` (nearest vocabulary tokens of the
learned prompt tokens) and ``curves`` (few-shot / label-shift curves of a sweep folder)."""

from __future__ import annotations

import argparse

from explorer.cli.common import command, open_checkpoint, print_json


@command("decode")
def cmd_decode(args: argparse.Namespace) -> int:
    """Print the nearest vocabulary tokens of the learned tokens (text or JSON)."""
    from explorer.analysis.decode import decode_checkpoint, decode_text

    ckpt, backbone = open_checkpoint(args)
    decoded = decode_checkpoint(ckpt, backbone, top=args.top)
    if args.json:
        print_json(decoded)
    else:
        print(decode_text(decoded))
    return 0


@command("curves")
def cmd_curves(args: argparse.Namespace) -> int:
    """Write curves.csv from a sweep's runs.csv."""
    from explorer.analysis.curves import read_runs, write_curves

    path = write_curves(read_runs(args.sweep_dir), args.out_dir or args.sweep_dir)
    print(f"wrote {path}")
    return 0


def add_analysis_parsers(add) -> None:
    """decode / curves sub-commands (``add`` is build_parser's sub-parser factory)."""
    p = add("decode", "Nearest vocabulary tokens of a checkpoint's learned context and rank tokens.", backbone=True)
    p.add_argument("checkpoint")
    p.add_argument("--top", type=int, default=5, metavar="K", help="how many nearest tokens per learned token (default 5)")
    p.add_argument("--json", action="store_true", help='print JSON: {"context": [[{token, id, distance, cosine}, ...], ...], "ranks": ...}')

    p = add("curves", "Write curves.csv (MAE and accuracy vs shots, mean and std over seeds) from a sweep's runs.csv.")
    p.add_argument("sweep_dir", help="sweep folder (or its runs.csv)")
    p.add_argument("--out-dir", default=None, help="where to write curves.csv (default: the sweep folder)")
