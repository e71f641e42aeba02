"""Task heads: the answer module each task puts on top of the shared encoder.

A head is chosen per task (`head = "..."` in the task spec, with its settings
in `head_options`), independently of the task type, which only fixes how many
outputs the head must give. A head receives the encoder's token states and the
batch's model inputs, so it can pool as it likes (the linear head: first token
or mean) or read every token (MT-DNN's answer module). A head kind is one
class behind `HeadKind`, registered in `HEADS`; the model saves each head's
kind and settings in `heads.json`, so a saved model rebuilds its heads
exactly.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from bam.config import did_you_mean
from bam.errors import BamError


class Head(Protocol):
    """A built head: an `nn.Module` mapping token states to the task's outputs."""

    def __call__(self, hidden: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def initialise(self, initializer_range: float) -> None:
        """Give the head its starting weights (called once every head of the model exists)."""


class HeadKind(Protocol):
    """How to check a head's settings and build it."""

    name: str

    def check_options(self, task_name: str, options: dict) -> None: ...

    def build(self, hidden_size: int, output_size: int, *, pooling: str, dropout: float, options: dict) -> nn.Module: ...


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per example: the first token's state, or the mean over real (unpadded) tokens."""
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return hidden[:, 0]


class LinearHead(nn.Module):
    """A pooled sentence vector, dropout, and one linear layer (BERT's classifier)."""

    def __init__(self, hidden_size: int, output_size: int, pooling: str, dropout: float):
        super().__init__()
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden_size, output_size)

    def forward(self, hidden: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.linear(self.dropout(pool(hidden, inputs["attention_mask"], self.pooling)))

    def initialise(self, initializer_range: float) -> None:
        nn.init.normal_(self.linear.weight, std=initializer_range)
        nn.init.zeros_(self.linear.bias)


class Linear:
    name = "linear"

    def check_options(self, task_name: str, options: dict) -> None:
        if options:
            raise BamError(f"task {task_name!r}: the linear head takes no `head_options` (got {', '.join(options)})")

    def build(self, hidden_size: int, output_size: int, *, pooling: str, dropout: float, options: dict) -> nn.Module:
        return LinearHead(hidden_size, output_size, pooling, dropout)


HEADS: dict[str, HeadKind] = {kind.name: kind for kind in (Linear(),)}


def head_kind(name: str, task_name: str) -> HeadKind:
    """The registered head called `name`, or one line naming the task and the known heads."""
    if name not in HEADS:
        raise BamError(f"task {task_name!r}: unknown head {name!r}{did_you_mean(name, HEADS)}; known heads: {', '.join(HEADS)}")
    return HEADS[name]
