"""Task heads: the answer module each task puts on top of the shared encoder.

A head is chosen per task (`head = "..."` in the task spec, with its settings
in `head_options`), independently of the task type, which only fixes how many
outputs the head must give. A head receives the encoder's token states and the
batch's model inputs, so it can pool as it likes (the linear head: first token
or mean) or read every token (MT-DNN's answer module). A head kind is one
class behind `HeadKind`, registered in `HEADS`; the model saves each head's
kind and settings in `heads.json`, so a saved model rebuilds its heads
exactly.

Two kinds so far: `linear` (a pooled vector and one linear layer) and
`sequence-classification`, the encoder family's own classification head
(BERT's pooler and classifier, RoBERTa's and ELECTRA's dense and output
layers). Only the second maps one to one onto a stock transformers
`...ForSequenceClassification`, so only models trained with it can be
exported exactly (`bam.export`): such a head is a `StockHead`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from transformers.activations import get_activation

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

    def build(self, encoder_config, output_size: int, *, task_name: str, pooling: str, options: dict) -> nn.Module:
        """The head for an encoder with this Hugging Face config (its size, dropout and family)."""


@runtime_checkable
class StockHead(Protocol):
    """A head that a stock transformers `...ForSequenceClassification` of its encoder's family computes exactly."""

    def stock_weights(self, scale: float, shift: float) -> dict[str, torch.Tensor]:
        """The head's weights under the stock model's names, its last layer folded to answer `output * scale + shift`."""


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

    def build(self, encoder_config, output_size: int, *, task_name: str, pooling: str, options: dict) -> nn.Module:
        return LinearHead(encoder_config.hidden_size, output_size, pooling, getattr(encoder_config, "hidden_dropout_prob", 0.1))


@dataclass(frozen=True)
class FamilyLayout:
    """What a family's `...ForSequenceClassification` computes on the first token, and where it keeps the weights."""

    activation: str  # after the dense layer (transformers' name for it)
    dropout_first: bool  # dropout on the first token's state before the dense layer too (RoBERTa, ELECTRA; not BERT's pooler)
    dense: str  # the dense layer's name in the stock model
    output: str  # the output layer's name in the stock model


# Read off transformers' BertForSequenceClassification (its pooler is the dense layer), RobertaClassificationHead
# and ElectraClassificationHead, which uses gelu whatever the config's hidden_act says.
FAMILY_LAYOUTS = {
    "bert": FamilyLayout("tanh", dropout_first=False, dense="bert.pooler.dense", output="classifier"),
    "roberta": FamilyLayout("tanh", dropout_first=True, dense="classifier.dense", output="classifier.out_proj"),
    "xlm-roberta": FamilyLayout("tanh", dropout_first=True, dense="classifier.dense", output="classifier.out_proj"),
    "electra": FamilyLayout("gelu", dropout_first=True, dense="classifier.dense", output="classifier.out_proj"),
}


class SequenceClassificationHead(nn.Module):
    """The encoder family's own classification head, per task: first token, dense, activation, dropout, output layer.

    It always reads the first token, as the family's head does, whatever the
    recipe's `pooling` says. For BERT the dense layer is the pooler: each
    task gets its own, trained with it, and it becomes the exported model's
    `bert.pooler` (the encoder's shared pooler is never trained by bam and is
    not exported).
    """

    def __init__(self, hidden_size: int, output_size: int, layout: FamilyLayout, dropout: float):
        super().__init__()
        self.layout = layout
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = get_activation(layout.activation)
        self.output = nn.Linear(hidden_size, output_size)

    def forward(self, hidden: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        first = hidden[:, 0]
        if self.layout.dropout_first:
            first = self.dropout(first)
        return self.output(self.dropout(self.activation(self.dense(first))))

    def initialise(self, initializer_range: float) -> None:
        # As the family initialises its head: normal weights, zero biases.
        for layer in (self.dense, self.output):
            nn.init.normal_(layer.weight, std=initializer_range)
            nn.init.zeros_(layer.bias)

    def stock_weights(self, scale: float, shift: float) -> dict[str, torch.Tensor]:
        return {
            f"{self.layout.dense}.weight": self.dense.weight.detach().clone(),
            f"{self.layout.dense}.bias": self.dense.bias.detach().clone(),
            f"{self.layout.output}.weight": self.output.weight.detach() * scale,
            f"{self.layout.output}.bias": self.output.bias.detach() * scale + shift,
        }


class SequenceClassification:
    name = "sequence-classification"

    def check_options(self, task_name: str, options: dict) -> None:
        if options:
            raise BamError(f"task {task_name!r}: the sequence-classification head takes no `head_options` (got {', '.join(options)})")

    def build(self, encoder_config, output_size: int, *, task_name: str, pooling: str, options: dict) -> nn.Module:
        model_type = getattr(encoder_config, "model_type", "")
        if model_type not in FAMILY_LAYOUTS:
            raise BamError(
                f"task {task_name!r}: the sequence-classification head has no layout for model type {model_type!r} "
                f"(it has: {', '.join(FAMILY_LAYOUTS)}); use head = \"linear\""
            )
        # The family's head uses classifier_dropout where the config sets it, else the encoder's dropout.
        dropout = getattr(encoder_config, "classifier_dropout", None)
        if dropout is None:
            dropout = getattr(encoder_config, "hidden_dropout_prob", 0.1)
        return SequenceClassificationHead(encoder_config.hidden_size, output_size, FAMILY_LAYOUTS[model_type], dropout)


HEADS: dict[str, HeadKind] = {kind.name: kind for kind in (Linear(), SequenceClassification())}


def head_kind(name: str, task_name: str) -> HeadKind:
    """The registered head called `name`, or one line naming the task and the known heads."""
    if name not in HEADS:
        raise BamError(f"task {task_name!r}: unknown head {name!r}{did_you_mean(name, HEADS)}; known heads: {', '.join(HEADS)}")
    return HEADS[name]
