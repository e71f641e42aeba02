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


def test_f1_averages_over_the_label_set_match_hand_computed_values():
    # Per class: 0 -> P 1, R 1/2, F1 2/3; 1 -> P 1/3, R 1, F1 1/2; 2 -> no hit, F1 0 (supports 2, 1, 1).
    gold, predicted = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1])
    values = metrics.compute(["macro_f1", "micro_f1", "weighted_f1"], gold, predicted, classes=range(3))
    assert values == pytest.approx({"macro_f1": 100 * (2 / 3 + 1 / 2) / 3, "micro_f1": 50.0, "weighted_f1": 100 * (2 * 2 / 3 + 1 / 2) / 4})
    # A fourth class that neither side contains is part of the task's label set: it counts, with F1 0.
    assert metrics.compute(["macro_f1"], gold, predicted, classes=range(4)) == pytest.approx({"macro_f1": 100 * (2 / 3 + 1 / 2) / 4})
