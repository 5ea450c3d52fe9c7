"""The metric panel: every ordinal and calibration metric of an N x R probability matrix at once."""

from __future__ import annotations

import numpy as np

from explorer.metrics.calibration import calibration_panel
from explorer.metrics.ordinal import accuracy, amae_mmae, cs_at_k, kendall, mae, qwk, ranked_probability_score, spearman
from explorer.metrics.validation import check_probs


def metric_panel(y_true, y_prob) -> dict:
    """All metrics from an N x R probability matrix: "exp" = sum_r p_r * r, "max" = argmax (OrdinalCLIP conventions).

    Keys: mae_exp, mae_max, acc_exp, acc_max, cs1, cs3, cs5 (argmax), amae, mmae (exp),
    qwk (argmax), spearman, kendall (exp), rps, n, then ece, mce (argmax confidence, 15 bins) and
    interval_coverage (90 % central interval). Undefined correlations/QWK are NaN.
    """
    P, y = check_probs(y_true, y_prob)
    R = P.shape[1]
    exp = P @ np.arange(R, dtype=np.float64)
    amax = P.argmax(axis=1).astype(np.float64)
    amae, mmae = amae_mmae(y, exp)
    return {
        "mae_exp": mae(y, exp),
        "mae_max": mae(y, amax),
        "acc_exp": accuracy(y, exp),
        "acc_max": accuracy(y, amax),
        "cs1": cs_at_k(y, amax, k=1),
        "cs3": cs_at_k(y, amax, k=3),
        "cs5": cs_at_k(y, amax, k=5),
        "amae": amae,
        "mmae": mmae,
        "qwk": qwk(y, amax, num_ranks=R),
        "spearman": spearman(y, exp),
        "kendall": kendall(y, exp),
        "rps": ranked_probability_score(y, P),
        "n": float(y.size),
        **calibration_panel(y, P),
    }
