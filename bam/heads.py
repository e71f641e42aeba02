"""Task heads: the answer module each task puts on top of the shared encoder.

A head is chosen per task (`head = "..."` in the task spec, with its settings
in `head_options`), independently of the task type, which only fixes how many
outputs the head must give. A head receives the encoder's token states and the
batch's model inputs, so it can pool as it likes (the linear head: first token
or mean) or read every token (MT-DNN's answer module). A head kind is one
class behind `HeadKind`, registered in `HEADS`; the model saves each head's
kind and settings in `heads.json`, so a saved model rebuilds its heads
exactly.

Three kinds: `linear` (a pooled vector and one linear layer),
`sequence-classification`, the encoder family's own classification head
(BERT's pooler and classifier, RoBERTa's and ELECTRA's dense and output
layers), and `san`, MT-DNN's stochastic answer network for sentence pairs.
Only the second maps one to one onto a stock transformers
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
    needs_pairs: bool  # the head reads two segments (premise and hypothesis): a task with one text is refused
    needs_classes: bool  # the head answers with a distribution over classes: a task whose labels are not classes is refused

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
    needs_pairs = False
    needs_classes = False

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
    needs_pairs = False
    needs_classes = False

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


def attend(memory: torch.Tensor, scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """The softmax(scores)-weighted sum of the memory rows, over the allowed positions only."""
    weights = torch.softmax(scores.float().masked_fill(~allowed, float("-inf")), dim=-1)
    return torch.einsum("bt,bth->bh", weights.to(memory.dtype), memory)


def average_steps(step_log_probabilities: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """log of the mean of the kept steps' probability vectors: (batch, steps, classes), (batch, steps) -> (batch, classes).

    MT-DNN's stochastic prediction dropout: the reference takes log((1/K) sum_k mask_k P^k) with
    mask_k in {0, 1/(1-p)} and lets cross-entropy's log-softmax renormalise it, which is exactly
    the mean of the kept steps' distributions; here it is computed normalised, in log space.
    """
    masked = step_log_probabilities.masked_fill(~kept.unsqueeze(-1), float("-inf"))
    return torch.logsumexp(masked, dim=1) - kept.sum(dim=1, keepdim=True).log()


def kept_steps(batch: int, steps: int, drop: float, device: torch.device) -> torch.Tensor:
    """Which steps each example keeps in training: each with probability 1 - drop, and one chosen at random always."""
    kept = torch.rand(batch, steps, device=device) >= drop
    kept[torch.arange(batch, device=device), torch.randint(steps, (batch,), device=device)] = True
    return kept


class SANHead(nn.Module):
    """MT-DNN's stochastic answer network (SAN) for sentence pairs: K steps of reasoning over the two token memories.

    The premise memory is the first segment's tokens ([CLS] premise [SEP]), the
    hypothesis memory the second's (hypothesis [SEP]); segments come from the
    separator tokens (`segment_ids`, made by `bam.training.collate`), so tokenizers
    without token_type_ids work too. The initial state s^0 is a self-attention
    summary of the hypothesis; step k reads the premise with a bilinear attention
    driven by s^k, x^k = sum_j softmax_j(M^p_j . (W s^k + b)) M^p_j, and is scored as
    P^k = softmax(W3 [x^k; s^k; |x^k - s^k|; x^k * s^k]); then s^{k+1} = GRU(x^k, s^k).

    The order is the reference code's (MT-DNN's module/san.py, 2019-2022), not the
    paper's equations: step k is scored with the state that drove its attention,
    before the GRU update (the paper scores GRU(s^{k-1}, x^k)). The answer is the mean
    of the steps' distributions (or the last step's, with average_steps = false); in
    training each step is dropped with probability `prediction_dropout`, one kept per
    example. The head returns log-probabilities, which the classification type's
    softmax, loss and teacher targets take as logits unchanged. Dropout (`dropout`)
    is element-wise, drawn once per batch on the token memory (which both attentions
    read) and at each step on the GRU's state and the classifier's input; the
    reference's wrapper instead shares one mask per (example, feature) across
    positions and reads x^k from the undropped memory. Classification only.
    """

    def __init__(self, hidden_size: int, output_size: int, *, steps: int, prediction_dropout: float, dropout: float, average: bool):
        super().__init__()
        self.steps, self.prediction_dropout, self.average = steps, prediction_dropout, average
        self.dropout = nn.Dropout(dropout)
        self.hypothesis_attention = nn.Linear(hidden_size, 1)  # w1: the initial state's self-attention
        self.premise_attention = nn.Linear(hidden_size, hidden_size)  # W2: the state's bilinear attention over the premise
        self.gru = nn.GRUCell(hidden_size, hidden_size)
        self.classifier = nn.Linear(4 * hidden_size, output_size)  # W3

    def forward(self, hidden: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        stacked = self.step_log_probabilities(hidden, inputs)
        batch = stacked.shape[0]
        if not self.average:
            kept = torch.zeros(batch, self.steps, dtype=torch.bool, device=stacked.device)
            kept[:, -1] = True
        elif self.training and self.prediction_dropout > 0:
            kept = kept_steps(batch, self.steps, self.prediction_dropout, stacked.device)
        else:
            kept = torch.ones(batch, self.steps, dtype=torch.bool, device=stacked.device)
        return average_steps(stacked, kept)

    def step_log_probabilities(self, hidden: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every step's log-probabilities, (batch, steps, classes)."""
        real = inputs["attention_mask"].bool()
        premise, hypothesis = real & (inputs["segment_ids"] == 0), real & (inputs["segment_ids"] == 1)
        if not bool(hypothesis.any(dim=1).all()):
            raise BamError("the san head needs sentence pairs: an example has no second segment (a single sentence, or a tokenizer without a separator token)")
        memory = self.dropout(hidden)
        state = attend(memory, self.hypothesis_attention(memory).squeeze(-1), hypothesis)
        step_log_probabilities = []
        for _ in range(self.steps):
            scores = torch.einsum("bth,bh->bt", memory, self.premise_attention(state))
            read = attend(memory, scores, premise)
            features = torch.cat([read, state, (read - state).abs(), read * state], dim=-1)
            step_log_probabilities.append(torch.log_softmax(self.classifier(self.dropout(features)).float(), dim=-1))
            state = self.gru(read, self.dropout(state))  # the last update is unused, as in the reference
        return torch.stack(step_log_probabilities, dim=1)

    def initialise(self, initializer_range: float) -> None:
        # Linear layers as the encoder family initialises its heads; the GRU keeps PyTorch's own initialisation.
        for layer in (self.hypothesis_attention, self.premise_attention, self.classifier):
            nn.init.normal_(layer.weight, std=initializer_range)
            nn.init.zeros_(layer.bias)


SAN_DEFAULTS = {"steps": 5, "prediction_dropout": 0.1, "dropout": 0.1, "average_steps": True}


class San:
    """`head = "san"`: MT-DNN's answer module for pair classification; head_options steps (K), prediction_dropout, dropout, average_steps."""

    name = "san"
    needs_pairs = True
    needs_classes = True  # its steps' softmax over one output would be a constant 1: nothing to learn

    def check_options(self, task_name: str, options: dict) -> None:
        for key, value in options.items():
            if key not in SAN_DEFAULTS:
                raise BamError(f"task {task_name!r}: unknown san head option {key!r}{did_you_mean(key, SAN_DEFAULTS)} (it takes {', '.join(SAN_DEFAULTS)})")
            if type(value) is not type(SAN_DEFAULTS[key]) and not (isinstance(SAN_DEFAULTS[key], float) and type(value) is int):
                raise BamError(f"task {task_name!r}: san head option {key} = {value!r} must be {type(SAN_DEFAULTS[key]).__name__}")
        settings = {**SAN_DEFAULTS, **options}
        if settings["steps"] < 1:
            raise BamError(f"task {task_name!r}: san head option steps = {settings['steps']} must be at least 1")
        for key in ("prediction_dropout", "dropout"):
            if not 0 <= settings[key] < 1:
                raise BamError(f"task {task_name!r}: san head option {key} = {settings[key]} must be in [0, 1)")

    def build(self, encoder_config, output_size: int, *, task_name: str, pooling: str, options: dict) -> nn.Module:
        settings = {**SAN_DEFAULTS, **options}
        return SANHead(
            encoder_config.hidden_size, output_size, steps=settings["steps"], prediction_dropout=float(settings["prediction_dropout"]),
            dropout=float(settings["dropout"]), average=settings["average_steps"],
        )  # fmt: skip


HEADS: dict[str, HeadKind] = {kind.name: kind for kind in (Linear(), SequenceClassification(), San())}


def head_kind(name: str, task_name: str) -> HeadKind:
    """The registered head called `name`, or one line naming the task and the known heads."""
    if name not in HEADS:
        raise BamError(f"task {task_name!r}: unknown head {name!r}{did_you_mean(name, HEADS)}; known heads: {', '.join(HEADS)}")
    return HEADS[name]
