"""Sub-commands on checkpoints: info, prototypes, analyze, predict, export, import-reference, zero-shot."""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from explorer.cli.common import DownloadBar, command, open_checkpoint, parse_window, precision_flag, print_json
from explorer.core.errors import ExplorerError
from explorer.data.inputs import checkpoint_inputs, crops_faces

# --- commands -----------------------------------------------------------------------------------


@command("info")
def cmd_info(args: argparse.Namespace) -> int:
    from explorer.store.checkpoints import inspect_resume_state
    from explorer.store.resume import is_resume_name

    if args.checkpoint is None:
        return _print_methods(args.json)
    path = Path(args.checkpoint)
    resume = inspect_resume_state(path) if path.is_file() and is_resume_name(path) else None
    summary = resume if resume is not None else open_checkpoint(args, need_backbone=False)[0].summary()
    if args.json:
        print_json(summary)
        return 0
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        print(f"{key:>18}: {value}")
    return 0


def method_table() -> list[dict]:
    """One row per known method: name, title, where it comes from, what it offers; or why it is unusable."""
    from explorer.methods import REGISTRY, find_method, method_names, unusable_methods
    from explorer.methods.hooks import CAPABILITIES, offers

    unusable = unusable_methods()
    rows = []
    for name in dict.fromkeys([*method_names(), *unusable]):
        cls = find_method(name)
        origin = "built-in" if name in REGISTRY else "plug-in"
        if cls is None:
            rows.append({"method": name, "origin": origin, "usable": False, "problem": unusable.get(name, "")})
            continue
        rows.append({"method": name, "origin": origin, "usable": True, "title": cls.title,
                     "offers": [c for c in CAPABILITIES if offers(cls, c)]})
    return rows


def _print_methods(as_json: bool) -> int:
    rows = method_table()
    if as_json:
        print_json({"methods": rows})
        return 0
    for row in rows:
        if row["usable"]:
            offered = f"; offers {', '.join(row['offers'])}" if row["offers"] else ""
            print(f"{row['method']:>14}: {row['title']} ({row['origin']}{offered})")
        else:
            print(f"{row['method']:>14}: unusable ({row['origin']}): {row['problem']}")
    return 0


@command("prototypes")
def cmd_prototypes(args: argparse.Namespace) -> int:
    import torch

    ckpt, backbone = open_checkpoint(args, need_backbone=not args.stored)
    text_path = None  # which text-encoder path ran: "shared" (the shared-prefix path) or "plain"
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
        text_path = getattr(getattr(model, "encoder", None), "last_path", None)
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if args.out:
        from explorer.core.fsio import atomic_path

        out = Path(args.out)
        with atomic_path(out) as tmp, open(tmp, "wb") as f:  # exactly the path given (np.save would append .npy)
            np.save(f, matrix)
    if args.repeat:
        print_json({
            "median_seconds": statistics.median(timings) if timings else 0.0,
            "repeats": len(timings),
            "shape": list(matrix.shape),
            "full_length": bool(args.full_length),
            "device": str(backbone.device) if backbone else "none",
            "text_path": text_path,
        })
    elif args.out:
        print(f"wrote {args.out}: {matrix.shape[0]} x {matrix.shape[1]} float32 prototypes")
    return 0


@command("analyze")
def cmd_analyze(args: argparse.Namespace) -> int:
    from explorer.analysis.geometry import adjacent_similarity, ordinality_report, similarity_matrix

    ckpt, _ = open_checkpoint(args, need_backbone=False)
    ranks = ckpt.classes  # the prototype rows (NumCLIP: concept bins)
    window = parse_window(args.window, ranks)
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
        print_json(out)
        return 0
    print(f"{ckpt.name}: {len(ranks)} ranks" + (f", window {out['window']['labels'][0]}..{out['window']['labels'][1]}" if window else ""))
    print(f"  ordinality (all pairs): {report['ordinality'] * 100:.2f} %   violation rate: {report['violation_rate'] * 100:.2f} %")
    print("  per span: " + "  ".join(f"s={s}: {v * 100:.1f}%" for s, v in report["spans"].items()))
    print(f"  adjacent cosine: min {adjacent.min():.4f}  mean {adjacent.mean():.4f}  max {adjacent.max():.4f}")
    return 0


@command("predict")
def cmd_predict(args: argparse.Namespace) -> int:
    from explorer.predict.onnx_runtime import looks_like_onnx

    if looks_like_onnx(args.checkpoint):
        return _predict_onnx(args)
    for path in args.images:  # before the backbone loads: a typo fails at once
        if not Path(path).is_file():
            raise ExplorerError(f"Image not found: {path}.")
    ckpt, backbone = open_checkpoint(args, image_only=True)  # the stored prototypes predict: no text tower
    margin = args.margin if args.margin is not None else checkpoint_inputs(ckpt.meta).get("margin")  # a --faces run's own
    inputs = _Inputs(args.images, crops_faces(ckpt.meta) if args.face is None else args.face, margin)
    pred = ckpt.predictor().predict(backbone.encode_images(inputs.loaders()), coverage=args.coverage)
    _report_predictions(args, pred, inputs.crops, ckpt.ranks, backbone.is_demo)
    return 0


class _Inputs:
    """predict's images, each opened (and its largest face cropped) when the encoder's background
    thread prepares its batch; ``crops`` keeps the face crops for the report (None: whole images)."""

    def __init__(self, paths, crop: bool, margin):
        self.paths, self.crop, self.margin = list(paths), bool(crop), margin
        self.crops = [None] * len(self.paths) if self.crop else None

    def loaders(self) -> list:
        return [functools.partial(self.load, i) for i in range(len(self.paths))]

    def load(self, i: int):
        from explorer.data.images import open_image

        image = open_image(self.paths[i])
        if not self.crop:
            return image
        self.crops[i] = _crop_faces([image], True, self.margin)[1][0]
        return self.crops[i].image


def _predict_onnx(args: argparse.Namespace) -> int:
    """``predict`` with an exported ONNX file: onnxruntime, numpy and Pillow only (no torch import)."""
    from explorer.data.images import open_image
    from explorer.predict.onnx_runtime import load_onnx

    if getattr(args, "backbone", None):
        raise ExplorerError("--backbone does not apply to an ONNX file: the image tower is inside it.")
    if getattr(args, "precision", None) == "bf16":
        raise ExplorerError("--precision bf16 does not apply to an ONNX file: onnxruntime runs it in fp32 "
                            "(export --quantize int8 for a smaller, faster file).")
    model = load_onnx(args.checkpoint)
    inputs = model.meta.get("inputs") or {}
    images = [open_image(p) for p in args.images]
    margin = args.margin if args.margin is not None else inputs.get("margin")
    images, crops = _crop_faces(images, model.faces if args.face is None else args.face, margin)
    pred = model.predict(images, coverage=args.coverage)
    _report_predictions(args, pred, crops, model.ranks, model.meta["backbone"]["spec"] == "demo")
    return 0


def _crop_faces(images, crop: bool, margin):
    """(images, crops): the largest face of each image when ``crop`` (else the images and None)."""
    if not crop:
        return images, None
    from explorer.data.faces import DEFAULT_MARGIN, crop_face

    crops = [crop_face(image, margin=DEFAULT_MARGIN if margin is None else margin) for image in images]
    return [c.image for c in crops], crops


def _report_predictions(args: argparse.Namespace, pred, crops, ranks, is_demo: bool) -> None:
    """Print predict's JSON or lines."""
    records = [{"image": str(p), **pred.record(i, k=args.top)} for i, p in enumerate(args.images)]
    for rec, crop in zip(records, crops or []):
        rec["face"] = crop.summary()
    if args.json:
        print_json(records if len(records) > 1 else records[0])
        return
    if is_demo:
        print("note: the demo backbone is in use; its predictions on real photos are not meaningful", file=sys.stderr)
    for rec in records:
        lo, hi = rec["interval_values"]
        top = ", ".join(f"{t['label']} ({t['prob'] * 100:.1f}%)" for t in rec["top"])
        face = rec.get("face")
        face_note = "" if face is None else (
            f"; face {face['box']} (score {face['score']:.2f})" if face["found"] else "; no face found: whole image")
        print(
            f"{rec['image']}: {rec['estimate']} {ranks.format_value(rec['value'])}, argmax {rec['argmax_label']}, "
            f"median {rec['median_value']:g}, {rec['coverage'] * 100:.0f}% interval [{lo:g}, {hi:g}]; top: {top}{face_note}"
        )


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    ckpt, _ = open_checkpoint(args, need_backbone=False)
    if args.onnx:
        from explorer.store.onnx_export import export_note, export_onnx

        if args.prototypes_only or args.out:
            raise ExplorerError("--onnx writes one file of its own; leave out --prototypes-only and --out.")
        print(export_note(export_onnx(ckpt, args.onnx, backbone_spec=args.backbone, quantize=args.quantize)))
        return 0
    if not args.prototypes_only or not args.out:
        raise ExplorerError("Choose the export: --prototypes-only --out FILE.safetensors, or --onnx FILE.onnx.")
    from explorer.store.checkpoints import export_prototypes

    out = export_prototypes(ckpt, args.out)
    print(f"wrote {out} (prototypes only, {ckpt.prototypes.num_ranks} ranks)")
    return 0


@command("import-reference")
def cmd_import_reference(args: argparse.Namespace) -> int:
    from explorer.store.reference import import_reference

    if not args.run_dir and not args.ckpt:
        raise ExplorerError("Give the reference run with --run-dir DIR or --ckpt FILE.")
    overrides = {
        key: value
        for key, value in {
            "method": args.method,
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


@command("zero-shot")
def cmd_zero_shot(args: argparse.Namespace) -> int:
    from explorer.backbones.load import load_backbone
    from explorer.training.presets import build_preset_checkpoint, get_preset

    preset = get_preset(args.preset)
    backbone = load_backbone(args.backbone, device=args.device, progress=DownloadBar(args.quiet))
    out = build_preset_checkpoint(preset, backbone, args.out, name=args.name)
    print(f"wrote {out} (zero-shot preset {preset.name}: {len(preset.labels)} ranks, "
          f"{len(preset.templates)} templates averaged, backbone {backbone.spec})")
    return 0




def add_checkpoint_parsers(add) -> None:
    """info / prototypes / analyze / predict / export / import-reference / zero-shot."""
    p = add("info", "Summary of a checkpoint (content, backbone, method, ranks, metrics); without one, the known methods.")
    p.add_argument("checkpoint", nargs="?", help="checkpoint .safetensors file (none: list the methods, plug-ins included, and any unusable one)")
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

    add_predict_parser(add)

    p = add("export", "Export a prototype-only checkpoint, or one ONNX file from pixels to the answer (no text encoder needed).")
    p.add_argument("checkpoint")
    p.add_argument("--prototypes-only", action="store_true", help="keep only the prototypes (with --out)")
    p.add_argument("--out", help="output .safetensors file (with --prototypes-only)")
    p.add_argument("--onnx", metavar="OUT.onnx",
                   help="write one ONNX graph: image tower + prototypes + softmax + point estimate (input 'pixels', "
                        "outputs 'probs' and 'value'; preprocessing in its metadata); runs with onnxruntime, no torch")
    p.add_argument("--quantize", choices=["int8"], default=None, help="with --onnx: dynamic int8 weights (onnxruntime)")
    p.add_argument("--backbone", help="with --onnx: backbone spec to use instead of the checkpoint's (same weights)")

    add_import_parser(add)

    from explorer.training.presets import PRESETS

    p = add("zero-shot", "Write a zero-shot template checkpoint from a preset's prompt ensemble (nothing is trained).")
    p.add_argument("--preset", required=True, choices=list(PRESETS),
                   help="; ".join(f"{k}: {v.title}" for k, v in PRESETS.items()))
    p.add_argument("--backbone", default="demo", help="backbone spec: demo, NAME:TAG, hf-hub:ORG/REPO, PATH or ARCH@PATH")
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    p.add_argument("--name", default=None, help="display name stored in the checkpoint")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: CUDA when available)")
    p.add_argument("--quiet", action="store_true", help="no download progress bar")


def add_import_parser(add) -> None:
    """import-reference: a reference OrdinalCLIP / CoOp / NumCLIP run as an explorer checkpoint."""
    from explorer.store.reference.learner import INTERPOLATIONS, METHOD_CHOICES, POSITIONS

    p = add("import-reference", "Import a reference OrdinalCLIP / CoOp / NumCLIP run (Lightning .ckpt) as an explorer checkpoint.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", help="reference output folder holding config.yaml and ckpts/*.ckpt")
    src.add_argument("--ckpt", help="a reference .ckpt file (give the learner flags below when there is no config.yaml)")
    p.add_argument("--clip-weights", required=True, help="the OpenAI-layout CLIP weights the run started from (e.g. ViT-B-16.pt)")
    p.add_argument("--out", required=True, help="output .safetensors checkpoint")
    p.add_argument("--method", "--learner", dest="method", choices=METHOD_CHOICES,
                   help="the run's method (RankPromptLearner: ordinalclip, PlainPromptLearner: coop, RegCLIPSSR: numclip; old names rank and plain too)")
    p.add_argument("--num-ranks", type=int, help="number of ranks (NumCLIP: label ranks; default 0..100 years for age concepts)")
    p.add_argument("--rank-start", type=float, help="value of the first rank (default 0)")
    p.add_argument("--rank-unit", help="unit of the rank values (NumCLIP age concepts: years)")
    p.add_argument("--concepts", help="NumCLIP concept bins: a preset (age, adience, aesthetics, historical, dots) or a bins file; default age")
    p.add_argument("--num-base-ranks", type=int)
    p.add_argument("--interpolation", choices=INTERPOLATIONS)
    p.add_argument("--position", choices=POSITIONS)
    p.add_argument("--rank-specific-context", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--device", default="cpu")


def add_predict_parser(add) -> None:
    """predict alone (torch-free: ``main`` builds just this parser for ``predict``, so an ONNX file
    is run without importing torch)."""
    p = add("predict", "Predict the rank distribution of images (with a checkpoint, or an exported .onnx file: no torch).", backbone=True)
    p.add_argument("checkpoint", help="checkpoint .safetensors, or an ONNX file from 'export --onnx'")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top", type=int, default=3, help="how many top ranks to list (default 3)")
    p.add_argument("--coverage", type=float, default=0.9, help="central interval coverage (default 0.9)")
    p.add_argument("--json", action="store_true", help="print JSON (one object, or a list for several images)")
    p.add_argument("--face", action=argparse.BooleanOptionalAction, default=None,
                   help="crop the largest face (as the app does) before encoding; JSON gains face: {found, box, score} "
                        "(default: crop exactly for face checkpoints, see 'info': inputs)")
    p.add_argument("--margin", type=float, default=None,
                   help="with --face: space around the face on every side, a fraction of its size (default: the app's, 0.4)")
    precision_flag(p)
