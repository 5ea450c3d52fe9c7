"""Sub-commands over several checkpoints on one dataset: ``compare`` (the model-by-slice matrix) and
``report`` (one self-contained HTML file)."""

from __future__ import annotations

import argparse

from explorer.cli.common import DownloadBar, ProgressBar, command, print_json
from explorer.core.errors import ExplorerError


def open_models(paths: list[str], device: str | None, quiet: bool) -> list[tuple]:
    """(checkpoint, backbone) for each path; each backbone is loaded once."""
    from explorer.backbones.load import load_backbone
    from explorer.store.checkpoints import load_checkpoint

    ckpts = [load_checkpoint(p) for p in paths]
    backbones = {}
    for spec in dict.fromkeys(c.backbone_spec for c in ckpts):
        backbones[spec] = load_backbone(spec, device=device, progress=DownloadBar(quiet))
    for ckpt in ckpts:
        ckpt.check_backbone(backbones[ckpt.backbone_spec])
    return [(c, backbones[c.backbone_spec]) for c in ckpts]


def compare_from_args(args: argparse.Namespace, keep_predictions: bool = False) -> dict:
    """compare_checkpoints with eval's dataset options from the command line, a bar while it runs."""
    from explorer.analysis.comparison import compare_checkpoints
    from explorer.training.config import Progress

    bar = ProgressBar(args.quiet)
    result = compare_checkpoints(
        open_models(args.checkpoints, args.device, args.quiet), args.on, by=args.by, cuts=args.cut or (),
        progress=lambda done, total, name: bar(Progress("evaluate", done, total, message=f"evaluating {name}" if name else "done")),
        split=args.split, skip_bad=args.skip_bad, faces=args.faces, target_recall=args.target_recall, cache_dir=args.cache_dir,
        keep_predictions=keep_predictions)
    bar.close()
    return result


@command("compare")
def cmd_compare(args: argparse.Namespace) -> int:
    result = compare_from_args(args)
    if args.json:
        print_json({k: v for k, v in result.items() if k != "evaluations"})
        return 0
    values = list(dict.fromkeys(v for row in result["matrix"].values() for v in row))
    print(f"value MAE by {result['by']} on {result['dataset']} [{args.split}] (95 % interval)")
    for name, row in result["matrix"].items():
        cells = [f"{v}: " + (f"{row[v]['mae_value']:.3f} [{row[v]['ci95'][0]:.3f}, {row[v]['ci95'][1]:.3f}] n={row[v]['n']}"
                             if row.get(v, {}).get("n") else "empty") for v in values]
        print(f"{name}\n  " + "\n  ".join(cells))
    return 0


@command("report")
def cmd_report(args: argparse.Namespace) -> int:
    from explorer.analysis.report import build_report, write_report
    from explorer.training.config import Progress

    if not args.out.lower().endswith((".html", ".htm")):
        raise ExplorerError(f"The report is an HTML file: give --out a name ending in .html (got {args.out}).")
    comparison = compare_from_args(args, keep_predictions=True)
    bar = ProgressBar(args.quiet)
    text = build_report(comparison, progress=lambda done, total, message: bar(Progress("report", done, total, message=message)))
    bar.close()
    write_report(args.out, text)
    names = ", ".join(comparison["matrix"])
    print(f"wrote the report of {names} on {args.on} [{args.split}] to {args.out} ({len(text.encode()) / 1e6:.1f} MB, self-contained)")
    return 0


def add_decision_parsers(add) -> None:
    """compare (and report) sub-commands."""
    from explorer.analysis.cuts import DEFAULT_TARGET_RECALL
    from explorer.analysis.slices import BAND

    p = add("compare", "Evaluate several checkpoints on one dataset: the model-by-slice matrix of value MAE with 95-percent intervals.")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT")
    _dataset_flags(p, BAND, DEFAULT_TARGET_RECALL)
    p.add_argument("--json", action="store_true", help='print {"by": F, "matrix": {checkpoint: {slice: {n, mae_value, ci95}}}}')

    p = add("report", "One self-contained HTML report of checkpoints on one dataset: metric panel, calibration, slices, "
                      "cut-points, the model-by-slice matrix and the prototype heatmaps (opens offline; the numbers are eval's).")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT")
    _dataset_flags(p, BAND, DEFAULT_TARGET_RECALL)
    p.add_argument("--out", required=True, metavar="REPORT.html", help="the HTML file to write (atomically)")


def _dataset_flags(p: argparse.ArgumentParser, default_by: str, recall: float) -> None:
    """--on and eval's dataset options, with the same meaning."""
    p.add_argument("--on", required=True, metavar="DATASET", help="dataset spec, e.g. dots:20, csv:FILE (as for eval)")
    p.add_argument("--split", choices=["train", "val", "test", "all"], default="test")
    p.add_argument("--by", default=default_by, metavar="F", help=f"the slice field of the matrix (default {default_by})")
    p.add_argument("--cut", type=float, action="append", default=None, metavar="T", help="decide at cut-point T, as eval --cut")
    p.add_argument("--target-recall", type=float, default=recall, metavar="R", help=f"with --cut, as eval (default {recall})")
    p.add_argument("--faces", action=argparse.BooleanOptionalAction, default=None,
                   help="crop faces as eval does (default: exactly for checkpoints trained with --faces)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images and bad labels (their count is reported)")
    p.add_argument("--cache-dir", default=None, help="feature cache folder (default .cache/features)")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: CUDA when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")



