"""Sub-commands that train and evaluate: embed, train, eval, sweep."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from explorer.cli.base import DownloadBar, _Bar, _open, _print_json, command, precision_flag, say_precision


def _learner_settings(args: argparse.Namespace, method: str | None) -> dict[str, Any]:
    """The options of ``method`` (None: of every registered method) set on the command line (the
    rank-names file read into names)."""
    from explorer.core.options import values_from_args
    from explorer.core.ranks import read_names_file
    from explorer.methods import REGISTRY, get_method

    settings: dict[str, Any] = {}
    for name in [method] if method else list(REGISTRY):
        settings.update(values_from_args(get_method(name).config_class, args))
    if settings.get("rank_names"):
        settings["rank_names"] = read_names_file(settings["rank_names"])
    return settings


def _train_config(args: argparse.Namespace, dataset: str, out: str, method: str | None = None):
    """The TrainConfig of a train / sweep command: dataclass defaults, the --preset's, then the flags given."""
    from explorer.core.options import values_from_args
    from explorer.methods import DEFAULT_METHOD
    from explorer.training.config import TrainConfig, config_from_preset

    method = method or DEFAULT_METHOD
    return config_from_preset(
        getattr(args, "preset", None), dataset, out, method, values_from_args(TrainConfig, args), _learner_settings(args, method),
        backbone=args.backbone, skip_bad=args.skip_bad, device=args.device, cache_dir=args.cache_dir, name=getattr(args, "name", None),
        precision=say_precision(args),
    )


@command("train")
def cmd_train(args: argparse.Namespace) -> int:
    from explorer.training.trainer import train

    config = _train_config(args, args.dataset, args.out, args.learner)
    result = train(config, progress=_Bar(args.quiet), resume=args.resume)
    summary = {
        "checkpoint": str(result.checkpoint), "history": str(result.history_path), "best_epoch": result.best_epoch + 1,
        "val": {k: v for k, v in result.val_metrics.items() if k != "per_rank_mae"},
        "test": None if result.test_metrics is None else {k: v for k, v in result.test_metrics.items() if k != "per_rank_mae"},
        "seconds": round(result.seconds, 2),
    }
    if int(os.environ.get("RANK", "0")) == 0:
        if args.json:
            _print_json(summary)
        else:
            test, key = summary["test"] or {}, config.selection_metric  # NumCLIP: the regressed value's MAE
            print(f"wrote {result.checkpoint} (best epoch {summary['best_epoch']}, val MAE {summary['val'][key]:.3f}"
                  + (f", test MAE {test[key]:.3f}, test acc {test['acc_max'] * 100:.1f}%" if test else "") + f", {result.seconds:.1f} s)")
    return 0


@command("embed")
def cmd_embed(args: argparse.Namespace) -> int:
    from explorer.backbones.load import load_backbone
    from explorer.data.datasets import open_dataset, validate
    from explorer.data.faces import faces_sentence
    from explorer.data.features import FeatureCache
    from explorer.training.config import Progress

    backbone = load_backbone(args.backbone, device=args.device, progress=DownloadBar(args.quiet), precision=args.precision)
    say_precision(args, backbone.precision)
    dataset = open_dataset(args.dataset)
    validate(dataset, check_images=True, skip_bad=args.skip_bad)
    dataset.face_margin = args.face_margin if args.faces else None
    cache = FeatureCache(backbone, args.cache_dir)
    bar = _Bar(args.quiet)
    feats = cache.features(dataset, dataset.samples, batch_size=args.batch_size,
                           progress=lambda d, t: bar(Progress("embed", d, t, message="embedding")))
    bar.close()
    faces = faces_sentence(cache.last_faces)
    print(f"{len(feats)} images embedded with {backbone.spec}" + (f" ({faces})" if faces else "") + f"; cache at {cache.folder}")
    return 0


@command("eval")
def cmd_eval(args: argparse.Namespace) -> int:
    from explorer.analysis.evaluation import evaluate_checkpoint

    ckpt, backbone = _open(args)
    by = [f.strip() for f in args.by.split(",") if f.strip()] if args.by else None
    result = evaluate_checkpoint(ckpt, backbone, args.dataset, split=args.split, cache_dir=args.cache_dir,
                                 skip_bad=args.skip_bad, min_label=args.long_tail, faces=args.faces,
                                 by=by, errors_csv=args.errors)
    if args.json:
        _print_json(result)
    else:
        m, faces = result["metrics"], result["faces"]
        print(f"{ckpt.name} on {args.dataset} [{args.split}, n={int(m['n'])}]: MAE exp {m['mae_exp']:.3f}, MAE max {m['mae_max']:.3f}, "
              f"acc {m['acc_max'] * 100:.1f}%, 1-off {m['cs1'] * 100:.1f}%, QWK {m['qwk']:.3f}, Spearman {m['spearman']:.3f}"
              + (f"; faces found in {faces['found']} of {faces['images']} images" if faces else ""))
        if "labels" in result:
            print(result["labels"]["note"])
        _print_slices(result)
    if args.errors:
        print(f"wrote the per-image errors, worst first, to {args.errors}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _print_slices(result: dict) -> None:
    """One line per slice (value MAE and its 95 % interval) and each field's largest gap."""
    print(f"rank axis ({result['rank_axis']['axis']}): Spearman {result['rank_axis']['spearman']:.3f}")
    for name, slices in result.get("slices", {}).items():
        for value, m in slices.items():
            ci = m.get("ci95")
            print(f"  {name}={value}: n={m['n']}" + (f", MAE {m['mae_value']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if m["n"] else " (empty)"))
        gap = result["gaps"][name]
        if gap:
            print(f"  {name}: largest gap {gap['gap']:.3f} ({gap['worst']} vs {gap['best']})")


@command("sweep")
def cmd_sweep(args: argparse.Namespace) -> int:
    from explorer.training.config import parse_learner_list, sweep_grid
    from explorer.training.sweeps import sweep

    base = _train_config(args, args.dataset, str(Path(args.out_dir) / "run.safetensors"))
    learners = parse_learner_list(args.learners, _learner_settings(args, None))
    shots = [None if s in ("all", "0") else int(s) for s in args.shots_list.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    table = sweep(sweep_grid(base, learners, shots, seeds, args.out_dir), Path(args.out_dir), progress=_Bar(args.quiet))
    print(table["markdown"])
    print(f"wrote {table['csv']} and {table['md']}")
    print(f"wrote {table['curves']} (few-shot / label-shift curves)")
    return 0


def _data_flags(p, with_backbone: bool = True) -> None:
    """--backbone, --device, --precision, --cache-dir, --skip-bad, --quiet."""
    if with_backbone:
        p.add_argument("--backbone", default="demo", help="backbone spec: demo, NAME:TAG (open_clip), hf-hub:ORG/REPO, PATH or ARCH@PATH")
        p.add_argument("--device", default=None, help="cpu, cuda ... (default: CUDA when available)")
    precision_flag(p)
    p.add_argument("--cache-dir", default=None, help="feature cache folder (default .cache/features)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images and bad labels (their count is reported)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _face_flags(p, text: str, margin: bool = True) -> None:
    """--faces / --no-faces (and --face-margin)."""
    from explorer.data.inputs import DEFAULT_MARGIN

    p.add_argument("--faces", action=argparse.BooleanOptionalAction, default=None, help=text)
    if margin:
        p.add_argument("--face-margin", type=float, default=DEFAULT_MARGIN,
                       help=f"with --faces: space around the face, a fraction of its size (default {DEFAULT_MARGIN})")


def _train_flags(p) -> None:
    """--preset, the TrainConfig flags and every method's own flags."""
    from explorer.core.options import add_flags
    from explorer.methods import REGISTRY, get_method
    from explorer.training.config import TrainConfig
    from explorer.training.recipes import RECIPES

    p.add_argument("--preset", choices=list(RECIPES), default=None,
                   help="paper preset: ranks, prompt initialisation and the reference recipe of "
                        + ", ".join(f"{k} ({r.title})" for k, r in RECIPES.items()) + "; flags given win")
    add_flags(p, TrainConfig)
    seen: set[str] = set()
    for name in REGISTRY:
        add_flags(p, get_method(name).config_class, seen)


def _add_training_parsers(add) -> None:
    """embed / train / eval / sweep sub-commands."""
    from explorer.methods import ALIASES, DEFAULT_METHOD, method_names

    p = add("embed", "Fill the feature cache for a dataset (resumable; progress shown).")
    p.add_argument("dataset", help="DATASET spec, e.g. dots:20, utkface:DIR, list:ROOT:TRAIN.txt:VAL.txt:TEST.txt")
    p.add_argument("--batch-size", type=int, default=64)
    _face_flags(p, "crop each image to its largest face exactly as Predict does (images without one are used whole)")
    _data_flags(p)

    p = add("train", "Train a prompt learner (or a baseline) and write the best checkpoint by validation MAE.")
    p.add_argument("dataset", help="DATASET spec, e.g. dots:20, utkface:DIR, csv:FILE")
    p.add_argument("--learner", choices=method_names(aliases=True), default=DEFAULT_METHOD, metavar="METHOD",
                   help="method: " + ", ".join(method_names()) + f" (old names {', '.join(ALIASES)} work too)")
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors); history goes beside it")
    p.add_argument("--name", default=None, help="display name stored in the checkpoint")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its .resume.safetensors state")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    _data_flags(p)
    _train_flags(p)

    p = add("eval", "Evaluate a checkpoint on a dataset split with the full metric panel.", backbone=True)
    p.add_argument("checkpoint")
    p.add_argument("dataset")
    p.add_argument("--split", choices=["train", "val", "test", "all"], default="test")
    p.add_argument("--long-tail", type=int, default=None, metavar="MIN", help="long-tail evaluation: only labels >= MIN (e.g. 50)")
    p.add_argument("--by", default=None, metavar="F1,F2",
                   help="metrics per slice of these fields (CSV columns, UTKFace gender/race, Adience gender, band)")
    p.add_argument("--errors", default=None, metavar="OUT.csv", help="write one row per image, largest error first")
    p.add_argument("--json", action="store_true")
    _face_flags(p, "crop each image to its largest face exactly as 'predict --face' does "
                  "(default: exactly when the checkpoint was trained with --faces, at its margin)", margin=False)
    _data_flags(p, with_backbone=False)

    p = add("sweep", "Several learners x shots x seeds; writes a mean +- std results table (CSV and Markdown).")
    p.add_argument("dataset")
    p.add_argument("--learners", default="zeroshot,linear-probe,coop,ordinalclip:linear,ordinalclip:inv_prop,ordinalclip:normal",
                   help="comma list of method[:interpolation] (default: all baselines and interpolations; old names work too)")
    p.add_argument("--shots-list", default="16", help="comma list of shots per label; 'all' for the full train split")
    p.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
    p.add_argument("--out-dir", required=True, help="folder for the runs and the results table")
    _data_flags(p)
    _train_flags(p)
