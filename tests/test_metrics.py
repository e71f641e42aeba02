import numpy as np
import pytest

from bam import metrics


def test_classification_metrics_against_hand_computed_values():
    gold = np.array([1, 1, 0, 0, 1])
    predicted = np.array([1, 0, 0, 1, 1])
    # TP=2, FN=1, FP=1, TN=1: accuracy 3/5, F1 = 2*2/(2*2+1+1) = 2/3,
    # MCC = (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6.
    values = metrics.compute(["accuracy", "f1", "mcc"], gold, predicted)
    assert values == pytest.approx({"accuracy": 60.0, "f1": 200 / 3, "mcc": 100 / 6})


def test_correlations_against_hand_computed_values():
    gold = np.array([1.0, 2.0, 3.0, 4.0])
    predicted = np.array([1.0, 3.0, 2.0, 4.0])
    # Pearson: deviations (-1.5,-.5,.5,1.5) and (-1.5,.5,-.5,1.5): 4/5. Spearman on these ranks: the same.
    assert metrics.compute(["pearson", "spearman"], gold, predicted) == pytest.approx({"pearson": 80.0, "spearman": 80.0})


def test_constant_predictions_score_zero_correlation_not_nan():
    assert metrics.compute(["pearson"], np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0])) == {"pearson": 0.0}


def test_task_score_is_the_mean_of_metrics_and_average_is_over_tasks():
    summary = metrics.summarize({"mrpc": {"f1": 90.0, "accuracy": 80.0}, "rte": {"accuracy": 60.0}})
    assert summary["tasks"]["mrpc"] == {"f1": 90.0, "accuracy": 80.0, "score": 85.0}
    assert summary["average"] == pytest.approx(72.5)
