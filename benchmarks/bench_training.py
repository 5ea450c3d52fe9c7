"""Benchmark: training speed (the figures of benchmarks/README.md).

1. A 16-shot ``dots:20`` run (21 ranks, demo backbone, frozen encoder, rank learner, 20 epochs)
   end to end from an EMPTY feature cache: backbone load, dataset, embedding, training, test.
2. Per-epoch time with cached features vs re-encoding the training images every step (what a
   run without the cache would do), same learner and data.
3. Per-step time (forward + backward + optimizer step, cached image features) of the rank learner
   on the ViT-B/16 architecture (seeded random weights), R = 101, n = 10, t = 1, tail, batch 32,
   CPU: the shared-prefix text path against the plain (truncated) path, side by side
   (target: >= 2.5x). ``--text-bf16``: also that step with the text tower's forward and backward
   under bf16 autocast (fp32 master weights). ``--device cuda``: these steps on the GPU.
4. ``--quality SEEDS``: whether checkpoints trained with the step under bf16 stay as good: the demo
   recipe's OrdinalCLIP (linear) and CoOp runs on ``dots:20`` for each seed, all fp32 / bf16 features
   with an fp32 step / bf16 features and a bf16 step (what ``--precision auto`` trains on hardware with
   native bf16); on CUDA also the fp16 autocast without loss scaling that training used before.
   Test MAE (exp) per run and the mean over seeds.
5. ``--finetune``: a fine-tuning step of the image tower alone (32 images), fp32 against bf16 autocast.

Prints a table and one line ``JSON {...}`` with the figures.

    .venv/bin/python benchmarks/bench_training.py [--skip-vitb16 | --only-vitb16] [--text-bf16] [--repeats 5]
        [--device cpu|cuda] [--arch ViT-B-16] [--ranks 101] [--quality 0,1,2] [--finetune]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explorer.backbones.load import load_backbone  # noqa: E402
from explorer.data.datasets import few_shot, make_splits, open_dataset  # noqa: E402
from explorer.methods import make_config  # noqa: E402
from explorer.methods.objectives import ordinal_loss  # noqa: E402
from explorer.methods.prompt import build_prompt_model  # noqa: E402
from explorer.training.config import TrainConfig  # noqa: E402
from explorer.training.trainer import train  # noqa: E402


def end_to_end(tmp: Path) -> float:
    config = TrainConfig(dataset="dots:20", out=str(tmp / "run.safetensors"), shots=16, epochs=20,
                         method_config={"method": "ordinalclip", "num_context_tokens": 8}, cache_dir=str(tmp / "cache"))
    start = time.perf_counter()
    train(config)
    return time.perf_counter() - start


def cached_vs_reencoding(steps: int = 5) -> tuple[float, float, int]:
    """Seconds per epoch of the 16-shot training set: cached features vs encoding images each step."""
    backbone = load_backbone("demo")
    dataset = open_dataset("dots:20")
    splits = make_splits(dataset, seed=0)
    labels = [dataset.samples[i].label for i in splits["train"]]
    train_idx = few_shot(splits["train"], labels, 16, seed=0)
    samples = [dataset.samples[i] for i in train_idx]
    images = [dataset.load_image(s) for s in samples]
    y = torch.tensor([s.label for s in samples])
    feats = backbone.encode_images(images)
    model = build_prompt_model(backbone, make_config("ordinalclip", num_ranks=21, num_context_tokens=8))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = 32
    n_batches = int(np.ceil(len(samples) / batch))

    def epoch(encode: bool) -> float:
        start = time.perf_counter()
        for b in range(n_batches):
            sl = slice(b * batch, (b + 1) * batch)
            f = backbone.encode_images(images[sl]) if encode else feats[sl]
            logits = model.logit_scale * F.normalize(f, dim=-1) @ model().T
            loss, _ = ordinal_loss(logits, y[sl])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - start

    epoch(False)
    cached = statistics.median(epoch(False) for _ in range(steps))
    encoded = statistics.median(epoch(True) for _ in range(max(1, steps // 2)))
    return cached, encoded, len(samples)


def rank_learner_step(repeats: int = 5, text_bf16: bool = False, device: str = "cpu", arch: str = "ViT-B-16", ranks: int = 101) -> dict[str, float]:
    """Median seconds per training step, shared-prefix vs plain text path (same model, same data);
    ``text_bf16``: also the shared-prefix step with the text tower's forward/backward under bf16
    autocast (fp32 master weights), and the largest difference of its prototypes to fp32's."""
    import open_clip

    from explorer.backbones.load import Backbone
    from explorer.backbones.sources import image_transform_for

    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None).float().eval().requires_grad_(False)
    tok = open_clip.tokenizer.SimpleTokenizer()
    dev = torch.device(device)
    bb = Backbone(f"{arch} (random)", arch, f"{arch}@random", model.to(dev), image_transform_for(224), tok, dev)
    pm = build_prompt_model(bb, make_config("ordinalclip", num_ranks=ranks, num_context_tokens=10, num_tokens_per_rank=1)).to(dev)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-3)
    feats = F.normalize(torch.randn(32, bb.embed_dim, device=dev), dim=-1)
    y = torch.randint(0, ranks, (32,), device=dev)

    def step(mode: str) -> float:
        bf16 = mode.endswith("-bf16")
        pm.encoder.prefix_mode = mode.removesuffix("-bf16")
        sync(dev)
        start = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = pm.logit_scale * feats @ pm().float().T
        loss, _ = ordinal_loss(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync(dev)
        assert pm.encoder.last_path == ("plain" if mode == "off" else "shared")
        return time.perf_counter() - start

    modes = {"shared": "shared", "plain": "off"}
    if text_bf16:
        with torch.no_grad():
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                low = pm().float()
            drift = float((F.normalize(low, dim=-1) - F.normalize(pm().float(), dim=-1)).abs().max())
        modes["shared-bf16"] = "shared-bf16"
    for mode in modes.values():  # warm-up
        step(mode)
    samples: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(repeats):  # round-robin, so that load changes on a shared machine hit both alike
        for name, mode in modes.items():
            samples[name].append(step(mode))
    out = {name: statistics.median(values) for name, values in samples.items()}
    return {**out, "bf16_prototype_drift": drift} if text_bf16 else out


def finetune_step(repeats: int, device: str, arch: str = "ViT-B-16") -> dict[str, float]:
    """Median seconds of a fine-tuning step of the image tower alone (forward and backward of 32 images at
    224 px, AdamW), fp32 against bf16 autocast (fp32 master weights): what ``--mode finetune`` adds per step."""
    import open_clip

    dev = torch.device(device)
    torch.manual_seed(0)
    visual = open_clip.create_model(arch, pretrained=None).visual.float().train().to(dev)
    opt = torch.optim.AdamW(visual.parameters(), lr=1e-5)
    images = torch.randn(32, 3, 224, 224, device=dev)

    def step(bf16: bool) -> float:
        sync(dev)
        start = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = visual(images).float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync(dev)
        return time.perf_counter() - start

    step(False), step(True)  # warm-up
    samples: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(repeats):
        for name in samples:
            samples[name].append(step(name == "bf16"))
    return {name: statistics.median(values) for name, values in samples.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


QUALITY_RUNS = {  # the demo recipe (scripts/make_demo_checkpoints.py)
    "ordinalclip-linear": {"method": "ordinalclip", "num_context_tokens": 8, "num_base_ranks": 3, "interpolation": "linear"},
    "coop": {"method": "coop", "num_context_tokens": 8},
}


def quality(seeds: list[int], device: str) -> dict[str, dict[str, list[float]]]:
    """Test MAE (exp) of the demo recipe's runs per step precision and seed (module docstring, 4)."""
    from unittest import mock

    from explorer.training.trainer import Trainer

    settings = {"fp32": ("fp32", True), "bf16 features, fp32 step": ("bf16", False), "bf16 features, bf16 step": ("bf16", True)}
    if device == "cuda":  # what CUDA training did before: the step under fp16 autocast, no loss scaling
        settings["fp16 step, no loss scaling (before)"] = ("fp32", "fp16")
    out: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (precision, amp) in settings.items():
            fp16 = SimpleNamespace(name="fp16", autocast=lambda: torch.autocast("cuda", dtype=torch.float16))
            before = mock.patch.object(Trainer, "step_precision", property(lambda self: fp16))
            with before if amp == "fp16" else contextlib.nullcontext():
                for run, method in QUALITY_RUNS.items():
                    for seed in seeds:
                        config = TrainConfig(dataset="dots:20", out=f"{tmp}/{run}-{seed}.safetensors", backbone="demo", epochs=30,
                                             batch_size=32, lr=2e-3, seed=seed, method_config=method, cache_dir=f"{tmp}/cache",
                                             device=device, precision=precision, amp=bool(amp))
                        result = train(config)
                        out.setdefault(label, {}).setdefault(run, []).append(result.test_metrics["mae_exp"])
                        print(f"{label:40s} {run:20s} seed {seed}: test MAE (exp) {result.test_metrics['mae_exp']:.4f}  "
                              f"({result.seconds:.1f} s)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--skip-vitb16", action="store_true")
    group.add_argument("--only-vitb16", action="store_true", help="only the ViT-B/16 training-step figures")
    parser.add_argument("--text-bf16", action="store_true",
                        help="also the step with the text tower under bf16 autocast (slow where bf16 is emulated)")
    parser.add_argument("--repeats", type=int, default=5, help="ViT-B/16 steps timed per variant")
    parser.add_argument("--device", default="cpu", help="where the ViT-B/16 steps and --quality run (cpu, cuda)")
    parser.add_argument("--arch", default="ViT-B-16", help="the training step's architecture (random weights)")
    parser.add_argument("--ranks", type=int, default=101, help="the training step's R")
    parser.add_argument("--quality", metavar="SEEDS", help="comma-separated seeds: the demo recipe per step precision")
    parser.add_argument("--finetune", action="store_true", help="only a fine-tuning step of the image tower, fp32 and bf16")
    args = parser.parse_args()
    figures: dict = {}
    if args.finetune:
        ft = finetune_step(args.repeats, args.device, args.arch)
        print(f"fine-tuning step, {args.arch} image tower, 32 images: fp32 {ft['fp32']:.4f} s, bf16 {ft['bf16']:.4f} s "
              f"({ft['fp32'] / ft['bf16']:.2f}x)")
        print("JSON " + json.dumps({"finetune_step_s": ft}))
        return
    if args.quality:
        seeds = [int(s) for s in args.quality.split(",")]
        table = quality(seeds, args.device)
        for label, runs in table.items():
            print(f"{label:40s} " + "  ".join(f"{run} {statistics.mean(v):.4f} ± {statistics.stdev(v) if len(v) > 1 else 0:.4f}"
                                              for run, v in runs.items()))
        figures["quality_test_mae_exp"] = table
        print("JSON " + json.dumps(figures))
        return
    print(f"threads: {torch.get_num_threads()}")
    if not args.only_vitb16:
        with tempfile.TemporaryDirectory() as tmp:
            e2e = end_to_end(Path(tmp))
        cached, encoded, n = cached_vs_reencoding()
        print(f"16-shot dots:20 run, end to end (empty cache, 20 epochs): {e2e:7.2f} s   (target < 60 s)")
        print(f"epoch of {n} images, cached features:                      {cached * 1000:7.1f} ms")
        print(f"epoch of {n} images, re-encoding images every step:        {encoded * 1000:7.1f} ms   speed-up {encoded / cached:.1f}x")
        figures.update(e2e_16shot_seconds=round(e2e, 2), epoch_cached_s=cached, epoch_reencode_s=encoded,
                       cache_speedup=encoded / cached)
    if not args.skip_vitb16:
        step = rank_learner_step(args.repeats, args.text_bf16, args.device, args.arch, args.ranks)
        what = f"rank learner step, {args.arch} arch, R={args.ranks}, n=10, t=1, batch 32"
        print(f"{what}, shared prefix: {step['shared']:8.4f} s")
        print(f"{what}, plain:         {step['plain']:8.4f} s"
              f"   speed-up {step['plain'] / step['shared']:.2f}x (target >= 2.5x)")
        figures.update(vitb16_rank_step_s=step["shared"], vitb16_rank_step_plain_s=step["plain"],
                       vitb16_step_speedup=step["plain"] / step["shared"])
        if args.text_bf16:
            print(f"the same shared-prefix step, text tower under bf16 autocast: {step['shared-bf16']:8.4f} s"
                  f"   ({step['shared-bf16'] / step['shared']:.1f}x the fp32 step; prototypes differ by up to "
                  f"{step['bf16_prototype_drift']:.1e})")
            figures.update(vitb16_rank_step_text_bf16_s=step["shared-bf16"], text_bf16_prototype_drift=step["bf16_prototype_drift"])
    print("JSON " + json.dumps(figures))


if __name__ == "__main__":
    main()
