"""Benchmark: prototype computation (shared-prefix vs truncated vs 77-token prompts), the
interpolation lab, and the prediction head's cost.

On CPU, the ViT-B/16 architecture with seeded random weights (timings do not depend on the weight
values), rank learner R=101, n=10, t=1, tail by default:

1. prototypes, forward without grad, side by side in one run: the shared-prefix path (the common
   ``[SOT] ctx`` prefix computed once), today's truncated path (sequences cut after EOT, every
   prompt in full; ``prefix_mode="off"``) and ``full_length=True`` (padded to CLIP's 77
   positions); median of N repeats after warm-up, and the speed-ups (targets: shared >= 2.5x
   truncated and >= 20x 77-token; truncated >= 4x 77-token);
2. the interpolation lab: ``lab.recompute`` of the rank learner under another scheme (normal,
   bandwidth 2), shared-prefix vs truncated path (target: <= 0.15 s);
3. the prediction head (``Prototypes.predict``: similarity, softmax, summaries) for ONE image
   against the image encoder's time for one 224 px image: the head's share in percent
   (the spec asks for < 1 %).

Prints a small table and one JSON line (prefixed ``JSON``) with the figures.

    .venv/bin/python benchmarks/bench_prototypes.py [--repeats 5] [--warmup 1] [--position tail]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explorer.analysis import lab  # noqa: E402
from explorer.backbones.load import Backbone  # noqa: E402
from explorer.backbones.sources import image_transform_for  # noqa: E402
from explorer.core.ranks import Ranks  # noqa: E402
from explorer.methods import make_config  # noqa: E402
from explorer.methods.prompt import build_prompt_model  # noqa: E402
from explorer.predict.prototypes import Prototypes  # noqa: E402


def random_backbone(arch: str = "ViT-B-16", seed: int = 0) -> Backbone:
    """An open_clip architecture with seeded random weights, frozen, fp32, on CPU."""
    import open_clip

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.create_model(arch, pretrained=None, device="cpu")
    model = model.float().eval().requires_grad_(False)
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=int(model.positional_embedding.shape[0]))
    return Backbone(
        spec=f"{arch} (random weights, seed {seed})",
        arch=arch,
        backbone_id=f"{arch}@random-seed-{seed}",
        model=model,
        preprocess=image_transform_for(size),
        tokenizer=tokenizer,
        device=torch.device("cpu"),
        config={"arch": arch, "random_seed": seed},
    )


def median_time(fn: Callable[[], object], repeats: int, warmup: int, inner: int = 1) -> float:
    """Median over ``repeats`` of the mean seconds per call of ``fn`` (``inner`` calls per repeat)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin (one call of each per repeat) so that
    a change of load on a shared machine hits every variant alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def prototype_timings(pm, args: argparse.Namespace) -> dict:
    """Shared-prefix, truncated and 77-token prototypes: times, token counts, max differences."""
    enc = pm.encoder

    def protos(mode: str, full: bool = False):
        enc.prefix_mode = mode
        return pm(full_length=full)

    with torch.no_grad():
        tokens_short = int(pm.learner(full_length=False).embeddings.shape[1])
        tokens_full = int(pm.learner(full_length=True, context_length=enc.context_length).embeddings.shape[1])
        prefix = int(pm.learner(full_length=False).shared_prefix)
        shared, short, full = protos("shared"), protos("off"), protos("off", True)
        times = interleaved_medians(
            {"shared": lambda: protos("shared"), "short": lambda: protos("off"), "full": lambda: protos("off", True)},
            args.repeats, args.warmup,
        )
        t_shared, t_short, t_full = times["shared"], times["short"], times["full"]
    enc.prefix_mode = "auto"
    return {
        "prompt_tokens_truncated": tokens_short,
        "prompt_tokens_full": tokens_full,
        "shared_prefix_tokens": prefix,
        "prototypes_shared_prefix_s": t_shared,
        "prototypes_truncated_s": t_short,
        "prototypes_full_length_s": t_full,
        "speedup": t_full / t_short,
        "speedup_shared_vs_truncated": t_short / t_shared,
        "speedup_shared_vs_full_length": t_full / t_shared,
        "max_abs_diff_truncated_vs_full": float((short - full).abs().max()),
        "max_abs_diff_shared_vs_full": float((shared - full).abs().max()),
    }


def lab_timings(pm, args: argparse.Namespace) -> dict:
    """``lab.recompute`` under the normal scheme (bandwidth 2), shared-prefix vs truncated path."""
    def recompute(mode: str):
        pm.encoder.prefix_mode = mode
        return lab.recompute(pm, "normal", bandwidth=2.0)

    times = interleaved_medians({"shared": lambda: recompute("shared"), "off": lambda: recompute("off")},
                                args.repeats, args.warmup)
    pm.encoder.prefix_mode = "auto"
    return {"lab_recompute_shared_prefix_s": times["shared"], "lab_recompute_truncated_s": times["off"]}


def run(args: argparse.Namespace) -> dict:
    bb = random_backbone(args.arch, args.seed)
    config = make_config(
        "ordinalclip",
        num_ranks=args.ranks,
        num_context_tokens=args.context_tokens,
        num_tokens_per_rank=args.tokens_per_rank,
        num_base_ranks=args.base_ranks,
        position=args.position,
    )
    pm = build_prompt_model(bb, config, seed=args.seed)
    figures = prototype_timings(pm, args) if "prototypes" in args.parts else {}
    figures.update(lab_timings(pm, args) if "lab" in args.parts else {})
    if "head" not in args.parts:
        return {"arch": args.arch, "threads": torch.get_num_threads(), "parts": args.parts, **figures}

    with torch.no_grad():
        short = pm(full_length=False)
        protos = Prototypes(short, bb.logit_scale, Ranks.integers(args.ranks))
        image = torch.randn(1, 3, bb.image_size, bb.image_size, generator=torch.Generator().manual_seed(args.seed))
        feature = bb.model.encode_image(image)
        t_encoder = median_time(lambda: bb.model.encode_image(image), args.repeats, args.warmup)
    t_head = median_time(lambda: protos.predict(feature), args.repeats, args.warmup, inner=args.head_calls)

    return {
        "bench": "prototypes",
        "arch": args.arch,
        "weights": f"random (seed {args.seed})",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "num_ranks": args.ranks,
        "num_base_ranks": args.base_ranks,
        "num_context_tokens": args.context_tokens,
        "num_tokens_per_rank": args.tokens_per_rank,
        "position": args.position,
        "repeats": args.repeats,
        "warmup": args.warmup,
        **figures,
        "image_size": bb.image_size,
        "image_encoder_one_image_s": t_encoder,
        "head_one_image_s": t_head,
        "head_share_percent": 100.0 * t_head / t_encoder,
        "spec_speedup_min": 4.0,
        "target_shared_vs_truncated_min": 2.5,
        "target_shared_vs_full_length_min": 20.0,
        "target_lab_recompute_max_s": 0.15,
        "spec_head_share_max_percent": 1.0,
    }


def print_report(r: dict) -> None:
    if "head_share_percent" not in r:  # only some parts were run
        print(f"{r['arch']}, CPU, {r['threads']} threads")
        for key, value in r.items():
            print(f"  {key:<36} {value * 1e3:10.1f} ms" if key.endswith("_s") else f"  {key:<36} {value}")
        print("JSON " + json.dumps(r, sort_keys=True))
        return
    rows = [
        (f"prototypes, shared prefix ({r['shared_prefix_tokens']} + suffix)", f"{r['prototypes_shared_prefix_s'] * 1e3:10.1f} ms"),
        (f"prototypes, truncated ({r['prompt_tokens_truncated']} tokens)", f"{r['prototypes_truncated_s'] * 1e3:10.1f} ms"),
        (f"prototypes, full length ({r['prompt_tokens_full']} tokens)", f"{r['prototypes_full_length_s'] * 1e3:10.1f} ms"),
        ("shared vs truncated (target: >= 2.5x)", f"{r['speedup_shared_vs_truncated']:10.2f} x"),
        ("shared vs full length (target: >= 20x)", f"{r['speedup_shared_vs_full_length']:10.2f} x"),
        ("truncated vs full length (spec: >= 4x)", f"{r['speedup']:10.2f} x"),
        ("max |truncated - full| (normalised)", f"{r['max_abs_diff_truncated_vs_full']:10.2e}"),
        ("max |shared - full| (normalised)", f"{r['max_abs_diff_shared_vs_full']:10.2e}"),
        ("lab.recompute, shared prefix (target: <= 0.15 s)", f"{r['lab_recompute_shared_prefix_s'] * 1e3:10.1f} ms"),
        ("lab.recompute, truncated", f"{r['lab_recompute_truncated_s'] * 1e3:10.1f} ms"),
        (f"image encoder, 1 image ({r['image_size']} px)", f"{r['image_encoder_one_image_s'] * 1e3:10.1f} ms"),
        ("prediction head, 1 image", f"{r['head_one_image_s'] * 1e6:10.1f} us"),
        ("head share of encoder time (spec: < 1 %)", f"{r['head_share_percent']:10.3f} %"),
    ]
    print(
        f"{r['arch']} ({r['weights']}), CPU, {r['threads']} threads, torch {r['torch']}; rank learner "
        f"R={r['num_ranks']} B={r['num_base_ranks']} n={r['num_context_tokens']} t={r['num_tokens_per_rank']} {r['position']}; "
        f"median of {r['repeats']} after {r['warmup']} warm-up"
    )
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print("JSON " + json.dumps(r, sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="ViT-B-16", help="open_clip architecture (random weights)")
    parser.add_argument("--ranks", type=int, default=101, help="R")
    parser.add_argument("--base-ranks", type=int, default=3, help="B")
    parser.add_argument("--context-tokens", type=int, default=10, help="n")
    parser.add_argument("--tokens-per-rank", type=int, default=1, help="t")
    parser.add_argument("--position", default="tail", choices=("tail", "middle"), help="rank token position (with a shared prefix)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up calls")
    parser.add_argument("--head-calls", type=int, default=200, help="head calls per timed repeat (it is fast)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", nargs="+", default=["prototypes", "lab", "head"], choices=("prototypes", "lab", "head"),
                        help="which figures to measure (the report table needs all three)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats < 1 or args.warmup < 0 or args.head_calls < 1:
        parser.error("--repeats and --head-calls must be >= 1 and --warmup >= 0")
    print_report(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
