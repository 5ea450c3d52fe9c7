"""Benchmark the face detector (explorer.data.faces.detect_faces) on real photos and print the figures.

    .venv/bin/python benchmarks/bench_faces.py [--repeat 3] [--min-score 0.7]

Photos come from installed packages (scikit-image's data module, scikit-learn's sample images; see
tests/face_photos.py): ordinary portraits and tight face crops built from ``astronaut()`` and
``camera()`` (rescaled, rotated, greyscale, JPEG, mirrored, darker ...), and photos without a face
(coffee, a cat, rocket, moon, coins, Hubble deep field, text, textures ...).

Goals (issue 14): a face found in >= 99 % of tight crops and of portraits; at most 1 false face in
10 photos without faces; <= 10 ms per tight face crop (median) on one core. Time per image is the median over ``--repeat`` passes, detection only
(decoding excluded), on this machine's CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import face_photos as fp  # noqa: E402

from explorer.data import faces  # noqa: E402


def _timed(image, min_score: float, repeat: int):
    times, found = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        found = faces.detect_faces(image, min_score=min_score)
        times.append(time.perf_counter() - t0)
    return found, statistics.median(times)


def bench_faces(samples, min_score: float, repeat: int) -> dict:
    """Detection rate (a box on the face) and per-image time over face samples."""
    missed, times, scores = [], [], []
    for name, image, centre, size in samples:
        found, seconds = _timed(image, min_score, repeat)
        times.append(seconds)
        hits = [f for f in found if fp.hit([f.box], centre, size)]
        scores += [max(f.score for f in hits)] if hits else []
        if not hits:
            missed.append(name)
    return {"n": len(samples), "found": len(samples) - len(missed), "missed": missed, "times": times, "scores": scores}


def bench_no_faces(photos, min_score: float, repeat: int) -> dict:
    """False faces (any box at all) and per-image time over photos without faces."""
    false, times = [], []
    for name, image in photos:
        found, seconds = _timed(image, min_score, repeat)
        times.append(seconds)
        false += [(name, f.score) for f in found]
    return {"n": len(photos), "false": false, "times": times}


def _ms(times) -> str:
    return f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="passes per image (the median time is kept)")
    parser.add_argument("--min-score", type=float, default=faces.MIN_SCORE, help="detector threshold")
    args = parser.parse_args(argv)
    faces.detect_faces(fp.photo("astronaut"))  # load the detector once (not timed)
    ok = True
    for label, samples in (("tight face crops", fp.tight_crops()), ("portraits", fp.portraits())):
        r = bench_faces(samples, args.min_score, args.repeat)
        rate = r["found"] / r["n"]
        ok &= rate >= 0.99
        if label == "tight face crops":
            ok &= statistics.median(r["times"]) <= 0.010
        print(f"{label:17s}: {r['found']}/{r['n']} found ({rate:.1%}), lowest face score {min(r['scores']):.2f}; "
              f"{_ms(r['times'])} per image" + (f"; missed {r['missed']}" if r["missed"] else ""))
    r = bench_no_faces(fp.no_faces(), args.min_score, args.repeat)
    ok &= len(r["false"]) * 10 <= r["n"]
    print(f"{'no-face photos':17s}: {len(r['false'])} false faces in {r['n']} photos {r['false'] or ''}; "
          f"{_ms(r['times'])} per image")
    print(f"detector: YuNet ({faces.MODEL_FILE.name}) in cv2.FaceDetectorYN, min score {args.min_score}, "
          f"longer side scaled into [{faces.MIN_SIDE}, {faces.DETECT_SIDE}] px; goals {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
