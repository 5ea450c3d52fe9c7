"""Prediction at the machine's limit: per-image milliseconds of ``predict`` (fp32 and auto), the image
tower's forward alone, and onnxruntime on the exported file, for ViT-B-32 and ViT-B/16.

    .venv/bin/python benchmarks/bench_predict.py [--archs ViT-B-32 ViT-B-16] [--few 8] [--many 40] [--repeats 3] [--bf16]

Nothing is downloaded: each architecture is ``open_clip.create_model`` with seeded random weights,
saved as fp32 safetensors in ``.cache/bench-predict`` with a rank-learner checkpoint on it and that
checkpoint's ``export --onnx`` file (made once). The images are JPEG photos and face crops from
scikit-image (tests/face_photos.py), cycled to the counts needed.

Rows:

- ``import torch, open_clip``: a fresh interpreter importing both (the floor of any torch prediction);
- ``load``: ``load_backbone`` in-process, whole and image tower alone (the id remembered);
- ``predict, 1 image``: ``python -m explorer predict CKPT photo.jpg`` from the shell (wall time, the
  backbone's id already remembered: a second run on the same file), timed round-robin with the
  import, and its margin over the import;
- ``predict, per extra image``: the command in-process (checkpoint, image-tower load, images, report),
  (time of ``--many`` images - time of ``--few``) / (many - few), in fp32 and auto;
- ``forward alone``: the image tower on a preprocessed batch of ``--few`` (fp32; auto);
- ``onnxruntime``: the exported file, preprocessing included, every core (``predict M.onnx``'s session);
- ``--bf16``: also the forward under an explicit bf16 (emulated where the CPU has no native bf16: slow).

The fastest of ``--repeats`` (on a shared machine the run least disturbed by other load; the
load average is printed before and after). Prints a table and one ``JSON {...}`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

WORK = REPO / ".cache" / "bench-predict"


def cpu_line() -> str:
    """The CPU's model name, core count and the flags that decide bf16 (Linux /proc/cpuinfo)."""
    import torch

    from explorer.backbones.precision import NATIVE_CPU_FLAGS, cpu_flags, resolve_precision

    name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), "unknown") if Path("/proc/cpuinfo").is_file() else "unknown"
    flags = cpu_flags()
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16") if f in flags] or ["none of avx2/avx512/amx"]
    auto = resolve_precision("auto", torch.device("cpu"))
    return (f"CPU: {name}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); "
            f"flags: {' '.join(shown)}; native bf16 ({'/'.join(NATIVE_CPU_FLAGS)}): {'yes' if auto.native else 'no'}; "
            f"auto = {auto.name}")


def make_files(arch: str) -> tuple[Path, Path]:
    """(checkpoint, onnx file) of a seeded random ``arch``, made once in .cache/bench-predict."""
    ckpt, onnx = WORK / f"{arch}-rank.safetensors", WORK / f"{arch}-rank.onnx"
    if ckpt.is_file() and onnx.is_file():
        return ckpt, onnx
    import open_clip
    import torch
    from app_testdata import build, dots_ranks
    from safetensors.torch import save_file

    from explorer.backbones.load import load_backbone
    from explorer.store.checkpoints import load_checkpoint, save_checkpoint
    from explorer.store.onnx_export import export_onnx

    WORK.mkdir(parents=True, exist_ok=True)
    weights = WORK / f"{arch}-random.safetensors"
    torch.manual_seed(2024)
    model = open_clip.create_model(arch, pretrained=None, load_weights=False)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(weights), metadata={"arch": arch})
    del model
    backbone = load_backbone(f"{arch}@{weights}", device="cpu")
    save_checkpoint(ckpt, build("rank", ranks=dots_ranks(), seed=0, backbone=backbone), backbone, name=f"{arch}-rank")
    export_onnx(load_checkpoint(ckpt), onnx, backbone=backbone)
    return ckpt, onnx


def make_images(count: int) -> list[Path]:
    """``count`` JPEG files: scikit-image photos and face crops, cycled."""
    import face_photos as fp

    pool = [fp.photo(n) for n in ("astronaut", "camera", "coffee", "chelsea", "rocket")] + [c for _, c, *_ in fp.tight_crops()[:11]]
    folder = WORK / "images"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"im{i:03d}.jpg"
        if not path.is_file():
            pool[i % len(pool)].convert("RGB").save(path, quality=90)
        paths.append(path)
    return paths


def shell_seconds(args: list[str], repeats: int) -> float:
    """Fastest wall seconds of ``python ARGS`` in a fresh interpreter (stdout discarded, failure raised)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:4])} failed: {done.stderr.strip()[-400:]}")
    return min(times)


def predict_rows(ckpt: Path, images: list[Path], repeats: int) -> dict:
    """From the shell, round-robin with the import: ``predict`` of one image."""
    runs = {"import_s": ["-c", "import torch, open_clip"], "predict_1_image_s": ["-m", "explorer", "predict", str(ckpt), str(images[0])]}
    shell_seconds(runs["predict_1_image_s"], 1)  # warm-up: the backbone's id is hashed once, then remembered
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, args in runs.items():
            best[name] = min(best[name], shell_seconds(args, 1))
    return best


def per_image_rows(ckpt: Path, images: list[Path], few: int, many: int, repeats: int) -> dict:
    """``predict`` in-process (the command's whole path: checkpoint, image-tower load, images, report),
    per extra image: (time of ``many`` images - time of ``few``) / (many - few), fp32 and auto."""
    import contextlib
    import io

    from explorer.cli import main as cli

    def run(paths, precision):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert cli(["predict", str(ckpt), *map(str, paths), "--precision", precision]) == 0

    fns = {f"{size}_{p}": (lambda n=n, p=p: run(images[:n], p)) for p in ("fp32", "auto") for size, n in (("few", few), ("many", many))}
    ms = _fastest_ms_per_image(fns, 1, repeats)
    return {f"predict_per_image_ms_{p}": (ms[f"many_{p}"] - ms[f"few_{p}"]) / (many - few) for p in ("fp32", "auto")}


def _fastest_ms_per_image(fns: dict, n: int, repeats: int) -> dict:
    """Fastest milliseconds per image of each ``fns`` entry, timed round-robin (load hits them alike)."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) / n * 1000 for name, values in times.items()}


def forward_rows(ckpt: Path, onnx: Path, images: list[Path], repeats: int, bf16: bool) -> dict:
    """In-process: loading (whole, image tower), the image tower's forward alone per precision, and
    onnxruntime with preprocessing."""
    import torch

    from explorer.backbones.load import load_backbone
    from explorer.data.images import open_image
    from explorer.predict.onnx_runtime import load_onnx
    from explorer.store.checkpoints import load_checkpoint

    spec = load_checkpoint(ckpt).backbone_spec
    pil = [open_image(p) for p in images]
    out = _fastest_ms_per_image({f"load_ms_{part}": lambda o=only: load_backbone(spec, device="cpu", image_only=o)
                                 for part, only in (("whole", False), ("image", True))}, 1, repeats)
    towers = {p: load_backbone(spec, device="cpu", precision=p, image_only=True) for p in ("fp32", "auto") + (("bf16",) if bf16 else ())}
    pixels = torch.stack([towers["fp32"].preprocess(im) for im in pil])
    out.update(_fastest_ms_per_image({f"forward_ms_{p}": lambda t=t: t.encode_images(pixels) for p, t in towers.items()},
                                     len(pil), repeats if not bf16 else max(1, repeats // 2)))
    model = load_onnx(onnx)
    out.update(_fastest_ms_per_image({"onnxruntime_ms": lambda: model.predict(pil)}, len(pil), repeats))
    out["onnxruntime_threads"] = model.session.get_session_options().intra_op_num_threads
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["ViT-B-32", "ViT-B-16"])
    parser.add_argument("--few", type=int, default=8)
    parser.add_argument("--many", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="also time an explicit bf16 forward (slow where emulated)")
    args = parser.parse_args()

    print(cpu_line(), flush=True)
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    images = make_images(args.many)
    results: dict = {}
    for arch in args.archs:
        ckpt, onnx = make_files(arch)
        results[arch] = {**predict_rows(ckpt, images, args.repeats),
                         **per_image_rows(ckpt, images, args.few, args.many, args.repeats),
                         **forward_rows(ckpt, onnx, images[: args.few], args.repeats, args.bf16)}
        print(f"{arch} done", flush=True)
    print("\n`import torch, open_clip` (fastest, beside each architecture's runs): "
          + ", ".join(f"{results[a]['import_s']:.2f} s" for a in args.archs))
    print("| | " + " | ".join(args.archs) + " |\n|---|" + "---|" * len(args.archs))
    rows = [("load the backbone, whole (ms)", "load_ms_whole", "{:.0f}"),
            ("load its image tower alone (ms)", "load_ms_image", "{:.0f}"),
            ("predict, 1 image, from the shell (s)", "predict_1_image_s", "{:.2f}"),
            ("  its margin over the import (s)", None, "{:.2f}"),
            ("predict, per extra image, fp32 (ms)", "predict_per_image_ms_fp32", "{:.0f}"),
            ("predict, per extra image, auto (ms)", "predict_per_image_ms_auto", "{:.0f}"),
            (f"forward alone, batch {args.few}, fp32 (ms/image)", "forward_ms_fp32", "{:.0f}"),
            (f"forward alone, batch {args.few}, auto (ms/image)", "forward_ms_auto", "{:.0f}")]
    if args.bf16:
        rows.append((f"forward alone, batch {args.few}, bf16 (ms/image)", "forward_ms_bf16", "{:.0f}"))
    rows.append((f"onnxruntime, batch {args.few}, preprocessing included (ms/image)", "onnxruntime_ms", "{:.0f}"))
    for label, key, fmt in rows:
        cells = [fmt.format(results[a][key] if key else results[a]["predict_1_image_s"] - results[a]["import_s"]) for a in args.archs]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("JSON " + json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
