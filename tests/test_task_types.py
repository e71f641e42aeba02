"""The task types against hand-computed values: labels, targets, losses, predictions, metric inputs, KPIs."""

import math

import pytest
import torch

from bam.config import TaskSpec
from bam.errors import BamError
from bam.task_types import TASK_TYPES, Batch, StockOutputs, task_type

CLASSIFICATION, REGRESSION = TASK_TYPES["classification"], TASK_TYPES["regression"]
BINARY = TaskSpec(labels=("no", "yes"))
SIMILARITY = TaskSpec(type="regression", label_range=(0.0, 5.0), metrics=("pearson",))


def test_soft_cross_entropy_equals_hard_cross_entropy_on_one_hot_targets():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    batch = Batch(torch.tensor([0, 1]))
    soft = CLASSIFICATION.loss(logits, CLASSIFICATION.gold_targets(batch, BINARY), batch, BINARY)
    assert soft.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, batch.labels).item())


def test_regression_loss_is_the_mean_squared_error_on_the_unit_scale():
    batch = Batch(torch.tensor([0.2, 1.0]))
    # ((0.5 - 0.2)^2 + (0.5 - 1.0)^2) / 2 = (0.09 + 0.25) / 2 = 0.17
    assert REGRESSION.loss(torch.tensor([[0.5], [0.5]]), REGRESSION.gold_targets(batch, SIMILARITY), batch, SIMILARITY).item() == pytest.approx(0.17)


def test_labels_are_parsed_and_checked_by_type():
    assert CLASSIFICATION.parse_label("yes", BINARY, "f:2") == 1
    with pytest.raises(BamError, match=r"f:2: label 'maybe' is not one of no, yes"):
        CLASSIFICATION.parse_label("maybe", BINARY, "f:2")
    assert REGRESSION.parse_label("3.8", SIMILARITY, "f:3") == pytest.approx(0.76)  # (3.8 - 0) / 5
    with pytest.raises(BamError, match=r"outside the task's label_range \[0, 5\]"):
        REGRESSION.parse_label("5.5", SIMILARITY, "f:3")
    with pytest.raises(BamError, match=r"f:4\[1\]: label 2 is not an index into no, yes"):
        CLASSIFICATION.hub_label(2, BINARY, "f:4[1]")


def test_predictions_and_metric_inputs_use_the_original_scale():
    gold, predicted = REGRESSION.metric_inputs(Batch(torch.tensor([0.5, 1.0])), torch.tensor([[0.1], [0.9]]), SIMILARITY)
    assert gold.tolist() == pytest.approx([2.5, 5.0]) and predicted.tolist() == pytest.approx([0.5, 4.5])
    gold, predicted = CLASSIFICATION.metric_inputs(Batch(torch.tensor([1, 0])), torch.tensor([[0.2, 0.9], [0.3, -1.0]]), BINARY)
    assert gold.tolist() == [1, 0] and predicted.tolist() == [1, 0]


def test_kpis_are_batch_accuracy_and_one_minus_mean_absolute_error():
    # Argmax 1, 0, 1 against gold 1, 1, 1: 2 of 3 right.
    outputs = torch.tensor([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    assert CLASSIFICATION.kpi(outputs, Batch(torch.tensor([1, 1, 1])), BINARY) == pytest.approx(2 / 3)
    # |0.5 - 0.2| = 0.3 and |0.9 - 1.0| = 0.1: mean 0.2, KPI 0.8.
    assert REGRESSION.kpi(torch.tensor([[0.5], [0.9]]), Batch(torch.tensor([0.2, 1.0])), SIMILARITY) == pytest.approx(0.8)


def test_output_sizes_and_label_dtypes():
    assert CLASSIFICATION.output_size(TaskSpec(labels=("a", "b", "c"))) == 3 and REGRESSION.output_size(SIMILARITY) == 1
    assert (CLASSIFICATION.label_dtype, REGRESSION.label_dtype) == ("int64", "float32")


def test_specs_are_checked_by_their_type():
    with pytest.raises(BamError, match="needs at least two `labels`"):
        CLASSIFICATION.check_spec("x", TaskSpec(labels=("only",)))
    with pytest.raises(BamError, match="metric 'f1' does not fit a classification task with 3 labels"):
        CLASSIFICATION.check_spec("x", TaskSpec(labels=("a", "b", "c"), metrics=("f1",)))
    with pytest.raises(BamError, match="`label_range` must be"):
        REGRESSION.check_spec("x", TaskSpec(type="regression", label_range=(1.0, math.inf), metrics=("pearson",)))


def test_an_unknown_type_is_named_with_the_known_ones():
    with pytest.raises(BamError, match=r"task 'x': unknown type 'regresion' \(did you mean \"regression\"\?\); known types: classification, regression"):
        task_type("regresion", "x")


def test_stock_outputs_name_the_labels_and_take_regression_back_to_its_original_scale():
    assert CLASSIFICATION.stock_outputs("rte", BINARY) == StockOutputs(("no", "yes"), "single_label_classification", 1.0, 0.0)
    shifted = TaskSpec(type="regression", label_range=(1.0, 3.0), metrics=("pearson",))
    assert REGRESSION.stock_outputs("similar", shifted) == StockOutputs(("similar",), "regression", scale=2.0, shift=1.0)
    raw = torch.tensor([[0.0], [0.25], [1.0]])
    outputs = REGRESSION.stock_outputs("stsb", SIMILARITY)
    assert (raw * outputs.scale + outputs.shift).squeeze(-1).tolist() == REGRESSION.predictions(raw, SIMILARITY).tolist() == [0.0, 1.25, 5.0]
