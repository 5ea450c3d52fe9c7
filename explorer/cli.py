"""The ``ordinal-explorer`` command line.

Errors print one readable line (``error: ...``) and exit with status 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ExplorerError
from .runconfig import Cancelled

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    """Register a sub-command handler."""

    def deco(fn):
        COMMANDS[name] = fn
        return fn

    return deco


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=None, default=_json_default))


def _json_default(obj: Any):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _open(args: argparse.Namespace, need_backbone: bool = True):
    """Load the checkpoint and, when needed, its backbone (or the one given with --backbone)."""
    from .backbones import load_backbone
    from .checkpoints import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    if not need_backbone:
        return ckpt, None
    backbone = load_backbone(getattr(args, "backbone", None) or ckpt.backbone_spec, device=getattr(args, "device", None),
                             progress=DownloadBar())
    ckpt.check_backbone(backbone)
    return ckpt, backbone


def _parse_window(text: str | None, ranks) -> tuple[int, int] | None:
    """'A:B' in rank values (e.g. ages 15:75) -> inclusive rank indices."""
    if not text:
        return None
    try:
        lo, hi = (float(x) for x in text.split(":"))
    except ValueError:
        raise ExplorerError(f"--window must look like A:B with numbers (got '{text}').") from None
    values = ranks.value_array
    inside = np.flatnonzero((values >= lo) & (values <= hi))
    if len(inside) < 3:
        raise ExplorerError(
            f"The window {text} holds {len(inside)} ranks (values {values[0]:g}..{values[-1]:g}); it needs at least 3."
        )
    return int(inside[0]), int(inside[-1])


# --- commands -----------------------------------------------------------------------------------


@command("info")
def cmd_info(args: argparse.Namespace) -> int:
    from .checkpoints import inspect_resume_state
    from .resume import is_resume_name

    path = Path(args.checkpoint)
    resume = inspect_resume_state(path) if path.is_file() and is_resume_name(path) else None
    summary = resume if resume is not None else _open(args, need_backbone=False)[0].summary()
    if args.json:
        _print_json(summary)
        return 0
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        print(f"{key:>18}: {value}")
    return 0


@command("prototypes")
def cmd_prototypes(args: argparse.Namespace) -> int:
    import torch

    ckpt, backbone = _open(args, need_backbone=not args.stored)
    if args.stored:
        matrix = ckpt.prototypes.matrix.numpy()
        timings: list[float] = []
    else:
        model = ckpt.build_model(backbone)
        timings = []
        with torch.no_grad():
            for _ in range(max(1, args.repeat)):
                start = time.perf_counter()
                matrix = model(full_length=args.full_length)
                if matrix.is_cuda:
                    torch.cuda.synchronize()
                timings.append(time.perf_counter() - start)
        matrix = matrix.cpu().numpy()
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, matrix)
    if args.repeat:
        _print_json({
            "median_seconds": statistics.median(timings) if timings else 0.0,
            "repeats": len(timings),
            "shape": list(matrix.shape),
            "full_length": bool(args.full_length),
            "device": str(backbone.device) if backbone else "none",
        })
    elif args.out:
        print(f"wrote {args.out}: {matrix.shape[0]} x {matrix.shape[1]} float32 prototypes")
    return 0


@command("analyze")
def cmd_analyze(args: argparse.Namespace) -> int:
    from .geometry import adjacent_similarity, ordinality_report, similarity_matrix

    ckpt, _ = _open(args, need_backbone=False)
    ranks = ckpt.classes  # the prototype rows (NumCLIP: concept bins)
    window = _parse_window(args.window, ranks)
    protos = ckpt.prototypes.matrix.numpy()
    report = ordinality_report(protos, window=window)
    sims = similarity_matrix(protos, window=window)
    lo = window[0] if window else 0
    adjacent = adjacent_similarity(sims)
    out = {
        "checkpoint": ckpt.name,
        "num_ranks": len(ranks),
        "window": None if window is None else {"ranks": list(window), "labels": [ranks.labels[window[0]], ranks.labels[window[1]]]},
        **{k: v for k, v in report.items() if k != "window"},
        "adjacent_similarity": [
            {"from": ranks.labels[lo + i], "to": ranks.labels[lo + i + 1], "cosine": float(s)} for i, s in enumerate(adjacent)
        ],
    }
    if args.json:
        _print_json(out)
        return 0
    print(f"{ckpt.name}: {len(ranks)} ranks" + (f", window {out['window']['labels'][0]}..{out['window']['labels'][1]}" if window else ""))
    print(f"  ordinality (all pairs): {report['ordinality'] * 100:.2f} %   violation rate: {report['violation_rate'] * 100:.2f} %")
    print("  per span: " + "  ".join(f"s={s}: {v * 100:.1f}%" for s, v in report["spans"].items()))
    print(f"  adjacent cosine: min {adjacent.min():.4f}  mean {adjacent.mean():.4f}  max {adjacent.max():.4f}")
    return 0


@command("predict")
def cmd_predict(args: argparse.Namespace) -> int:
    from .images import open_image

    ckpt, backbone = _open(args)
    images = [open_image(p) for p in args.images]
    crops = None
    if args.face:
        from .faces import DEFAULT_MARGIN, crop_face

        margin = DEFAULT_MARGIN if args.margin is None else args.margin
        crops = [crop_face(image, margin=margin) for image in images]
        images = [crop.image for crop in crops]
    pred = ckpt.predictor().predict(backbone.encode_images(images), coverage=args.coverage)
    records = [{"image": str(p), **pred.record(i, k=args.top)} for i, p in enumerate(args.images)]
    for rec, crop in zip(records, crops or []):
        rec["face"] = crop.summary()
    if args.json:
        _print_json(records if len(records) > 1 else records[0])
        return 0
    ranks = ckpt.ranks
    if backbone.is_demo:
        print("note: the demo backbone is in use; its predictions on real photos are not meaningful", file=sys.stderr)
    for rec in records:
        lo, hi = rec["interval_values"]
        top = ", ".join(f"{t['label']} ({t['prob'] * 100:.1f}%)" for t in rec["top"])
        face = rec.get("face")
        face_note = "" if face is None else (
            f"; face {face['box']} (score {face['score']:.2f})" if face["found"] else "; no face found: whole image")
        print(
            f"{rec['image']}: {rec['value_kind']} {ranks.format_value(rec['value'])}, argmax {rec['argmax_label']}, "
            f"median {rec['median_value']:g}, {rec['coverage'] * 100:.0f}% interval [{lo:g}, {hi:g}]; top: {top}{face_note}"
        )
    return 0


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    from .checkpoints import export_prototypes

    ckpt, _ = _open(args, need_backbone=False)
    if not args.prototypes_only:
        raise ExplorerError("Only prototype-only export exists; pass --prototypes-only.")
    out = export_prototypes(ckpt, args.out)
    print(f"wrote {out} (prototypes only, {ckpt.prototypes.num_ranks} ranks)")
    return 0


@command("import-reference")
def cmd_import_reference(args: argparse.Namespace) -> int:
    from .reference import import_reference

    if not args.run_dir and not args.ckpt:
        raise ExplorerError("Give the reference run with --run-dir DIR or --ckpt FILE.")
    overrides = {
        key: value
        for key, value in {
            "kind": args.learner,
            "num_ranks": args.num_ranks,
            "num_base_ranks": args.num_base_ranks,
            "interpolation": args.interpolation,
            "position": args.position,
            "rank_specific_context": args.rank_specific_context,
        }.items()
        if value is not None
    }
    out = import_reference(
        run_dir=args.run_dir, ckpt=args.ckpt, clip_weights=args.clip_weights, out=args.out,
        learner_overrides=overrides or None, concepts=args.concepts, rank_start=args.rank_start,
        rank_unit=args.rank_unit, device=args.device,
    )
    print(f"wrote {out}")
    return 0


# --- training commands (issue: datasets, trainer, sweeps) ---------------------------------------


class _Bar:
    """tqdm progress bars on stderr fed by runconfig.Progress events (one bar per stage and epoch)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar = None
        self.key: tuple | None = None

    def __call__(self, p) -> None:
        if self.quiet:
            return
        if p.stage == "epoch":
            self.close()
            m = p.metrics
            print(f"epoch {p.epoch}/{p.epochs}  loss {m.get('train_loss', 0):.4f}  val MAE {m.get('val_mae', 0):.3f}"
                  + ("  *best" if m.get("best") else ""), file=sys.stderr)
        elif p.total:
            self._update(p)
        elif p.message:
            self.close()
            print(p.message, file=sys.stderr)

    def _update(self, p) -> None:
        from tqdm import tqdm

        label = p.message or (f"epoch {p.epoch}/{p.epochs}" if p.epoch else p.stage)
        key = (p.stage, p.epoch, label, p.total)
        if key != self.key:
            self.close()
            self.bar = tqdm(total=p.total, desc=label, file=sys.stderr, leave=False, dynamic_ncols=True)
            self.key = key
        self.bar.n = p.done
        if "loss" in p.metrics:
            self.bar.set_postfix(loss=f"{p.metrics['loss']:.4f}", refresh=False)
        self.bar.refresh()
        if p.done >= p.total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.key = None, None


class DownloadBar:
    """A tqdm bar per downloaded file (bytes, percent, rate) on stderr, fed by ``load_backbone(progress=...)``."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar = None
        self.name: str | None = None

    def __call__(self, done: int, total: int | None, filename: str) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if filename != self.name:
            self.close()
            self.bar = tqdm(total=total, desc=filename, unit="B", unit_scale=True, unit_divisor=1024,
                            file=sys.stderr, dynamic_ncols=True, leave=False)
            self.name = filename
        self.bar.n = done
        self.bar.refresh()
        if total is not None and done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.name = None, None


@command("zero-shot")
def cmd_zero_shot(args: argparse.Namespace) -> int:
    from .backbones import load_backbone
    from .presets import build_preset_checkpoint, get_preset

    preset = get_preset(args.preset)
    backbone = load_backbone(args.backbone, device=args.device, progress=DownloadBar(args.quiet))
    out = build_preset_checkpoint(preset, backbone, args.out, name=args.name)
    print(f"wrote {out} (zero-shot preset {preset.name}: {len(preset.labels)} ranks, "
          f"{len(preset.templates)} templates averaged, backbone {backbone.spec})")
    return 0


def _learner_settings(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The options of ``method`` set on the command line (the rank-names file read into names)."""
    from .methods import get_method
    from .options import values_from_args
    from .ranks import read_names_file

    settings = values_from_args(get_method(method).config_class, args)
    if settings.get("rank_names"):
        settings["rank_names"] = read_names_file(settings["rank_names"])
    return settings


def _train_config(args: argparse.Namespace, dataset: str, out: str, method: str = "rank"):
    """The TrainConfig of a train / sweep command: dataclass defaults, the --preset's, then the flags given."""
    from .options import values_from_args
    from .runconfig import TrainConfig, config_from_preset

    return config_from_preset(
        getattr(args, "preset", None), dataset, out, method, values_from_args(TrainConfig, args), _learner_settings(args, method),
        backbone=args.backbone, skip_bad=args.skip_bad, device=args.device, cache_dir=args.cache_dir, name=getattr(args, "name", None),
    )


@command("train")
def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    config = _train_config(args, args.dataset, args.out, args.learner)
    result = train(config, progress=_Bar(args.quiet), resume=args.resume)
    summary = {
        "checkpoint": str(result.checkpoint), "history": str(result.history_path), "best_epoch": result.best_epoch + 1,
        "val": {k: v for k, v in result.val_metrics.items() if k != "per_rank_mae"},
        "test": None if result.test_metrics is None else {k: v for k, v in result.test_metrics.items() if k != "per_rank_mae"},
        "seconds": round(result.seconds, 2),
    }
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        if args.json:
            _print_json(summary)
        else:
            test = summary["test"] or {}
            print(f"wrote {result.checkpoint} (best epoch {summary['best_epoch']}, val MAE {summary['val']['mae_exp']:.3f}"
                  + (f", test MAE {test['mae_exp']:.3f}, test acc {test['acc_max'] * 100:.1f}%" if test else "") + f", {result.seconds:.1f} s)")
    return 0


@command("embed")
def cmd_embed(args: argparse.Namespace) -> int:
    from .backbones import load_backbone
    from .datasets import open_dataset, validate
    from .features import FeatureCache

    backbone = load_backbone(args.backbone, device=args.device, progress=DownloadBar(args.quiet))
    dataset = open_dataset(args.dataset)
    validate(dataset, check_images=True, skip_bad=args.skip_bad)
    cache = FeatureCache(backbone, args.cache_dir)
    bar = _Bar(args.quiet)
    from .train import Progress

    feats = cache.features(dataset, dataset.samples, batch_size=args.batch_size,
                           progress=lambda d, t: bar(Progress("embed", d, t, message="embedding")))
    print(f"{len(feats)} images embedded with {backbone.spec}; cache at {cache.folder}")
    return 0


@command("eval")
def cmd_eval(args: argparse.Namespace) -> int:
    from .train import evaluate_checkpoint

    ckpt, backbone = _open(args)
    result = evaluate_checkpoint(ckpt, backbone, args.dataset, split=args.split, cache_dir=args.cache_dir,
                                 skip_bad=args.skip_bad, min_label=args.long_tail)
    if args.json:
        _print_json(result)
    else:
        m = result["metrics"]
        print(f"{ckpt.name} on {args.dataset} [{args.split}, n={int(m['n'])}]: MAE exp {m['mae_exp']:.3f}, MAE max {m['mae_max']:.3f}, "
              f"acc {m['acc_max'] * 100:.1f}%, 1-off {m['cs1'] * 100:.1f}%, QWK {m['qwk']:.3f}, Spearman {m['spearman']:.3f}")
    return 0


@command("sweep")
def cmd_sweep(args: argparse.Namespace) -> int:
    from .runconfig import parse_learner_list, sweep_grid
    from .train import sweep

    base = _train_config(args, args.dataset, str(Path(args.out_dir) / "run.safetensors"))
    learners = parse_learner_list(args.learners, _learner_settings(args, "rank"))
    shots = [None if s in ("all", "0") else int(s) for s in args.shots_list.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    table = sweep(sweep_grid(base, learners, shots, seeds, args.out_dir), Path(args.out_dir), progress=_Bar(args.quiet))
    print(table["markdown"])
    print(f"wrote {table['csv']} and {table['md']}")
    print(f"wrote {table['curves']} (few-shot / label-shift curves)")
    return 0


def _add_training_parsers(add) -> None:
    """embed / train / eval / sweep sub-commands."""
    from .methods import method_names

    def data_flags(p, with_backbone: bool = True):
        if with_backbone:
            p.add_argument("--backbone", default="demo", help="backbone spec: demo, NAME:TAG (open_clip), hf-hub:ORG/REPO, PATH or ARCH@PATH")
            p.add_argument("--device", default=None, help="cpu, cuda ... (default: CUDA when available)")
        p.add_argument("--cache-dir", default=None, help="feature cache folder (default .cache/features)")
        p.add_argument("--skip-bad", action="store_true", help="skip unreadable images and bad labels (their count is reported)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    def train_flags(p):
        from .methods import REGISTRY, get_method
        from .options import add_flags
        from .runconfig import TrainConfig

        from .recipes import RECIPES

        p.add_argument("--preset", choices=list(RECIPES), default=None,
                       help="paper preset: ranks, prompt initialisation and the reference recipe of "
                            + ", ".join(f"{k} ({r.title})" for k, r in RECIPES.items()) + "; flags given win")
        add_flags(p, TrainConfig)
        seen: set[str] = set()
        for name in REGISTRY:
            add_flags(p, get_method(name).config_class, seen)

    p = add("embed", "Fill the feature cache for a dataset (resumable; progress shown).")
    p.add_argument("dataset", help="DATASET spec, e.g. dots:20, utkface:DIR, list:ROOT:TRAIN.txt:VAL.txt:TEST.txt")
    p.add_argument("--batch-size", type=int, default=64)
    data_flags(p)

    p = add("train", "Train a prompt learner (or a baseline) and write the best checkpoint by validation MAE.")
    p.add_argument("dataset", help="DATASET spec, e.g. dots:20, utkface:DIR, csv:FILE")
    p.add_argument("--learner", choices=method_names(), default="rank", help="method: " + ", ".join(method_names()))
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors); history goes beside it")
    p.add_argument("--name", default=None, help="display name stored in the checkpoint")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its .resume.safetensors state")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    data_flags(p)
    train_flags(p)

    p = add("eval", "Evaluate a checkpoint on a dataset split with the full metric panel.", backbone=True)
    p.add_argument("checkpoint")
    p.add_argument("dataset")
    p.add_argument("--split", choices=["train", "val", "test", "all"], default="test")
    p.add_argument("--long-tail", type=int, default=None, metavar="MIN", help="long-tail evaluation: only labels >= MIN (e.g. 50)")
    p.add_argument("--json", action="store_true")
    data_flags(p, with_backbone=False)

    p = add("sweep", "Several learners x shots x seeds; writes a mean +- std results table (CSV and Markdown).")
    p.add_argument("dataset")
    p.add_argument("--learners", default="template,linear,plain,rank:linear,rank:inv_prop,rank:normal",
                   help="comma list of learner[:interpolation] (default: all baselines and interpolations)")
    p.add_argument("--shots-list", default="16", help="comma list of shots per label; 'all' for the full train split")
    p.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
    p.add_argument("--out-dir", required=True, help="folder for the runs and the results table")
    data_flags(p)
    train_flags(p)


# --- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for every sub-command."""
    parser = argparse.ArgumentParser(
        prog="ordinal-explorer",
        description="OrdinalCLIP Explorer: inspect, export and use OrdinalCLIP / CoOp prompt-learner checkpoints.",
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

    p = add("info", "Summary of a checkpoint (kind, backbone, learner, ranks, metrics).")
    p.add_argument("checkpoint", help="checkpoint .safetensors file")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("prototypes", "Write the normalised R x E prototypes (float32 .npy), or benchmark their computation.", backbone=True)
    p.add_argument("checkpoint")
    p.add_argument("--out", help="output .npy file")
    p.add_argument("--repeat", type=int, default=0, metavar="N",
                   help="compute N times and print JSON with median_seconds (computation only, after loading)")
    p.add_argument("--full-length", action="store_true", help="pad prompts to 77 tokens (reference path) instead of truncating")
    p.add_argument("--stored", action="store_true", help="use the prototypes stored in the checkpoint (no backbone needed)")

    p = add("analyze", "Prototype geometry: ordinality per span, violation rate, adjacent similarities.")
    p.add_argument("checkpoint")
    p.add_argument("--window", metavar="A:B", help="only ranks whose values lie in [A, B], e.g. ages 15:75")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("predict", "Predict the rank distribution of images.", backbone=True)
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top", type=int, default=3, help="how many top ranks to list (default 3)")
    p.add_argument("--coverage", type=float, default=0.9, help="central interval coverage (default 0.9)")
    p.add_argument("--json", action="store_true", help="print JSON (one object, or a list for several images)")
    p.add_argument("--face", action="store_true",
                   help="crop the largest face (as the app does) before encoding; JSON gains face: {found, box, score}")
    p.add_argument("--margin", type=float, default=None,
                   help="with --face: space around the face on every side, a fraction of its size (default: the app's, 0.4)")

    p = add("export", "Export a prototype-only checkpoint (predicts like the full one; no text encoder needed).")
    p.add_argument("checkpoint")
    p.add_argument("--prototypes-only", action="store_true", required=True, help="keep only the prototypes")
    p.add_argument("--out", required=True, help="output .safetensors file")

    p = add("import-reference", "Import a reference OrdinalCLIP / CoOp / NumCLIP run (Lightning .ckpt) as an explorer checkpoint.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", help="reference output folder holding config.yaml and ckpts/*.ckpt")
    src.add_argument("--ckpt", help="a reference .ckpt file (give the learner flags below when there is no config.yaml)")
    p.add_argument("--clip-weights", required=True, help="the OpenAI-layout CLIP weights the run started from (e.g. ViT-B-16.pt)")
    p.add_argument("--out", required=True, help="output .safetensors checkpoint")
    p.add_argument("--learner", choices=["rank", "plain", "numclip"], help="learner kind (RankPromptLearner = rank, RegCLIPSSR = numclip)")
    p.add_argument("--num-ranks", type=int, help="number of ranks (NumCLIP: label ranks; default 0..100 years for age concepts)")
    p.add_argument("--rank-start", type=float, help="value of the first rank (default 0)")
    p.add_argument("--rank-unit", help="unit of the rank values (NumCLIP age concepts: years)")
    p.add_argument("--concepts", help="NumCLIP concept bins: a preset (age, adience, aesthetics, historical, dots) or a bins file; default age")
    p.add_argument("--num-base-ranks", type=int)
    p.add_argument("--interpolation", choices=["linear", "inv_prop", "normal"])
    p.add_argument("--position", choices=["tail", "front", "middle"])
    p.add_argument("--rank-specific-context", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--device", default="cpu")

    from .presets import PRESETS

    p = add("zero-shot", "Write a zero-shot template checkpoint from a preset's prompt ensemble (nothing is trained).")
    p.add_argument("--preset", required=True, choices=list(PRESETS),
                   help="; ".join(f"{k}: {v.title}" for k, v in PRESETS.items()))
    p.add_argument("--backbone", default="demo", help="backbone spec: demo, NAME:TAG, hf-hub:ORG/REPO, PATH or ARCH@PATH")
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    p.add_argument("--name", default=None, help="display name stored in the checkpoint")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: CUDA when available)")
    p.add_argument("--quiet", action="store_true", help="no download progress bar")

    _add_training_parsers(add)
    from .cli_analysis import add_analysis_parsers  # registers decode / curves

    add_analysis_parsers(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ordinal-explorer``."""
    parser = build_parser()
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
