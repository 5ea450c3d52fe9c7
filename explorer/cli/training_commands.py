"""Sub-commands that train and evaluate: embed, train, eval, sweep (the last two on an executor:
inline, local worker processes or a Slurm job array; docs/cluster.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from explorer.cli.common import DownloadBar, ProgressBar, command, open_checkpoint, precision_flag, print_json, say_precision
from explorer.core.errors import ExplorerError


def _usable_methods() -> dict[str, Any]:
    """name -> Method class of every method that can be used (an unusable plug-in is left out)."""
    from explorer.methods import find_method, method_names

    return {name: cls for name in method_names() if (cls := find_method(name)) is not None}


def method_settings(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The options of the methods ``names`` set on the command line (the rank-names file read into names);
    an option that belongs to none of them is refused in one sentence naming the methods it belongs to."""
    from explorer.core.options import flag_fields, values_from_args
    from explorer.core.ranks import read_names_file
    from explorer.methods import canonical_name, get_method

    chosen = [canonical_name(n) for n in names]
    owners: dict[str, tuple[str, list[str]]] = {}
    for name, cls in _usable_methods().items():
        for f in flag_fields(cls.config_class):
            owners.setdefault(f.metadata["flag"], (f.name, []))[1].append(name)
    for flag, (field_name, methods) in owners.items():
        if getattr(args, field_name, None) is not None and not set(methods) & set(chosen):
            raise ExplorerError(f"{flag} is an option of {', '.join(methods)}, not of {', '.join(dict.fromkeys(chosen))}.")
    settings: dict[str, Any] = {}
    for name in dict.fromkeys(chosen):
        settings.update(values_from_args(get_method(name).config_class, args))
    if settings.get("rank_names"):
        settings["rank_names"] = read_names_file(settings["rank_names"])
    return settings


def train_config(args: argparse.Namespace, dataset: str, out: str, method: str | None = None, settings: dict | None = None):
    """The TrainConfig of a train / sweep command: dataclass defaults, the --preset's, then the flags given
    (the method's own: ``settings``, default: those set on the command line for ``method``)."""
    from explorer.core.options import values_from_args
    from explorer.methods import DEFAULT_METHOD
    from explorer.training.config import TrainConfig, config_from_recipe

    method = method or DEFAULT_METHOD
    settings = method_settings(args, [method]) if settings is None else settings
    return config_from_recipe(
        getattr(args, "recipe", None), dataset, out, method, values_from_args(TrainConfig, args), settings,
        backbone=args.backbone, skip_bad=args.skip_bad, device=args.device, cache_dir=args.cache_dir, name=getattr(args, "name", None),
        precision=getattr(args, "precision", None),
    )


@command("train")
def cmd_train(args: argparse.Namespace) -> int:
    from explorer.training.trainer import train

    config = train_config(args, args.dataset, args.out, args.method)
    say_precision(args)
    result = train(config, progress=ProgressBar(args.quiet), resume=args.resume)
    summary = {
        "checkpoint": str(result.checkpoint), "history": str(result.history_path), "best_epoch": result.best_epoch + 1,
        "val": {k: v for k, v in result.val_metrics.items() if k != "per_rank_mae"},
        "test": None if result.test_metrics is None else {k: v for k, v in result.test_metrics.items() if k != "per_rank_mae"},
        "seconds": round(result.seconds, 2),
    }
    if int(os.environ.get("RANK", "0")) == 0:
        if args.json:
            print_json(summary)
        else:
            test, key = summary["test"] or {}, config.selection_metric  # NumCLIP: the regressed value's MAE
            print(f"wrote {result.checkpoint} (best epoch {summary['best_epoch']}, val MAE {summary['val'][key]:.3f}"
                  + (f", test MAE {test[key]:.3f}, test acc {test['acc_max'] * 100:.1f}%" if test else "") + f", {result.seconds:.1f} s)")
    return 0


@command("embed")
def cmd_embed(args: argparse.Namespace) -> int:
    spec = _executor(args)
    if args.shards is not None or spec.executor != "inline":
        return _embed_in_shards(args, spec)
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
    bar = ProgressBar(args.quiet)
    feats = cache.features(dataset, dataset.samples, batch_size=args.batch_size,
                           progress=lambda d, t: bar(Progress("embed", d, t, message="embedding")))
    bar.close()
    faces = faces_sentence(cache.last_faces)
    print(f"{len(feats)} images embedded with {backbone.spec}" + (f" ({faces})" if faces else "") + f"; cache at {cache.folder}")
    return 0


def _embed_in_shards(args: argparse.Namespace, spec) -> int:
    """``embed --shards K [--executor local|slurm --workers N]``: the cache filled shard by shard."""
    from explorer.training.executors import local_workers
    from explorer.training.shards import EmbedJob, embed_sharded

    shards = args.shards or (local_workers(spec, 10**9) if spec.executor == "local" else spec.workers or 1)
    job = EmbedJob(args.dataset, args.backbone, shards, args.cache_dir, args.device, args.batch_size,
                   args.face_margin if args.faces else None, args.skip_bad)
    bar = ProgressBar(args.quiet)
    summary = embed_sharded(job, spec, progress=bar)
    bar.close()
    faces = f"; faces found in {summary['faces_found']} of {summary['images']} images" if args.faces else ""
    print(f"{summary['images']} images in {summary['shards']} shards, {summary['embedded']} embedded now "
          f"(the rest were cached) with {summary['backbone']}{faces}; cache at {summary['cache']}")
    return 0


@command("eval")
def cmd_eval(args: argparse.Namespace) -> int:
    from explorer.analysis.cuts import check_cut, check_target_recall
    from explorer.analysis.evaluation import evaluate_checkpoint

    def check_cuts(ckpt) -> None:  # a bad --cut is said before the backbone loads
        for cut in args.cut or ():
            check_cut(cut, ckpt.ranks)
        check_target_recall(args.target_recall)

    ckpt, backbone = open_checkpoint(args, check=check_cuts)
    by = [f.strip() for f in args.by.split(",") if f.strip()] if args.by else None
    result = evaluate_checkpoint(ckpt, backbone, args.dataset, split=args.split, cache_dir=args.cache_dir,
                                 skip_bad=args.skip_bad, min_label=args.long_tail, faces=args.faces,
                                 by=by, errors_csv=args.errors, cuts=args.cut, target_recall=args.target_recall)
    if args.json:
        print_json(result)
    else:
        m, faces = result["metrics"], result["faces"]
        print(f"{ckpt.name} on {args.dataset} [{args.split}, n={int(m['n'])}]: MAE exp {m['mae_exp']:.3f}, MAE max {m['mae_max']:.3f}, "
              f"acc {m['acc_max'] * 100:.1f}%, 1-off {m['cs1'] * 100:.1f}%, QWK {m['qwk']:.3f}, Spearman {m['spearman']:.3f}"
              + (f"; faces found in {faces['found']} of {faces['images']} images" if faces else ""))
        if "labels" in result:
            print(result["labels"]["note"])
        _print_slices(result)
        _print_cuts(result, ckpt.ranks.unit)
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


def _print_cuts(result: dict, unit: str) -> None:
    """One block per cut: counts, AUC / AP, and the error rates at the two operating points."""

    def rate(x, ci) -> str:
        return "n/a" if x is None else f"{100 * x:.1f} % [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"

    for key, cut in result.get("cuts", {}).items():
        auc = "n/a" if cut["auc"] is None else f"{cut['auc']:.3f}"
        ap = "n/a" if cut["average_precision"] is None else f"{cut['average_precision']:.3f}"
        print(f"cut {key}{' ' + unit if unit else ''}: {cut['below']} below, {cut['at_or_above']} at or above; AUC {auc}, AP {ap}")
        for name in ("default", "target_recall"):
            point = cut[name]
            if point["threshold"] is None:
                continue
            label = "P >= 0.5" if name == "default" else f"recall {point['recall']:g} for below (P >= {point['threshold']:.4f})"
            print(f"  {label}: below called at-or-above {rate(point['below_called_above'], point['ci95']['below_called_above'])}, "
                  f"at-or-above called below {rate(point['above_called_below'], point['ci95']['above_called_below'])}")
        if cut.get("note"):
            print(f"  {cut['note']}")


def _executor(args: argparse.Namespace):
    """The checked ExecutorSpec of --executor, --workers and the --slurm-* flags."""
    from explorer.training.executors import executor_spec

    flags = {"partition": args.slurm_partition, "time": args.slurm_time, "cpus": args.slurm_cpus, "gpus": args.slurm_gpus}
    return executor_spec(args.executor, args.workers, flags)


def _sweep_runs(args: argparse.Namespace):
    """The grid of a sweep command: methods x shots x label shifts x seeds."""
    from explorer.training.config import parse_method_list, sweep_grid

    names = [spec.partition(":")[0] for spec in args.methods.split(",") if spec.strip()]
    settings = method_settings(args, names)  # an option none of the listed methods has is refused
    base = train_config(args, args.dataset, str(Path(args.out_dir) / "run.safetensors"), settings={})
    methods = parse_method_list(args.methods, settings)
    try:
        shots = [None if s.strip() in ("all", "0") else int(s) for s in args.shots_list.split(",")]
        seeds = [int(s) for s in args.seeds.split(",")]
        shifts = None if args.label_shifts is None else [
            None if s.strip() == "none" else [float(v) for v in s.split(":")] for s in args.label_shifts.split(",")]
    except ValueError as exc:
        raise ExplorerError(f"--shots-list, --seeds and --label-shifts take comma lists of numbers ({exc}).") from None
    if shifts and any(s is not None and len(s) != 2 for s in shifts):
        raise ExplorerError("--label-shifts takes a comma list of C:S pairs or none, e.g. none,10:0.5.")
    if shifts and base.label_shift:
        raise ExplorerError("Give --label-shift or --label-shifts, not both.")
    return sweep_grid(base, methods, shots, seeds, args.out_dir, shifts)


@command("sweep")
def cmd_sweep(args: argparse.Namespace) -> int:
    from explorer.training import sweep_files
    from explorer.training.sweeps import sweep

    spec = _executor(args)
    runs = _sweep_runs(args)
    if args.status:
        print("\n".join(sweep_files.status_lines(sweep_files.sweep_status(Path(args.out_dir), runs))))
        return 0
    say_precision(args)
    table = sweep(runs, Path(args.out_dir), progress=ProgressBar(args.quiet), executor=spec, wait=not args.no_wait)
    if "submitted" in table:
        print(f"{table['submitted']} runs submitted; 'sweep ... --status' shows them, and the same command run again "
              "when they have finished writes the tables.")
        return 0
    if table["markdown"]:
        print(table["markdown"])
        print(f"wrote {table['csv']} and {table['md']}")
    if table["curves"]:
        print(f"wrote {table['curves']} (few-shot / label-shift curves)")
    counts = table["counts"]
    unfinished = counts["waiting"] + counts["running"]
    if counts["failed"]:
        print(f"{counts['failed']} of {len(runs)} runs failed (their sentence is in the table and in failed.json in their folder).")
    if unfinished:
        print(f"{unfinished} of {len(runs)} runs did not finish (a worker stopped); run the same command again to run them.")
    return 1 if counts["failed"] or unfinished else 0


def _data_flags(p, with_backbone: bool = True) -> None:
    """--backbone, --device, --precision, --cache-dir, --skip-bad, --quiet."""
    if with_backbone:
        p.add_argument("--backbone", default="demo", help="backbone spec: demo, NAME:TAG (open_clip), hf-hub:ORG/REPO, PATH or ARCH@PATH")
        p.add_argument("--device", default=None, help="cpu, cuda ... (default: CUDA when available)")
    precision_flag(p)
    p.add_argument("--cache-dir", default=None, help="feature cache folder (default .cache/features)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images and bad labels (their count is reported)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _executor_flags(p, what: str) -> None:
    """--executor, --workers and the --slurm-* flags (their defaults: the Slurm defaults file)."""
    p.add_argument("--executor", default="inline", metavar="{inline,local,slurm}",
                   help=f"where the {what} run: inline (this process, one after another), local (worker processes on this "
                        "machine) or slurm (one Slurm job array); default inline")
    p.add_argument("--workers", type=int, default=None,
                   help="local: worker processes (default: one per core), each with its share of the cores; "
                        "slurm: array tasks running at once (default: all)")
    for flag, kind, text in (("partition", str, "partition"), ("time", str, "time limit per task: minutes or [D-]H:MM[:SS]"),
                             ("cpus", int, "cpus per task (also each run's torch threads)"), ("gpus", int, "gpus per task")):
        p.add_argument(f"--slurm-{flag}", type=kind, default=None,
                       help=f"with --executor slurm: {text} (default: the Slurm defaults file, docs/cluster.md)")


def _face_flags(p, text: str, margin: bool = True) -> None:
    """--faces / --no-faces (and --face-margin)."""
    from explorer.data.inputs import DEFAULT_MARGIN

    p.add_argument("--faces", action=argparse.BooleanOptionalAction, default=None, help=text)
    if margin:
        p.add_argument("--face-margin", type=float, default=DEFAULT_MARGIN,
                       help=f"with --faces: space around the face, a fraction of its size (default {DEFAULT_MARGIN})")


def _train_flags(p) -> None:
    """--preset, the TrainConfig flags and every usable method's own flags (a plug-in whose flag is one
    of train's own is left out, with one line on stderr)."""
    from explorer.core.options import add_flags, flag_fields
    from explorer.training.config import TrainConfig
    from explorer.training.recipes import RECIPES

    p.add_argument("--recipe", "--preset", dest="recipe", choices=list(RECIPES), default=None,
                   help="a paper's recipe (--preset works too): ranks, prompt initialisation and the reference training of "
                        + ", ".join(f"{k} ({r.title})" for k, r in RECIPES.items()) + "; flags given win")
    seen: dict[str, str] = {}
    add_flags(p, TrainConfig, seen)
    own = dict(seen)
    for name, cls in _usable_methods().items():
        clash = [flag for flag in (f.metadata["flag"] for f in flag_fields(cls.config_class)) if flag in own]
        if clash:
            print(f"ordinal-explorer: the method '{name}' is left out: its flag {clash[0]} is one of train's own.", file=sys.stderr)
            continue
        add_flags(p, cls.config_class, seen)


def add_training_parsers(add) -> None:
    """embed / train / eval / sweep sub-commands."""
    from explorer.analysis.cuts import DEFAULT_TARGET_RECALL
    from explorer.methods import ALIASES, DEFAULT_METHOD, method_names

    p = add("embed", "Fill the feature cache for a dataset (resumable; progress shown).")
    p.add_argument("dataset", help="DATASET spec, e.g. dots:20, utkface:DIR, list:ROOT:TRAIN.txt:VAL.txt:TEST.txt")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shards", type=int, default=None, metavar="K",
                   help="cut the images into K shards, each written to the cache as one file when complete and skipped "
                        "when already there (default with --executor local|slurm: one per worker)")
    _executor_flags(p, "shards")
    _face_flags(p, "crop each image to its largest face exactly as Predict does (images without one are used whole)")
    _data_flags(p)

    p = add("train", "Train a method (a prompt learner or a baseline) and write the best checkpoint by validation MAE.")
    p.add_argument("dataset", help="DATASET spec, e.g. dots:20, utkface:DIR, csv:FILE")
    p.add_argument("--method", "--learner", dest="method", choices=method_names(aliases=True), default=DEFAULT_METHOD, metavar="METHOD",
                   help="method: " + ", ".join(method_names()) + f" (--learner and the old names {', '.join(ALIASES)} work too)")
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
    p.add_argument("--errors", default=None, metavar="OUT.csv", help="write one row per image, largest error first (with each cut's score)")
    p.add_argument("--cut", type=float, action="append", default=None, metavar="T",
                   help="decide at cut-point T in the label's units (repeatable): the score P(y >= T), AUC, average precision, "
                        "error rates at P >= 0.5 and at the target recall (docs/cli.md#cut-points)")
    p.add_argument("--target-recall", type=float, default=DEFAULT_TARGET_RECALL, metavar="R",
                   help=f"with --cut: the fraction of below-T images to call below (default {DEFAULT_TARGET_RECALL})")
    p.add_argument("--json", action="store_true")
    _face_flags(p, "crop each image to its largest face exactly as 'predict --face' does "
                  "(default: exactly when the checkpoint was trained with --faces, at its margin)", margin=False)
    _data_flags(p, with_backbone=False)

    p = add("sweep", "Several methods x shots x seeds; writes a mean +- std results table (CSV and Markdown).")
    p.add_argument("dataset")
    p.add_argument("--methods", "--learners", dest="methods", default="zeroshot,linear-probe,coop,ordinalclip:linear,ordinalclip:inv_prop,ordinalclip:normal",
                   help="comma list of method[:interpolation] (default: all baselines and interpolations; old names work too)")
    p.add_argument("--shots-list", default="16", help="comma list of shots per label; 'all' for the full train split")
    p.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
    p.add_argument("--label-shifts", default=None, metavar="C:S,...",
                   help="comma list of label shifts to sweep, C:S pairs or none (e.g. none,10:0.5); default: --label-shift")
    p.add_argument("--out-dir", required=True, help="folder for the runs and the results table")
    p.add_argument("--status", action="store_true", help="print each run's state (done, running, failed, waiting) and exit")
    p.add_argument("--no-wait", action="store_true",
                   help="local / slurm: submit the runs and return (run the command again afterwards for the tables)")
    _executor_flags(p, "runs")
    _data_flags(p)
    _train_flags(p)
