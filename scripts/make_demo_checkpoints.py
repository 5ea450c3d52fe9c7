"""Train the bundled demo checkpoints (``make demo-checkpoints``).

All runs use the ``demo`` backbone (frozen) on the synthetic ``dots:20`` task (21 ranks: 0..20 dots,
40 images per rank, seed 0; 70/10/20 train/val/test). Each writes ``checkpoints/<name>.safetensors``
and its metrics history beside it, then a results table (Markdown) is printed and written to
``checkpoints/RESULTS.md``. Re-running reproduces the files on the same torch version.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explorer.analysis.geometry import ordinality_report  # noqa: E402
from explorer.store.checkpoints import load_checkpoint  # noqa: E402
from explorer.training.trainer import TrainConfig, train  # noqa: E402

DATASET = "dots:20"
COMMON = dict(dataset=DATASET, backbone="demo", epochs=30, batch_size=32, lr=2e-3, seed=0)
RANK = {"kind": "ordinalclip", "num_context_tokens": 8, "num_base_ranks": 3}
RUNS = {
    "ordinalclip-linear": dict(learner={**RANK, "interpolation": "linear"}),
    "ordinalclip-inv_prop": dict(learner={**RANK, "interpolation": "inv_prop"}),
    "ordinalclip-normal": dict(learner={**RANK, "interpolation": "normal"}),
    "coop": dict(learner={"kind": "coop", "num_context_tokens": 8}),
    "zero-shot": dict(learner={"kind": "zeroshot", "template": "a photo of {} dots."}),
    "ordinalclip-linear-16shot": dict(learner={**RANK, "interpolation": "linear"}, shots=16),
    "numclip": dict(learner={"kind": "numclip", "concepts": "dots", "num_context_tokens": 8}),
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
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(ROOT / "checkpoints"))
    parser.add_argument("--only", nargs="*", help="names of the runs to (re)make")
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    for name, extra in RUNS.items():
        if args.only and name not in args.only:
            continue
        config = TrainConfig(out=str(out_dir / f"{name}.safetensors"), name=name, **{**COMMON, **extra})
        print(f"== {name}", flush=True)
        result = train(config)
        test = result.test_metrics
        print(f"   test MAE (value) {test['mae_value']:.3f}, acc {test['acc_max'] * 100:.1f} %, {result.seconds:.0f} s", flush=True)
    table = results_table(out_dir)
    print(table)
    (out_dir / "RESULTS.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
