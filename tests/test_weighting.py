"""The loss-weighting seam: equal weighting, the generic weighted backward, the registry."""

import pytest
import torch

from bam.errors import BamError
from bam.weighting import WEIGHTINGS, Equal, LossWeighting, build_weighting


def _losses():
    parameter = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    # d/dp of (p0^2 = 1) and (3 * p1 = 6): gradients (2, 0) and (0, 3).
    return parameter, {"a": parameter[0] ** 2, "b": 3 * parameter[1]}


def test_equal_weighting_backpropagates_the_plain_sum_and_reports_weight_one():
    parameter, losses = _losses()
    seen = []
    weights = Equal(["a", "b"]).backward(losses, lambda total: (seen.append(total.item()), total.backward()))
    assert seen == [7.0] and weights == {"a": 1.0, "b": 1.0}
    assert parameter.grad.tolist() == [2.0, 3.0]


def test_the_generic_backward_weights_each_loss():
    class Halves(LossWeighting):
        def weights(self, task_names):
            return {"a": 0.5, "b": 0.25}

    parameter, losses = _losses()
    weights = Halves(["a", "b"]).backward(losses, lambda total: total.backward())
    assert weights == {"a": 0.5, "b": 0.25} and parameter.grad.tolist() == [1.0, 0.75]


def test_equal_has_no_learnable_state_to_optimise_or_checkpoint():
    weighting = build_weighting("equal", ["a", "b"])
    assert list(weighting.parameters()) == [] and weighting.state_dict() == {}


def test_an_unknown_weighting_is_named_with_the_known_ones():
    assert set(WEIGHTINGS) == {"equal"}
    with pytest.raises(BamError, match=r"unknown method 'equl' \(did you mean \"equal\"\?\); known: equal"):
        build_weighting("equl", ["a"])
