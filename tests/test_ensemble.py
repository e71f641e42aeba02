"""Teacher ensembles: the averaging per task type against hand-computed values."""

import math

import pytest
import torch

from bam.task_types import TASK_TYPES

CLASSIFICATION, REGRESSION = TASK_TYPES["classification"], TASK_TYPES["regression"]


def test_classification_stores_the_log_of_the_mean_distribution():
    # Member a: softmax([ln 2, 0, 0]) = [2, 1, 1] / 4 and softmax([0, 0, 0]) = [1, 1, 1] / 3.
    # Member b: softmax([0, ln 3, 0]) = [1, 3, 1] / 5 and softmax([ln 4 + 10, 10, ln 3 + 10]) = [4, 1, 3] / 8.
    a = torch.tensor([[math.log(2), 0.0, 0.0], [0.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, math.log(3), 0.0], [math.log(4) + 10, 10.0, math.log(3) + 10]])
    # Row 0: ([0.5, 0.25, 0.25] + [0.2, 0.6, 0.2]) / 2 = [0.35, 0.425, 0.225].
    # Row 1: ([1/3, 1/3, 1/3] + [1/2, 1/8, 3/8]) / 2 = [5/12, 11/48, 17/48] (= [20, 11, 17] / 48).
    mean = torch.tensor([[0.35, 0.425, 0.225], [5 / 12, 11 / 48, 17 / 48]])
    stored = CLASSIFICATION.ensemble([a, b])
    assert stored.dtype == torch.float32
    torch.testing.assert_close(stored, mean.log(), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.softmax(stored, dim=-1), mean, atol=1e-6, rtol=0)
    # Not the mean of the logits: row 0 would be softmax([ln 2 / 2, ln 3 / 2, 0]) = [√2, √3, 1] / (√2 + √3 + 1).
    assert torch.softmax(stored[0], dim=-1)[0].item() != pytest.approx(math.sqrt(2) / (math.sqrt(2) + math.sqrt(3) + 1), abs=1e-3)


def test_classification_ensemble_stays_finite_where_float32_probabilities_underflow():
    # softmax([0, -200]) = [1, e^-200], and e^-200 is 0 in float32: the mean's log must still be finite (about -200 - ln 2).
    stored = CLASSIFICATION.ensemble([torch.tensor([[0.0, -200.0]]), torch.tensor([[0.0, -300.0]])])
    assert torch.isfinite(stored).all() and stored[0, 1].item() == pytest.approx(-200 - math.log(2), abs=1e-3)


def test_regression_stores_the_mean_value():
    # (0.2 + 0.4) / 2 = 0.3 and (0.9 + 0.5) / 2 = 0.7, on the [0, 1] target scale the store holds.
    torch.testing.assert_close(REGRESSION.ensemble([torch.tensor([[0.2], [0.9]]), torch.tensor([[0.4], [0.5]])]), torch.tensor([[0.3], [0.7]]))
