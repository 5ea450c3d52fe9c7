import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import cohen_kappa_score, mean_absolute_error

from explorer import metrics as M
from explorer.core.errors import ExplorerError


def tau_b(x, y):
    """O(n^2) Kendall tau-b straight from the definition."""
    n = len(x)
    conc = disc = tx = ty = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif dx == dy:
                conc += 1
            else:
                disc += 1
    return (conc - disc) / math.sqrt((conc + disc + tx) * (conc + disc + ty))


def rps_loop(P, y):
    N, R = P.shape
    total = 0.0
    for n in range(N):
        acc, s = 0.0, 0.0
        for k in range(R - 1):
            acc += P[n, k]
            s += (acc - (1.0 if y[n] <= k else 0.0)) ** 2
        total += s / (R - 1)
    return total / N


def random_probs(rng, N, R):
    Z = rng.normal(size=(N, R)) * 2
    P = np.exp(Z)
    return P / P.sum(axis=1, keepdims=True)


def test_hand_examples():
    pred, y = [0, 1, 2], [0, 2, 2]
    assert M.mae(y, pred) == pytest.approx(1 / 3)
    assert M.accuracy(y, pred) == pytest.approx(2 / 3)
    assert M.accuracy([0, 2, 2], [0.4, 1.4, 2.5]) == pytest.approx(2 / 3)  # 2.5 rounds half to even
    assert M.cs_at_k([0, 2, 2], [0, 3, 5], k=1) == pytest.approx(2 / 3)
    assert M.cs_at_k([0, 2, 2], [0, 3, 5], k=0) == pytest.approx(1 / 3)
    # classes 0: |0-0| = 0; class 2: (|1-2| + |2-2|)/2 = 0.5
    assert M.amae_mmae(y, pred) == pytest.approx((0.25, 0.5))
    assert M.mae(np.array([1, 4]), torch.tensor([1.0, 2.0])) == pytest.approx(1.0)


def test_against_sklearn_and_loops():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 200)
    pred = y + rng.normal(0, 2, 200)
    assert M.mae(y, pred) == pytest.approx(mean_absolute_error(y, pred))
    assert M.accuracy(y, pred) == pytest.approx(np.mean([round(p) == t for p, t in zip(pred, y)]))
    for k in (1, 3, 5):
        assert M.cs_at_k(y, pred, k=k) == pytest.approx(sum(abs(p - t) <= k for p, t in zip(pred, y)) / 200)
    per = {}
    for p, t in zip(pred, y):
        per.setdefault(t, []).append(abs(p - t))
    per = [sum(v) / len(v) for v in per.values()]
    assert M.amae_mmae(y, pred) == pytest.approx((sum(per) / len(per), max(per)))


@pytest.mark.parametrize("seed", range(5))
def test_qwk_vs_sklearn(seed):
    rng = np.random.default_rng(seed)
    R = 8
    y = rng.integers(0, R, 60)
    p = np.clip(y + rng.integers(-2, 3, 60), 0, R - 1)
    if seed % 2:  # some classes absent from both sides
        y, p = np.clip(y, 2, 5), np.clip(p, 1, 5)
    ref = cohen_kappa_score(y, p, weights="quadratic")
    assert M.qwk(y, p, num_ranks=R) == pytest.approx(ref, abs=1e-12)


def test_qwk_perfect_and_undefined():
    assert M.qwk([0, 1, 2], [0, 1, 2], num_ranks=3) == pytest.approx(1.0)
    assert math.isnan(M.qwk([1, 1, 1], [1, 1, 1], num_ranks=3))
    with pytest.raises(ExplorerError):
        M.qwk([0, 1], [0, 3], num_ranks=3)
    with pytest.raises(ExplorerError):
        M.qwk([0, 1], [0.5, 1], num_ranks=3)


@pytest.mark.parametrize("seed", range(4))
def test_rank_correlations(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 6, 40)  # many ties
    pred = np.round(y + rng.normal(0, 1.5, 40), 0)
    assert M.spearman(y, pred) == pytest.approx(stats.spearmanr(pred, y).statistic, abs=1e-12)
    assert M.kendall(y, pred) == pytest.approx(tau_b(pred, y), abs=1e-12)


def test_correlations_constant_are_nan():
    assert math.isnan(M.spearman([0, 1, 2], [1, 1, 1]))
    assert math.isnan(M.kendall([0, 1, 2], [1, 1, 1]))
    assert M.spearman([0, 1, 2], [3, 2, 1]) == pytest.approx(-1.0)


def test_rps():
    rng = np.random.default_rng(1)
    P = random_probs(rng, 30, 7)
    y = rng.integers(0, 7, 30)
    assert M.ranked_probability_score(y, P) == pytest.approx(rps_loop(P, y), abs=1e-12)
    assert M.ranked_probability_score(y, np.eye(7)[y]) == 0.0
    # R = 2: RPS is the Brier score of class 1
    P2 = random_probs(rng, 50, 2)
    y2 = rng.integers(0, 2, 50)
    assert M.ranked_probability_score(y2, P2) == pytest.approx(np.mean((P2[:, 1] - y2) ** 2))
    # worst case: all mass at the far end
    assert M.ranked_probability_score([0], [[0.0, 0.0, 1.0]]) == pytest.approx(1.0)


def test_metric_panel():
    rng = np.random.default_rng(2)
    N, R = 80, 10
    P = random_probs(rng, N, R)
    y = rng.integers(0, R, N)
    panel = M.metric_panel(y, torch.tensor(P))
    exp = np.array([sum(r * P[n, r] for r in range(R)) for n in range(N)])
    amax = np.array([max(range(R), key=lambda r: P[n, r]) for n in range(N)])
    assert panel["n"] == N
    assert panel["mae_exp"] == pytest.approx(np.mean(np.abs(exp - y)), abs=1e-6)
    assert panel["mae_max"] == pytest.approx(np.mean(np.abs(amax - y)))
    assert panel["acc_max"] == pytest.approx(np.mean(amax == y))
    assert panel["acc_exp"] == pytest.approx(np.mean(np.round(exp) == y))
    assert panel["cs1"] == pytest.approx(np.mean(np.abs(amax - y) <= 1))
    assert panel["cs5"] == pytest.approx(np.mean(np.abs(amax - y) <= 5))
    assert panel["qwk"] == pytest.approx(cohen_kappa_score(y, amax, weights="quadratic"), abs=1e-9)
    assert panel["spearman"] == pytest.approx(stats.spearmanr(exp, y).statistic, abs=1e-6)
    assert panel["kendall"] == pytest.approx(tau_b(exp, y), abs=1e-6)
    assert panel["rps"] == pytest.approx(rps_loop(P, y), abs=1e-6)
    assert set(panel) == {"mae_exp", "mae_max", "acc_exp", "acc_max", "cs1", "cs3", "cs5", "amae",
                          "mmae", "qwk", "spearman", "kendall", "rps", "n", "ece", "mce", "interval_coverage"}
    assert all(isinstance(v, float) for v in panel.values())


def test_metric_panel_one_hot_perfect():
    y = np.array([0, 1, 2, 3, 3])
    panel = M.metric_panel(y, np.eye(4)[y])
    assert panel["mae_exp"] == 0.0 and panel["acc_max"] == 1.0 and panel["rps"] == 0.0
    assert panel["qwk"] == pytest.approx(1.0) and panel["spearman"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: M.mae([1, 2], [1, 2, 3]),
        lambda: M.mae([], []),
        lambda: M.mae([1], [np.nan]),
        lambda: M.metric_panel([0, 1], np.full((3, 4), 0.25)),
        lambda: M.metric_panel([0, 4], np.full((2, 4), 0.25)),
        lambda: M.metric_panel([0, -1], np.full((2, 4), 0.25)),
        lambda: M.metric_panel([0, 1], np.full((2, 4), 0.5)),
        lambda: M.metric_panel([0], np.full(4, 0.25)),
        lambda: M.ranked_probability_score([0.5, 1], np.full((2, 4), 0.25)),
        lambda: M.aggregate([]),
        lambda: M.format_mean_std({}, "mae"),
    ],
)
def test_errors(call):
    with pytest.raises(ExplorerError):
        call()


def test_aggregate():
    runs = [{"mae": 2.3, "acc": 0.5, "name": "a"}, {"mae": 2.4, "acc": 0.6}, {"mae": 2.26, "acc": 0.55}]
    agg = M.aggregate(runs)
    assert set(agg) == {"mae", "acc"}
    v = np.array([2.3, 2.4, 2.26])
    assert agg["mae"]["mean"] == pytest.approx(v.mean())
    assert agg["mae"]["std"] == pytest.approx(np.std(v, ddof=1))
    lo, hi = stats.t.interval(0.95, 2, loc=v.mean(), scale=stats.sem(v))
    assert agg["mae"]["ci95"] == pytest.approx((hi - lo) / 2)
    assert agg["mae"]["n"] == 3
    assert M.format_mean_std(agg, "mae") == f"{v.mean():.2f} ± {np.std(v, ddof=1):.2f}" == "2.32 ± 0.07"
    assert M.format_mean_std(agg, "acc", digits=3) == "0.550 ± 0.050"
    one = M.aggregate([{"mae": 1.5}])
    assert one["mae"] == {"mean": 1.5, "std": 0.0, "ci95": 0.0, "n": 1}


def test_epsilon_error_against_hand_computation():
    mu, pred, sigma = [30.0, 20.0, 50.0], [32.0, 20.0, 44.0], [2.0, 5.0, 3.0]
    # per sample: 1 - e^(-4/8), 1 - e^0, 1 - e^(-36/18)
    hand = ((1 - math.exp(-0.5)) + 0.0 + (1 - math.exp(-2.0))) / 3
    assert M.epsilon_error(mu, pred, sigma) == pytest.approx(hand, abs=1e-12)
    assert M.epsilon_error(torch.tensor(mu), np.array(pred), sigma) == pytest.approx(hand, abs=1e-12)
    assert M.epsilon_error([10.0], [10.0], [1.0]) == 0.0
    for bad in (
        lambda: M.epsilon_error([1.0, 2.0], [1.0], [1.0]),
        lambda: M.epsilon_error([1.0, 2.0], [1.0, 2.0], [1.0]),
        lambda: M.epsilon_error([1.0], [1.0], [0.0]),
        lambda: M.epsilon_error([1.0], [1.0], [np.nan]),
        lambda: M.epsilon_error([], [], []),
    ):
        with pytest.raises(ExplorerError):
            bad()
