"""The synthetic dots task: 0..K dark dots on a light background, generated in memory, deterministic."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.data.datasets.core import Dataset, Sample

DOTS_MAX_K = 20
DOTS_DEFAULT_N = 40


@dataclass
class DotsConfig:
    """Parameters of the synthetic dots task."""

    k: int
    n: int = DOTS_DEFAULT_N
    seed: int = 0
    noise: bool = True
    image_size: int = 64

    def render_sample(self, sample: Sample) -> Image.Image:
        """The image of a dots sample (its path ends with its index)."""
        return self.render(sample.label, int(sample.path.rsplit("/", 1)[-1]))

    def render(self, count: int, index: int) -> Image.Image:
        """The image of sample ``index`` showing ``count`` dots."""
        return render_dots(count, self.seed, index, self.image_size, self.noise)


def _parse_dots_spec(rest: str) -> tuple[int, int, int]:
    parts = rest.split(":")
    if not 1 <= len(parts) <= 3 or not all(re.fullmatch(r"\d+", p) for p in parts):
        raise ExplorerError(f"The dots spec is dots:K[:N[:SEED]] with whole numbers, not dots:{rest}.")
    k = int(parts[0])
    n = int(parts[1]) if len(parts) > 1 else DOTS_DEFAULT_N
    seed = int(parts[2]) if len(parts) > 2 else 0
    if not 1 <= k <= DOTS_MAX_K:
        raise ExplorerError(f"dots:K needs 1 <= K <= {DOTS_MAX_K} (K is the largest dot count), not {k}.")
    if n < 1:
        raise ExplorerError("dots:K:N needs at least 1 image per rank (N >= 1).")
    return k, n, seed


def read_dots(rest: str, opts: dict) -> Dataset:
    """The reader for ``dots:K[:N[:SEED]]``: (K + 1) * N samples, images made on demand."""
    k, n, seed = _parse_dots_spec(rest)
    size = int(opts.get("image_size", 64))
    if size < 32:
        raise ExplorerError(f"Dots images must be at least 32 pixels wide, not {size}.")
    config = DotsConfig(k, n, seed, bool(opts.get("noise", True)), size)
    samples = [Sample(f"dots/{label * n + m:06d}", [label]) for label in range(k + 1) for m in range(n)]
    ranks = Ranks([str(i) for i in range(k + 1)], list(range(k + 1)), opts.get("unit", "dots"), name="dot count")
    return Dataset(name=f"dots-{k}", samples=samples, ranks=ranks, root=None, spec="", generator=config)


def _try_place(count: int, rng: np.random.Generator, size: int, r_min: float, r_max: float,
               gap: float) -> list[tuple[float, float, float]]:
    """Up to ``count`` non-overlapping dots by rejection sampling (stops at the first dot that does not fit)."""
    dots: list[tuple[float, float, float]] = []
    for _ in range(count):
        for _ in range(200):
            r = float(rng.uniform(r_min, max(r_min, r_max)))
            x, y = rng.uniform(r + 1, size - 2 - r, size=2)
            if all((x - a) ** 2 + (y - b) ** 2 > (r + c + gap) ** 2 for a, b, c in dots):
                dots.append((float(x), float(y), r))
                break
        else:
            break
    return dots


def _grid_dots(count: int, rng: np.random.Generator, size: int, r_min: float, gap: float) -> list[tuple[float, float, float]]:
    """The guaranteed fallback: ``count`` dots on a jittered grid."""
    side = math.ceil(math.sqrt(count))
    cell = size / side
    cells = rng.permutation(side * side)[:count]
    r = max(2.0, min(r_min + 1, cell / 2 - gap))
    out = []
    for c in cells:
        cx = (c % side + 0.5) * cell + rng.uniform(-0.5, 0.5)
        cy = (c // side + 0.5) * cell + rng.uniform(-0.5, 0.5)
        out.append((float(cx), float(cy), float(r)))
    return out


def _place_dots(count: int, rng: np.random.Generator, size: int) -> list[tuple[float, float, float]]:
    """Non-overlapping (centre x, centre y, radius) by rejection sampling; shrinks, then a grid, if crowded."""
    gap = 2.0
    r_min, r_max = 2.5, size / 64 * 6.5
    for _ in range(4):
        dots = _try_place(count, rng, size, r_min, r_max, gap)
        if len(dots) == count:
            return dots
        r_max = max(r_min, r_max * 0.75)
    return _grid_dots(count, rng, size, r_min, gap)


def render_dots(count: int, seed: int, index: int, size: int = 64, noise: bool = True) -> Image.Image:
    """The dots image for (seed, index) with ``count`` dark dots on a light background; deterministic."""
    rng = np.random.default_rng([int(seed), int(index)])
    background = rng.integers(205, 250, size=3)
    img = np.empty((size, size, 3), dtype=np.float64)
    img[:] = background
    yy, xx = np.mgrid[0:size, 0:size]
    for x, y, r in _place_dots(int(count), rng, size):
        mask = (xx - x) ** 2 + (yy - y) ** 2 <= r * r
        img[mask] = rng.integers(10, 70, size=3)
    if noise:
        img += rng.normal(0.0, 3.0, size=img.shape)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")
