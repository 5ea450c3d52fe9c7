"""Train/val/test splits (given splits kept, missing ones carved) and the paper's data regimes (docs/methods/ordinalclip.md §6)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from explorer.core.errors import ExplorerError
from explorer.data.datasets.core import SPLITS, Dataset

_SPLIT_ORDER = ("train", "val", "test")


def _quotas(by_label: dict[int, list[int]], total: int, fraction: float, rng: np.random.Generator) -> dict[int, int]:
    """Per-label counts for one carved split: floor of the exact share, largest remainders get the rest."""
    keys = sorted(by_label)
    exact = {k: len(by_label[k]) * fraction for k in keys}
    q = {k: int(math.floor(exact[k])) for k in keys}
    target = int(round(total * fraction))
    tie = rng.random(len(keys))
    order = sorted(range(len(keys)), key=lambda j: (-(exact[keys[j]] - q[keys[j]]), tie[j]))
    for j in order[: max(0, target - sum(q.values()))]:
        q[keys[j]] += 1
    return q


def _keep_one_in_train(n: int, n_test: int, n_val: int) -> tuple[int, int]:
    """Shrink the val/test counts until at least one of the n samples stays in train."""
    while n_test + n_val > n - 1 and (n_test or n_val):
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    return n_test, n_val


def _stratified(indices: list[int], labels: dict[int, int], fractions: dict[str, float], rng: np.random.Generator) -> dict[str, list[int]]:
    """Per-label seeded split; largest-remainder rounding; every label with >= 1 sample keeps one in train."""
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    by_label: dict[int, list[int]] = {}
    for i in indices:
        by_label.setdefault(labels[i], []).append(i)
    quota = {split: _quotas(by_label, len(indices), fractions.get(split, 0.0), rng) for split in ("test", "val")}
    for k in sorted(by_label):
        members = list(by_label[k])
        rng.shuffle(members)
        n_test, n_val = _keep_one_in_train(len(members), quota["test"][k], quota["val"][k])
        out["test"] += members[:n_test]
        out["val"] += members[n_test:n_test + n_val]
        out["train"] += members[n_test + n_val:]
    return out


def _group_cost(have: np.ndarray, total: np.ndarray, g: np.ndarray, target: np.ndarray, total_target: np.ndarray,
                frac: np.ndarray, weight: np.ndarray, n: int) -> np.ndarray:
    """For each split, how much adding group counts g worsens label balance and split size (inf if the split is off)."""
    size = g.sum()
    cost = np.empty(3)
    for s in range(3):
        if frac[s] <= 0:
            cost[s] = np.inf
            continue
        d_lab = ((have[s] + g - target[s]) ** 2 - (have[s] - target[s]) ** 2) @ weight
        d_tot = ((total[s] + size - total_target[s]) ** 2 - (total[s] - total_target[s]) ** 2) / max(n, 1)
        cost[s] = d_lab + d_tot
    return cost


def _grouped(indices: list[int], labels: dict[int, int], groups: dict[int, str], fractions: dict[str, float],
             rng: np.random.Generator) -> dict[str, list[int]]:
    """Seeded subject-exclusive split: whole groups, largest first, go where they best fix label balance."""
    members: dict[str, list[int]] = {}
    for i in indices:
        members.setdefault(groups[i], []).append(i)
    names = sorted(members)
    tie = rng.random(len(names))
    order = sorted(range(len(names)), key=lambda j: (-len(members[names[j]]), tie[j]))
    keys = sorted({labels[i] for i in indices})
    col = {k: j for j, k in enumerate(keys)}
    n_label = np.zeros(len(keys))
    for i in indices:
        n_label[col[labels[i]]] += 1
    frac = np.array([1.0 - fractions.get("val", 0.0) - fractions.get("test", 0.0), fractions.get("val", 0.0), fractions.get("test", 0.0)])
    target = frac[:, None] * n_label[None, :]
    total_target = frac * len(indices)
    have = np.zeros_like(target)
    total = np.zeros(3)
    weight = 1.0 / np.maximum(n_label, 1.0)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for j in order:
        g = np.zeros(len(keys))
        for i in members[names[j]]:
            g[col[labels[i]]] += 1
        s = int(np.argmin(_group_cost(have, total, g, target, total_target, frac, weight, len(indices))))
        have[s] += g
        total[s] += g.sum()
        out[_SPLIT_ORDER[s]] += members[names[j]]
    return out


def _carve(indices: list[int], dataset: Dataset, fractions: dict[str, float], rng: np.random.Generator) -> dict[str, list[int]]:
    labels = {i: dataset.samples[i].label for i in indices}
    if any(dataset.samples[i].subject is not None for i in indices):
        groups = {i: dataset.samples[i].subject if dataset.samples[i].subject is not None else f"\0{i}" for i in indices}
        return _grouped(indices, labels, groups, fractions, rng)
    return _stratified(indices, labels, fractions, rng)


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for what, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ExplorerError(f"{what} must be at least 0 and below 1, not {f}.")
    if val_fraction + test_fraction >= 1.0:
        raise ExplorerError(f"val_fraction + test_fraction is {val_fraction + test_fraction:g}; it must stay below 1 to leave training data.")


def make_splits(dataset: Dataset, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0) -> dict[str, list[int]]:
    """Train/val/test sample indices: given splits kept, missing ones carved (seeded, stratified, subject-exclusive); sets dataset.splits.

    Stratification uses each sample's evaluation label; unusable entries (parse errors) are left out.
    Select models on val; test is for the final report only.
    """
    _check_fractions(val_fraction, test_fraction)
    usable = [i for i, s in enumerate(dataset.samples) if s.error is None and s.labels]
    given: dict[str, list[int]] = {s: [] for s in SPLITS}
    pool: list[int] = []
    for i in usable:
        split = dataset.samples[i].split
        if split in SPLITS and split != "train":
            given[split].append(i)
        else:
            pool.append(i)  # given train and unassigned samples
    fractions = {"val": 0.0 if given["val"] else val_fraction, "test": 0.0 if given["test"] else test_fraction}
    rng = np.random.default_rng([int(seed), 7919])
    carved = _carve(pool, dataset, fractions, rng) if pool else {s: [] for s in SPLITS}
    splits = {s: sorted(given[s] + carved[s]) for s in SPLITS}
    dataset.splits = splits
    return {s: list(v) for s, v in splits.items()}


# --------------------------------------------------------------------------- regimes (docs/methods/ordinalclip.md §6)


def _by_label(indices: Sequence[int], labels: Sequence[int]) -> dict[int, list[int]]:
    if len(indices) != len(labels):
        raise ExplorerError(f"{len(indices)} indices but {len(labels)} labels; give one label per index.")
    out: dict[int, list[int]] = {}
    for i, lab in zip(indices, labels):
        out.setdefault(int(lab), []).append(int(i))
    return out


def few_shot(indices: Sequence[int], labels: Sequence[int], k: int, seed: int = 0) -> list[int]:
    """k training indices per label drawn without replacement (all if fewer); labels[j] belongs to indices[j]."""
    if int(k) < 1:
        raise ExplorerError(f"Few-shot k must be at least 1, not {k}.")
    rng = np.random.default_rng([int(seed), 104729])
    chosen: list[int] = []
    for lab, members in sorted(_by_label(indices, labels).items()):
        if len(members) <= k:
            chosen += members
        else:
            chosen += [members[j] for j in rng.choice(len(members), size=int(k), replace=False)]
    return sorted(chosen)


def label_shift(indices: Sequence[int], labels: Sequence[int], num_classes_c: int, scale_s: float, seed: int = 0) -> list[int]:
    """Label-distribution shift: the c most frequent training labels keep max(int(n*s), 1) images each."""
    if int(num_classes_c) < 0:
        raise ExplorerError(f"The number of shifted labels c must be at least 0, not {num_classes_c}.")
    if not 0.0 < float(scale_s) <= 1.0:
        raise ExplorerError(f"The keep scale s must be in (0, 1], not {scale_s}.")
    rng = np.random.default_rng([int(seed), 130363])
    groups = _by_label(indices, labels)
    ordered = sorted(groups, key=lambda lab: (-len(groups[lab]), lab))  # most frequent first; ties: lower label
    shifted = set(ordered[: int(num_classes_c)])
    chosen: list[int] = []
    for lab in sorted(groups):
        members = groups[lab]
        if lab in shifted:
            keep = max(int(len(members) * float(scale_s)), 1)
            chosen += [members[j] for j in rng.choice(len(members), size=keep, replace=False)]
        else:
            chosen += members
    return sorted(chosen)


def long_tail(indices: Sequence[int], labels: Sequence[int], min_label: int = 50) -> list[int]:
    """Evaluation indices whose label (rank index) is >= min_label (the paper's long-tail test)."""
    if len(indices) != len(labels):
        raise ExplorerError(f"{len(indices)} indices but {len(labels)} labels; give one label per index.")
    return [int(i) for i, lab in zip(indices, labels) if int(lab) >= int(min_label)]
