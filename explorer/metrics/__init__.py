"""Metrics as pure functions in scikit-learn's argument order ``metric(y_true, y_pred, *, ...)``.

``validation`` (shared input checks) <- ``ordinal`` (MAE, accuracy, CS@k, AMAE/MMAE, QWK, Spearman,
Kendall, RPS, epsilon error, seed aggregation) and ``calibration`` (ECE, MCE, interval coverage) <-
``panel`` (all of them from one probability matrix). The public functions are re-exported here.
"""

from explorer.metrics.calibration import calibration_panel, ece, interval_coverage, mce, reliability_table
from explorer.metrics.ordinal import (
                                      accuracy,
                                      aggregate,
                                      amae_mmae,
                                      cs_at_k,
                                      epsilon_error,
                                      format_mean_std,
                                      kendall,
                                      mae,
                                      qwk,
                                      ranked_probability_score,
                                      spearman,
)
from explorer.metrics.panel import metric_panel

__all__ = ["accuracy", "aggregate", "amae_mmae", "calibration_panel", "cs_at_k", "ece", "epsilon_error", "format_mean_std",
           "interval_coverage", "kendall", "mae", "mce", "metric_panel", "qwk", "ranked_probability_score",
           "reliability_table", "spearman"]
