"""Train the bundled demo checkpoints (``make demo-checkpoints``).

All runs use the ``demo`` backbone (frozen) on the synthetic ``dots:20`` task (21 ranks: 0..20 dots,
40 images per rank, seed 0; 70/10/20 train/val/test). Each writes ``checkpoints/<name>.safetensors``
and its metrics history beside it, then a results table (Markdown) is printed and written to
``checkpoints/RESULTS.md``. Re-running reproduces the files on the same torch version.

``--seeds 1,2`` trains the same runs with other seeds into ``--seed-dir`` (not bundled) and records
every seed's test metrics in ``checkpoints/seeds.json``; RESULTS.md then adds a mean ± std table
over seed 0 (the bundled files) and those seeds, so the ordering of the methods is shown with its
spread, not a single draw.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explorer.analysis.evaluation import evaluate_checkpoint  # noqa: E402
from explorer.analysis.geometry import ordinality_report  # noqa: E402
from explorer.backbones.load import load_backbone  # noqa: E402
from explorer.metrics.ordinal import aggregate, format_mean_std  # noqa: E402
from explorer.store.checkpoints import load_checkpoint  # noqa: E402
from explorer.training.config import TrainConfig  # noqa: E402
from explorer.training.trainer import train  # noqa: E402

DATASET = "dots:20"
COMMON = dict(dataset=DATASET, backbone="demo", epochs=30, batch_size=32, lr=2e-3, seed=0)
RANK = {"method": "ordinalclip", "num_context_tokens": 8, "num_base_ranks": 3}
RUNS = {
    "ordinalclip-linear": dict(method_config={**RANK, "interpolation": "linear"}),
    "ordinalclip-inv_prop": dict(method_config={**RANK, "interpolation": "inv_prop"}),
    "ordinalclip-normal": dict(method_config={**RANK, "interpolation": "normal"}),
    "coop": dict(method_config={"method": "coop", "num_context_tokens": 8}),
    "zero-shot": dict(method_config={"method": "zeroshot", "template": "a photo of {} dots."}),
    "ordinalclip-linear-16shot": dict(method_config={**RANK, "interpolation": "linear"}, shots=16),
    "numclip": dict(method_config={"method": "numclip", "concepts": "dots", "num_context_tokens": 8}),
}


def results_table(out_dir: Path) -> str:
    """The Markdown table of every demo checkpoint in ``out_dir`` (read from the files themselves)."""
    lines = [
        f"Demo checkpoints: demo backbone (frozen), `{DATASET}` (21 ranks), held-out test split.",
        "",
        "| checkpoint | test MAE (value) | test MAE (exp) | test MAE (max) | test acc % | 1-off % | QWK | ordinality % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in RUNS:
        path = out_dir / f"{name}.safetensors"
        if not path.is_file():
            continue
        ckpt = load_checkpoint(path)
        t = ckpt.meta["metrics"]["test"]
        o = ordinality_report(ckpt.prototypes.matrix.numpy())
        value = f"{t['mae_value']:.3f}" if "mae_value" in t else "–"
        lines.append(f"| {name} | {value} | {t['mae_exp']:.3f} | {t['mae_max']:.3f} | {t['acc_max'] * 100:.1f} | "
                     f"{t['cs1'] * 100:.1f} | {t['qwk']:.3f} | {o['ordinality'] * 100:.1f} |")
    lines += ["", "NumCLIP's exp/max/acc/1-off/QWK are over its 5 concept bins; its MAE (value) is the regressed number."]
    return "\n".join(lines + seeds_table(out_dir))


SEED_COLUMNS = (("mae_value", "test MAE (value)", 1, 3), ("mae_exp", "test MAE (exp)", 1, 3), ("acc_max", "test acc %", 100, 1),
                ("qwk", "QWK", 1, 3), ("ordinality", "ordinality %", 100, 1))


def seed_record(ckpt, recompute: bool = False) -> dict:
    """The figures of one run that the seeds table aggregates; ``recompute``: the test metrics evaluated
    now (for bundled files written before a metric such as mae_value existed)."""
    test = ckpt.meta["metrics"]["test"]
    if recompute:
        test = evaluate_checkpoint(ckpt, load_backbone(COMMON["backbone"]), DATASET, "test")["metrics"]
    record = {k: v for k, v in test.items() if isinstance(v, (int, float))}
    record["ordinality"] = ordinality_report(ckpt.prototypes.matrix.numpy())["ordinality"]
    return record


def seeds_table(out_dir: Path) -> list[str]:
    """Mean ± std over the seeds recorded in ``seeds.json`` (empty when it holds one seed per run)."""
    path = out_dir / "seeds.json"
    runs = json.loads(path.read_text()) if path.is_file() else {}
    for name in runs:
        if (out_dir / f"{name}.safetensors").is_file():
            runs[name]["0"] = seed_record(load_checkpoint(out_dir / f"{name}.safetensors"), recompute=True)
    if not runs or max(len(r) for r in runs.values()) < 2:
        return []
    seeds = sorted({int(s) for r in runs.values() for s in r})
    lines = ["", f"Over seeds {', '.join(map(str, seeds))} (mean ± std, ddof 1; seed 0 is the bundled file, the others are "
                 "trained by `scripts/make_demo_checkpoints.py --seeds`):", "",
             "| checkpoint | seeds | " + " | ".join(title for _, title, _, _ in SEED_COLUMNS) + " |",
             "|---|---|" + "---|" * len(SEED_COLUMNS)]
    for name in RUNS:
        if name not in runs:
            continue
        agg = aggregate([{k: v * scale for k, v in rec.items() for key, _, scale, _ in SEED_COLUMNS if k == key}
                         for rec in runs[name].values()])
        cells = [format_mean_std(agg, key, digits) if key in agg else "–" for key, _, _, digits in SEED_COLUMNS]
        lines.append(f"| {name} | {len(runs[name])} | " + " | ".join(cells) + " |")
    return lines


def record_seed(out_dir: Path, name: str, seed: int, ckpt) -> None:
    """Add (or replace) one run's figures in ``seeds.json`` (seed 0 is read from the bundled file)."""
    path = out_dir / "seeds.json"
    runs = json.loads(path.read_text()) if path.is_file() else {}
    runs.setdefault(name, {})[str(seed)] = seed_record(ckpt)
    path.write_text(json.dumps(runs, indent=1, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(ROOT / "checkpoints"))
    parser.add_argument("--only", nargs="*", help="names of the runs to (re)make")
    parser.add_argument("--seeds", default="0", help="comma list of seeds; 0 writes the bundled files (default: 0)")
    parser.add_argument("--table-only", action="store_true", help="only rebuild RESULTS.md from the files and seeds.json")
    parser.add_argument("--seed-dir", default=str(ROOT / ".cache" / "demo-seeds"), help="where runs with other seeds go")
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    for seed in [] if args.table_only else [int(s) for s in args.seeds.split(",")]:
        for name, extra in RUNS.items():
            if args.only and name not in args.only:
                continue
            folder = out_dir if seed == 0 else Path(args.seed_dir) / f"seed{seed}"
            config = TrainConfig(out=str(folder / f"{name}.safetensors"), name=name, **{**COMMON, **extra, "seed": seed})
            print(f"== {name} (seed {seed})", flush=True)
            result = train(config)
            if seed != 0:
                record_seed(out_dir, name, seed, load_checkpoint(config.out))
            test = result.test_metrics
            print(f"   test MAE (value) {test['mae_value']:.3f}, acc {test['acc_max'] * 100:.1f} %, {result.seconds:.0f} s", flush=True)
    table = results_table(out_dir)
    print(table)
    (out_dir / "RESULTS.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
