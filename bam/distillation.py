"""Teacher annealing: the gold-label weight lambda over training, and the blended target.

The student of BAM trains on `lambda * gold + (1 - lambda) * teacher`. With
`linear` annealing lambda rises from 0 (all teacher) at the first step
towards 1 (all gold) at the last, which is what lets the student overtake its teachers.
One blend serves every task type: for classification both sides are
distributions over labels, for regression both are scaled values.
"""

from __future__ import annotations

import typing

import torch

from bam.config import Anneal

ANNEALING = typing.get_args(Anneal)


def gold_weight(anneal: str, step: int, total_steps: int, teacher_weight: float = 0.5) -> float:
    """lambda, the weight of the gold label at 0-based `step` of `total_steps`.

    linear: step / total_steps (the paper); none: 1 (gold only, plain multi-task
    training); constant: 1 - teacher_weight throughout.
    """
    if anneal == "linear":
        return step / total_steps
    if anneal == "none":
        return 1.0
    if anneal == "constant":
        return 1.0 - teacher_weight
    raise ValueError(f"unknown annealing {anneal!r}; expected one of {ANNEALING}")


def blend(gold: torch.Tensor, teacher: torch.Tensor, gold_weight: float) -> torch.Tensor:
    """`gold_weight * gold + (1 - gold_weight) * teacher` (lambda is the gold weight), for one-hot/softmax pairs and values alike."""
    return gold_weight * gold + (1.0 - gold_weight) * teacher
