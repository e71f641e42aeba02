"""Loss weighting: how a step's per-task losses become the one gradient the optimizer follows.

A training step hands the weighting a dict of per-task losses (tensors with
their graphs) and a `backward` function; the weighting combines them and runs
the backward pass, and returns the weight it gave each task, which the
training log records. Methods that need gradients rather than losses
(GradNorm, MGDA) override `backward` itself. A weighting is an `nn.Module`:
learnable state (uncertainty weighting's log-variances) is a parameter the
optimizer trains in its own group, and its parameters and buffers (keep all
state there, not in plain attributes) are checkpointed and restored with the
model. With several processes each process's weighting sees its own share of
the batch; a learnable weighting would have to average its gradients itself.

Only `equal` exists so far: every task's loss counts once, the sum is
backpropagated (the BAM and MT-DNN papers' choice, and the numbers bam has
always produced).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence

import torch
from torch import nn

from bam.config import did_you_mean
from bam.errors import BamError

Backward = Callable[[torch.Tensor], None]


class LossWeighting(nn.Module):
    """The interface: `backward` once per group of losses, `end_step` once per optimizer step."""

    name = ""

    def __init__(self, task_names: Sequence[str]):
        super().__init__()
        self.task_names = list(task_names)  # the tasks of the run, for weightings that keep per-task state

    def weights(self, task_names: Sequence[str]) -> dict[str, float | torch.Tensor]:
        """Each task's weight for this step (a tensor where it is learnable)."""
        raise NotImplementedError

    def backward(self, losses: dict[str, torch.Tensor], backward: Backward) -> dict[str, float]:
        """Backpropagate the weighted sum of `losses`; returns the weight each task got."""
        weights = self.weights(list(losses))
        backward(functools.reduce(operator.add, (weights[name] * loss for name, loss in losses.items())))
        return {name: float(weights[name]) for name in losses}

    def end_step(self, losses: dict[str, float]) -> None:
        """Called after each optimizer step with its per-task losses (detached), for weightings that track them."""


class Equal(LossWeighting):
    """Every task's loss with weight 1."""

    name = "equal"

    def weights(self, task_names: Sequence[str]) -> dict[str, float]:
        return dict.fromkeys(task_names, 1.0)  # multiplying by one is exact: the numbers of a plain sum


WEIGHTINGS: dict[str, type[LossWeighting]] = {weighting.name: weighting for weighting in (Equal,)}


def build_weighting(name: str, task_names: Sequence[str]) -> LossWeighting:
    if name not in WEIGHTINGS:
        raise BamError(f"loss_weighting: unknown method {name!r}{did_you_mean(name, WEIGHTINGS)}; known: {', '.join(WEIGHTINGS)}")
    return WEIGHTINGS[name](task_names)
