"""The loss-weighting seam and its methods: each method's maths against the reference's hand-computed values (§2), then each method's behaviour."""

import pytest
import torch

from bam.errors import BamError
import math

import numpy as np

from bam.weighting import (
    WEIGHTINGS, Equal, LossWeighting, adam_step, build_weighting, dwa_weights, famo_logit_gradient, famo_weights, focal_weight,
    gradnorm_step, min_norm_weights, pcgrad, smoothed,
)  # fmt: skip


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
    assert set(WEIGHTINGS) == {"equal", "fixed", "uncertainty", "dwa", "dtp", "gradnorm", "mgda", "pcgrad", "famo"}
    with pytest.raises(BamError, match=r"unknown method 'equl' \(did you mean \"equal\"\?\); known: equal, fixed"):
        build_weighting("equl", ["a"])


# --- the maths: ../shared/reference/mt-dnn-and-loss-weighting.md §2 --------------------------------------------


def test_fixed_weights_sum_as_written():
    parameter, losses = _losses()
    weights = build_weighting("fixed", ["a", "b"], {"a": 0.5}).backward(losses, lambda total: total.backward())
    assert weights == {"a": 0.5, "b": 1.0} and parameter.grad.tolist() == [1.0, 3.0]
    with pytest.raises(BamError, match=r"'c' is not one of the recipe's tasks"):
        build_weighting("fixed", ["a", "b"], {"c": 2.0})


@pytest.mark.parametrize(
    "last, before, expected",
    [((0.8, 0.5), (1.0, 0.5), (0.9500, 1.0500)), ((0.6, 0.9, 1.2), (1.2, 1.0, 1.2), (0.8558, 1.0453, 1.0989)), ((1.0, 2.0), (2.0, 4.0), (1.0, 1.0))],
)
def test_dwa_weights_match_the_hand_values(last, before, expected):
    np.testing.assert_allclose(dwa_weights(last, before, 2.0), expected, atol=1e-4)


@pytest.mark.parametrize("kpi, gamma, expected", [(0.5, 1, 0.3466), (0.9, 1, 0.010536), (0.5, 0.5, 0.4901), (0.9, 0.5, 0.03332), (0.5, 2, 0.17329), (0.1, 0.5, 2.1844)])
def test_dtp_focal_weights_match_the_hand_values(kpi, gamma, expected):
    assert focal_weight(kpi, gamma) == pytest.approx(expected, abs=1e-4)


def test_the_kpi_average_is_exponential():
    assert smoothed(0.8, 0.6, 0.5) == pytest.approx(0.7)


def test_gradnorm_takes_the_references_worked_step():
    updated = gradnorm_step(np.array([1.0, 1.0]), np.array([2.0, 1.0]), np.array([0.5, 1.0]), alpha=1.5, learning_rate=0.1)
    np.testing.assert_allclose(updated, [0.8421, 1.1579], atol=1e-4)


@pytest.mark.parametrize(
    "gradients, expected",
    [
        ([(1, 0), (0, 1)], (0.5, 0.5)), ([(2, 0), (0, 1)], (0.2, 0.8)), ([(1, 0), (-1, 0.5)], (0.529412, 0.470588)),
        ([(3, 1), (1, -2)], (0.307692, 0.692308)), ([(1, 0), (1, 1)], (1.0, 0.0)),
        ([(1, 0), (0, 1), (-1, -1)], (1 / 3, 1 / 3, 1 / 3)), ([(1, 0), (0, 1), (1, 1)], (0.5, 0.5, 0.0)), ([(2, 0), (0, 1), (1, 1)], (0.2, 0.8, 0.0)),
    ],
)  # fmt: skip
def test_mgda_finds_the_references_min_norm_points(gradients, expected):
    matrix = np.asarray(gradients, dtype=np.float64)
    alpha = min_norm_weights(matrix @ matrix.T, iterations=5000, tolerance=0)
    np.testing.assert_allclose(alpha, expected, atol=2e-3)
    assert alpha.sum() == pytest.approx(1.0) and (alpha >= 0).all()


def test_mgda_at_a_pareto_stationary_point_takes_no_step():
    matrix = np.array([(1.0, 0.0), (0.0, 1.0), (-1.0, -1.0)])
    alpha = min_norm_weights(matrix @ matrix.T, iterations=5000, tolerance=0)
    assert np.linalg.norm(alpha @ matrix) < 2e-3


def test_pcgrad_projects_conflicting_gradients_as_the_reference():
    update = pcgrad(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]), [[1], [0]])
    torch.testing.assert_close(update, torch.tensor([0.5, 1.5]))
    agreeing = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(pcgrad(agreeing, [[1], [0]]), agreeing.sum(dim=0))  # no conflict, no change


def test_famos_first_update_matches_the_reference():
    logits = torch.zeros(2, dtype=torch.float64)
    torch.testing.assert_close(famo_weights(logits, torch.tensor([1.0, 4.0], dtype=torch.float64)), torch.tensor([0.8, 0.2], dtype=torch.float64))
    decreases = torch.tensor([math.log(1.0) - math.log(0.5), 0.0], dtype=torch.float64)
    gradient = famo_logit_gradient(logits, decreases)
    torch.testing.assert_close(gradient, torch.tensor([0.1733, -0.1733], dtype=torch.float64), atol=1e-4, rtol=0)
    zeros = torch.zeros(2, dtype=torch.float64)
    stepped, _, _ = adam_step(logits, gradient, zeros, zeros, 1, learning_rate=0.025, weight_decay=0.001)
    torch.testing.assert_close(stepped, torch.tensor([-0.025, 0.025], dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.softmax(stepped, dim=0), torch.tensor([0.4875, 0.5125], dtype=torch.float64), atol=1e-4, rtol=0)


@pytest.mark.parametrize("likelihood, weight", [("gaussian", 0.5), ("categorical", 1.0)])
def test_uncertainty_weights_at_zero_and_their_stationary_points(likelihood, weight):
    weighting = build_weighting("uncertainty", {"a": likelihood})
    parameter = torch.nn.Parameter(torch.tensor(2.0))
    assert weighting.backward({"a": parameter * 1.0}, lambda total: total.backward()) == {"a": weight}
    # d/ds of factor * exp(-s) * L + s / 2 vanishes at s* = log(2 factor L): L = 2 -> ln 2 (gaussian), ln 4 (categorical)
    stationary = math.log(2 * weight * 2.0)
    weighting.end_step({"a": 2.0})
    weighting.log_variances[0].data.fill_(stationary)
    weighting.log_variances[0].grad = None
    weighting.backward({"a": torch.tensor(2.0, requires_grad=True)}, lambda total: total.backward())
    assert weighting.log_variances[0].grad.item() == pytest.approx(0.0, abs=1e-6)
    assert weight * math.exp(-stationary) == pytest.approx(0.25)


def test_uncertainty_counts_its_log_variance_once_per_step_and_leaves_absent_tasks_alone():
    weighting = build_weighting("uncertainty", {"a": "gaussian", "b": "gaussian"})
    # The loss 2 of task a arrives in two memory passes of 1: the same gradient as one pass of 2.
    weighting.backward({"a": torch.tensor(1.0), "b": torch.tensor(1.0)}, lambda total: total.backward())
    weighting.backward({"a": torch.tensor(1.0)}, lambda total: total.backward())
    assert weighting.log_variances[0].grad.item() == pytest.approx(-0.5 * 2.0 + 0.5)
    weighting.end_step({"a": 2.0, "b": 1.0})
    weighting.log_variances[1].grad = None
    weighting.backward({"a": torch.tensor(1.0)}, lambda total: total.backward())  # a step without task b
    assert weighting.log_variances[1].grad is None  # so AdamW's momentum cannot move b's s


def test_a_constant_weight_does_not_change_an_adam_step_of_a_head():
    # Adam is invariant to rescaling a parameter's gradient (with epsilon 0): a task weight acts only on shared parameters.
    steps = []
    for factor in (1.0, 10.0):
        head = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
        optimizer = torch.optim.Adam([head], lr=0.1, eps=0.0)
        (factor * (head**2).sum()).backward()
        optimizer.step()
        steps.append(head.detach().clone())
    torch.testing.assert_close(steps[0], steps[1])


# --- the methods' behaviour -------------------------------------------------------------------------------------


def test_dwa_keeps_weights_one_for_two_epochs_then_follows_the_loss_ratios():
    weighting = build_weighting("dwa", ["a", "b"], steps_per_epoch=2)
    for losses in ({"a": 1.0, "b": 0.5}, {"a": 1.0, "b": 0.5}, {"a": 0.8, "b": 0.5}):
        assert weighting.weights(["a", "b"]) == {"a": 1.0, "b": 1.0}
        weighting.end_step(losses)
        weighting.end_step(losses)
    assert weighting.weights(["a", "b"]) == pytest.approx({"a": 0.95, "b": 1.05}, abs=1e-4)


def test_dtp_weighs_a_task_by_its_smoothed_kpi():
    weighting = build_weighting("dtp", ["a", "b"], {"gamma": 1.0})
    parameter = torch.nn.Parameter(torch.tensor(1.0))
    losses = {"a": parameter * 1.0, "b": parameter * 2.0}
    first = weighting.backward(losses, lambda total: total.backward(), {"a": 0.5, "b": 0.9})
    assert first == pytest.approx({"a": 0.3466, "b": 0.010536}, abs=1e-4)
    again = weighting.backward({"a": parameter * 1.0}, lambda total: total.backward(), {"a": 0.1})  # another pass of the same step
    assert again["a"] == first["a"]
    weighting.end_step({"a": 1.0, "b": 2.0})
    second = weighting.backward({"a": parameter * 1.0}, lambda total: total.backward(), {"a": 0.7})  # (0.5 + 0.7) / 2
    assert second["a"] == pytest.approx(focal_weight(0.6, 1.0))


def _gradient_round(weighting, losses_by_task):
    """One step of a gradient method on a shared vector and a head per task: (shared gradient, head gradients, weights)."""
    shared = torch.nn.Parameter(torch.zeros(2))
    heads = {name: torch.nn.Parameter(torch.tensor(1.0)) for name in losses_by_task}
    weighting.attach([shared], [shared])
    losses = {name: heads[name] * (make(shared)) for name, make in losses_by_task.items()}
    weights = weighting.backward(losses, lambda total: total.backward())
    weights.update(weighting.combine())
    return shared.grad, {name: head.grad for name, head in heads.items()}, weights


def test_mgda_writes_the_min_norm_direction_as_the_encoders_gradient():
    # gradients with respect to the shared vector: (2, 0) and (0, 1) -> alpha (0.2, 0.8), d = (0.4, 0.8)
    gradient, heads, weights = _gradient_round(build_weighting("mgda", ["a", "b"]), {"a": lambda v: 2 * v[0], "b": lambda v: v[1]})
    torch.testing.assert_close(gradient, torch.tensor([0.4, 0.8]))
    assert weights == pytest.approx({"a": 0.2, "b": 0.8})
    assert heads["a"].item() == 0.0 and heads["b"].item() == 0.0  # each head its own task's (here 0 at v = 0) gradient


def test_pcgrad_writes_the_projected_sum():
    gradient, _, _ = _gradient_round(build_weighting("pcgrad", ["a", "b"]), {"a": lambda v: v[0], "b": lambda v: -v[0] + v[1]})
    torch.testing.assert_close(gradient, torch.tensor([0.5, 1.5]))


def test_gradnorm_moves_weights_towards_the_slower_task_and_keeps_their_sum():
    weighting = build_weighting("gradnorm", ["a", "b"], {"learning_rate": 0.1})
    shared = torch.nn.Parameter(torch.zeros(2))
    weighting.attach([shared], [shared])
    for losses in ({"a": 1.0, "b": 1.0}, {"a": 0.5, "b": 1.0}):  # the second step: task a trains twice as fast
        parts = {"a": 2 * shared[0] + losses["a"], "b": shared[1] + losses["b"]}  # gradient norms 2 and 1
        weighting.backward(parts, lambda total: total.backward())
        weighting.end_step(losses)
    weights = weighting.weights(["a", "b"])
    assert weights["a"] < 1 < weights["b"] and sum(weights.values()) == pytest.approx(2.0)


def test_famo_learns_from_the_fall_of_each_loss():
    weighting = build_weighting("famo", ["a", "b"])
    parameter = torch.nn.Parameter(torch.tensor(1.0))
    weights = weighting.backward({"a": parameter * 1.0, "b": parameter * 4.0}, lambda total: total.backward(), means={"a": 1.0, "b": 4.0})
    assert weights == pytest.approx({"a": 0.8, "b": 0.2})
    later_pass = weighting.backward({"a": parameter * 0.1}, lambda total: total.backward(), means={"a": 0.2})
    assert later_pass == pytest.approx({"a": 0.8})  # a step's passes share its weights
    weighting.end_step({"a": 1.0, "b": 4.0}, {"a": 0.5, "b": 4.0})
    torch.testing.assert_close(torch.softmax(weighting.logits, dim=0), torch.tensor([0.4875, 0.5125], dtype=torch.float64), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["uncertainty", "dwa", "dtp", "gradnorm", "famo", "pcgrad"])
def test_learned_state_is_in_the_state_dict(name):
    weighting = build_weighting(name, ["a", "b"])
    assert weighting.state_dict(), "nothing to checkpoint"


def test_a_setting_a_method_does_not_have_is_named():
    with pytest.raises(BamError, match=r"'temprature' is not a setting of dwa \(did you mean \"temperature\"\?\)"):
        build_weighting("dwa", ["a"], {"temprature": 1.0})


@pytest.mark.parametrize(
    "name, settings, message",
    [("dwa", {"temperature": 0.0}, "dwa's temperature = 0.0 must be greater than 0"), ("dtp", {"floor": 0.5, "ceiling": 0.4}, "floor \\(0.5\\) must be below its ceiling"),
     ("famo", {"learning_rate": math.inf}, "famo's learning_rate = inf must be greater than 0"), ("dtp", {"smoothing": 0.0}, "smoothing = 0.0 must be in \\(0, 1\\]")],
)  # fmt: skip
def test_settings_out_of_range_are_refused_in_one_line(name, settings, message):
    with pytest.raises(BamError, match=message):
        build_weighting(name, ["a"], settings)
