"""Per-image CPU time of the exported ONNX file (onnxruntime) vs the PyTorch path, and the file size.

A ViT-B-16-sized open_clip model with random weights (no download), 101 random prototypes, the
same head ``export --onnx`` writes; batch 1 and 16. ``--quantize int8`` also times and sizes the
dynamically quantised file. Run: ``python benchmarks/bench_deploy.py [--arch ViT-B-16] [--quantize int8]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's explorer


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _head(arch: str):
    import open_clip

    from explorer.core.ranks import Ranks
    from explorer.store.onnx_export import OnnxHead

    model = open_clip.create_model(arch).eval().requires_grad_(False)
    dim = model.text_projection.shape[1] if not isinstance(model.text_projection, torch.nn.Linear) else model.text_projection.out_features
    ranks = Ranks.integers(101, unit="years")
    predictor = SimpleNamespace(matrix=torch.randn(101, dim), logit_scale=100.0, ranks=ranks)
    size = model.visual.image_size
    return OnnxHead(model.visual, predictor).eval(), int(size[0] if isinstance(size, (tuple, list)) else size)


def _row(label: str, run, size: int, batches, repeats: int) -> None:
    for n in batches:
        pixels = np.random.RandomState(0).randn(n, 3, size, size).astype(np.float32)
        seconds = _median_seconds(lambda: run(pixels), repeats)
        print(f"| {label} | {n} | {seconds / n * 1000:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-16")
    parser.add_argument("--quantize", choices=["int8"], default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    import onnxruntime as ort

    from explorer.store.onnx_export import quantize_int8, trace_to_onnx

    torch.set_num_threads(args.threads)
    head, size = _head(args.arch)
    files = {"onnx fp32": trace_to_onnx(head, size)}
    if args.quantize:
        files["onnx int8"] = quantize_int8(files["onnx fp32"])
    print(f"{args.arch}, random weights, {size} px, {args.threads} threads")
    print("| path | batch | ms / image |\n|---|---|---|")
    with torch.no_grad():
        _row("pytorch", lambda x: head(torch.from_numpy(x)), size, (1, 16), args.repeats)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    for label, data in files.items():
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "m.onnx"
            path.write_bytes(data)
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            _row(label, lambda x: session.run(None, {"pixels": x}), size, (1, 16), args.repeats)
    for label, data in files.items():
        print(f"{label} file: {len(data) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
