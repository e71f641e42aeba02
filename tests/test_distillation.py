import pytest
import torch

from bam.distillation import blend, gold_weight
from bam.config import TaskSpec
from bam.task_types import TASK_TYPES, Batch

CLASSIFICATION, REGRESSION = TASK_TYPES["classification"], TASK_TYPES["regression"]


def test_linear_annealing_moves_from_zero_to_one_in_equal_steps():
    weights = [gold_weight("linear", step, 4) for step in range(5)]
    assert weights == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_no_annealing_is_gold_only_and_constant_is_fixed():
    assert [gold_weight("none", step, 10) for step in (0, 5, 9)] == [1.0, 1.0, 1.0]
    assert [gold_weight("constant", step, 10, teacher_weight=0.3) for step in (0, 9)] == [pytest.approx(0.7)] * 2


def test_unknown_annealing_is_refused():
    with pytest.raises(ValueError, match="unknown annealing"):
        gold_weight("cosine", 0, 10)


SPEC = TaskSpec(labels=("no", "yes"))


@pytest.mark.parametrize(
    ("weight", "expected"),
    [(0.0, [0.2689, 0.7311]), (0.5, [0.6345, 0.3655]), (1.0, [1.0, 0.0])],
)
def test_classification_blend_of_one_hot_gold_and_teacher_softmax(weight, expected):
    # Gold label 0; teacher logits (0, 1): softmax = (1/(1+e), e/(1+e)) = (0.2689, 0.7311).
    batch = Batch(torch.tensor([0]), teacher_rows=torch.tensor([[0.0, 1.0]]))
    gold, teacher = CLASSIFICATION.gold_targets(batch, SPEC), CLASSIFICATION.teacher_targets(batch, SPEC)
    target = blend(gold, teacher, weight)
    assert target[0].tolist() == pytest.approx(expected, abs=1e-4)
    assert target.sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize(("weight", "expected"), [(0.0, 0.2), (0.5, 0.5), (1.0, 0.8)])
def test_regression_blend_of_gold_value_and_teacher_value(weight, expected):
    batch = Batch(torch.tensor([0.8]), teacher_rows=torch.tensor([[0.2]]))
    gold, teacher = REGRESSION.gold_targets(batch, TaskSpec(type="regression")), REGRESSION.teacher_targets(batch, TaskSpec(type="regression"))
    assert blend(gold, teacher, weight).tolist() == pytest.approx([expected])
