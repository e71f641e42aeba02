"""Task types: everything that depends on what kind of answer a task has.

A task type is one class behind the `TaskType` protocol, registered in
`TASK_TYPES`. It owns the label format (parsing, checking, its dtype), which
specs and metrics make sense, the head's output size, the training targets
(gold and teacher), the loss, predictions, what the metrics receive, a
per-batch KPI for loss weighting, the unit that batches are made of, how
answers read for people (`bam predict`), how its answers look in a stock
transformers classifier (`bam export`), and how
several teachers' outputs average into one teacher's (`ensemble`). No other
module looks at a task's type name: a new type is a new class here plus one
line in `TASK_TYPES`.

Targets and losses receive a `Batch` (the gold labels and, when distilling,
the teacher's rows), so a type that needs more per example (a ranking type's
group ids) adds a field there instead of another argument everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from bam import metrics
from bam.config import TaskSpec, did_you_mean
from bam.errors import BamError

CORRELATIONS = frozenset({"pearson", "spearman"})


@dataclass(frozen=True)
class Batch:
    """What a training step knows about its examples besides the model inputs."""

    labels: torch.Tensor  # gold labels as `parse_label` made them (class index, or a target scaled to [0, 1])
    teacher_rows: torch.Tensor | None = None  # the cached teacher outputs of the same examples, when distilling


@dataclass(frozen=True)
class Answer:
    """What a model says about one example, for people and output files (`bam predict`, `bam.load`)."""

    label: str | None = None  # the predicted label's name (classification)
    probabilities: dict[str, float] | None = None  # every label's probability, in the task's label order
    value: float | None = None  # the predicted value on the task's original scale (regression)


@dataclass(frozen=True)
class StockOutputs:
    """How a task's answers appear in a stock transformers `...ForSequenceClassification` (`bam export`)."""

    labels: tuple[str, ...]  # id2label, one name per output
    problem_type: str  # transformers' `problem_type`, which picks the pipeline's function (softmax, none)
    scale: float  # the exported outputs are the head's raw outputs * scale + shift,
    shift: float  # so they are on the scale the task answers on


class TaskType(Protocol):
    """The behaviour of one kind of task."""

    name: str
    label_dtype: str  # the `datasets` dtype of the label column
    batch_unit: str  # what a batch is made of: "example" (a group of candidates, for ranking)
    discrete_labels: bool  # labels are classes: a held-out dev split is stratified by them, a hub's -1 means "no label"

    def check_spec(self, task_name: str, spec: TaskSpec) -> None:
        """Refuse a spec this type cannot train, naming the task and field."""

    def fitting_metrics(self, spec: TaskSpec) -> list[str]:
        """The metrics (of `bam.metrics.METRICS`) that make sense for this task, in registry order."""

    def parse_label(self, raw: str, spec: TaskSpec, where: str) -> int | float:
        """A label from a text file, checked; `where` names the file and line."""

    def hub_label(self, value, spec: TaskSpec, where: str) -> int | float:
        """A label as a hub dataset stores it, checked."""

    def output_size(self, spec: TaskSpec) -> int: ...

    def gold_targets(self, batch: Batch, spec: TaskSpec) -> torch.Tensor: ...

    def teacher_targets(self, batch: Batch) -> torch.Tensor:
        """Targets from the teacher's rows, in the same space as `gold_targets`, so the two blend."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The batch's mean loss (a tensor with a gradient)."""

    def predictions(self, outputs: torch.Tensor, spec: TaskSpec) -> torch.Tensor:
        """What the model answers: a class index, or a value on the task's original scale."""

    def metric_inputs(self, labels: torch.Tensor, outputs: torch.Tensor, spec: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
        """(gold, predicted), as the task's metrics take them."""

    def kpi(self, outputs: torch.Tensor, batch: Batch, spec: TaskSpec) -> float:
        """How well the batch went, in [0, 1] (higher is better), for loss weightings that need one."""

    def answers(self, outputs: torch.Tensor, spec: TaskSpec) -> list[Answer]:
        """One answer per row of head outputs, in the words of the task (label names, original scale)."""

    def stock_outputs(self, task_name: str, spec: TaskSpec) -> StockOutputs:
        """Labels, problem type and output scaling of the task's exported classifier."""

    def ensemble(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """The outputs to store for a teacher ensemble, from its members' stored outputs (the same rows in the same order).

        What is averaged is what the student learns from, so that `teacher_targets` of the
        result is the mean of the members' `teacher_targets`: probability distributions
        (classification), values (regression); a ranking type would average each group's
        candidate scores the same way, in the space its targets live in.
        """


class Classification:
    """Softmax over the label set; soft targets are probability distributions."""

    name = "classification"
    label_dtype = "int64"
    batch_unit = "example"
    discrete_labels = True

    def check_spec(self, task_name: str, spec: TaskSpec) -> None:
        if len(spec.labels) < 2:
            raise BamError(f"task {task_name!r}: a classification task needs at least two `labels`")
        _check_metrics(task_name, spec, self.fitting_metrics(spec), f"a classification task with {len(spec.labels)} labels")

    def fitting_metrics(self, spec: TaskSpec) -> list[str]:
        binary_only = {"f1"} if len(spec.labels) != 2 else set()  # binary F1 of the positive class only
        return [name for name in metrics.METRICS if name not in CORRELATIONS | binary_only]

    def parse_label(self, raw: str, spec: TaskSpec, where: str) -> int:
        if raw not in spec.labels:
            raise BamError(f"{where}: label {raw!r} is not one of {', '.join(spec.labels)}")
        return spec.labels.index(raw)

    def hub_label(self, value, spec: TaskSpec, where: str) -> int:
        if not isinstance(value, int) or not 0 <= value < len(spec.labels):
            raise BamError(f"{where}: label {value!r} is not an index into {', '.join(spec.labels)}")
        return value

    def output_size(self, spec: TaskSpec) -> int:
        return len(spec.labels)

    def gold_targets(self, batch: Batch, spec: TaskSpec) -> torch.Tensor:
        return F.one_hot(batch.labels.long(), len(spec.labels)).float()

    def teacher_targets(self, batch: Batch) -> torch.Tensor:
        return torch.softmax(batch.teacher_rows.float(), dim=-1)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, batch: Batch) -> torch.Tensor:
        # Cross-entropy against a distribution, which is what the blended target is.
        return -(targets * torch.log_softmax(outputs.float(), dim=-1)).sum(dim=-1).mean()

    def predictions(self, outputs: torch.Tensor, spec: TaskSpec) -> torch.Tensor:
        return outputs.argmax(dim=-1)

    def metric_inputs(self, labels: torch.Tensor, outputs: torch.Tensor, spec: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
        return labels.numpy(), self.predictions(outputs, spec).numpy()

    def kpi(self, outputs: torch.Tensor, batch: Batch, spec: TaskSpec) -> float:
        """The batch accuracy against the gold labels."""
        return (outputs.argmax(dim=-1) == batch.labels.to(outputs.device)).float().mean().item()

    def answers(self, outputs: torch.Tensor, spec: TaskSpec) -> list[Answer]:
        chosen = self.predictions(outputs, spec).tolist()  # the same argmax the metrics score
        probabilities = torch.softmax(outputs.double(), dim=-1).tolist()
        return [Answer(label=spec.labels[index], probabilities=dict(zip(spec.labels, row))) for index, row in zip(chosen, probabilities)]

    def stock_outputs(self, task_name: str, spec: TaskSpec) -> StockOutputs:
        return StockOutputs(spec.labels, "single_label_classification", scale=1.0, shift=0.0)

    def ensemble(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """The log of the mean of the members' softmax distributions: its softmax is that mean distribution.

        Averaging logits instead would give another distribution (a geometric mean, renormalised).
        Computed as logsumexp of the log-probabilities, in float64: the log of a mean of
        probabilities that underflowed to 0 in float32 would be -inf, which a store refuses.
        """
        log_probabilities = torch.stack([torch.log_softmax(member.double(), dim=-1) for member in outputs])
        return (torch.logsumexp(log_probabilities, dim=0) - math.log(len(outputs))).float()


class Regression:
    """One output trained with squared error on targets scaled to [0, 1]."""

    name = "regression"
    label_dtype = "float32"
    batch_unit = "example"
    discrete_labels = False

    def check_spec(self, task_name: str, spec: TaskSpec) -> None:
        if not -math.inf < spec.label_range[0] < spec.label_range[1] < math.inf:
            raise BamError(f"task {task_name!r}: `label_range` must be [low, high] with low < high, both finite")
        _check_metrics(task_name, spec, self.fitting_metrics(spec), "a regression task")

    def fitting_metrics(self, spec: TaskSpec) -> list[str]:
        return [name for name in metrics.METRICS if name in CORRELATIONS]

    def parse_label(self, raw: str, spec: TaskSpec, where: str) -> float:
        try:
            if "_" in raw or raw != raw.strip():  # float() would read "0_5" as 5 and ignore spaces
                raise ValueError
            value = float(raw)
        except ValueError:
            raise BamError(f"{where}: regression label {raw!r} is not a number") from None
        if not np.isfinite(value):
            raise BamError(f"{where}: regression label {raw!r} is not a finite number")
        low, high = spec.label_range
        if not low <= value <= high:  # the range scales targets to [0, 1]; a label outside it means the declared range is wrong
            raise BamError(f"{where}: regression label {raw!r} is outside the task's label_range [{low:g}, {high:g}] (set `label_range` in the task)")
        return (value - low) / (high - low)

    def hub_label(self, value, spec: TaskSpec, where: str) -> float:
        return self.parse_label(str(value), spec, where)

    def output_size(self, spec: TaskSpec) -> int:
        return 1

    def gold_targets(self, batch: Batch, spec: TaskSpec) -> torch.Tensor:
        return batch.labels.float()

    def teacher_targets(self, batch: Batch) -> torch.Tensor:
        return batch.teacher_rows.float().squeeze(-1)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.mse_loss(outputs.float().squeeze(-1), targets)

    def predictions(self, outputs: torch.Tensor, spec: TaskSpec) -> torch.Tensor:
        low, high = spec.label_range
        return outputs.float().squeeze(-1) * (high - low) + low

    def metric_inputs(self, labels: torch.Tensor, outputs: torch.Tensor, spec: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
        # Both on the task's original scale, as the official scorer sees them.
        return self.predictions(labels.unsqueeze(-1), spec).numpy(), self.predictions(outputs, spec).numpy()

    def kpi(self, outputs: torch.Tensor, batch: Batch, spec: TaskSpec) -> float:
        """1 minus the batch's mean absolute error on the [0, 1] target scale (a correlation is unstable on one batch)."""
        error = (outputs.float().squeeze(-1) - batch.labels.to(outputs.device).float()).abs().mean().item()
        return max(0.0, 1.0 - error)

    def answers(self, outputs: torch.Tensor, spec: TaskSpec) -> list[Answer]:
        return [Answer(value=value) for value in self.predictions(outputs, spec).double().tolist()]

    def stock_outputs(self, task_name: str, spec: TaskSpec) -> StockOutputs:
        # The [0, 1] scaling is folded into the exported last layer: it answers on the task's original scale, as `predictions`.
        low, high = spec.label_range
        return StockOutputs((task_name,), "regression", scale=high - low, shift=low)

    def ensemble(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """The mean of the members' values (on the [0, 1] target scale, which is what they store)."""
        return torch.stack([member.double() for member in outputs]).mean(dim=0).float()


def _check_metrics(task_name: str, spec: TaskSpec, fitting: list[str], described: str) -> None:
    for metric in spec.metrics:
        if metric not in fitting:
            raise BamError(f"task {task_name!r}: metric {metric!r} does not fit {described} (these do: {', '.join(fitting)})")


TASK_TYPES: dict[str, TaskType] = {task_type.name: task_type for task_type in (Classification(), Regression())}


def task_type(name: str, task_name: str) -> TaskType:
    """The registered type called `name`, or one line naming the task and the known types."""
    if name not in TASK_TYPES:
        raise BamError(f"task {task_name!r}: unknown type {name!r}{did_you_mean(name, TASK_TYPES)}; known types: {', '.join(TASK_TYPES)}")
    return TASK_TYPES[name]
