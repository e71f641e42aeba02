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

import logging
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from bam import metrics
from bam.config import TaskSpec, did_you_mean
from bam.errors import BamError

logger = logging.getLogger(__name__)

CORRELATIONS = frozenset({"pearson", "spearman"})
MAX_RANKING_SCALE = 1000.0  # MT-DNN's gamma is 1; see RankingType.check_spec
RANKING_METRICS = frozenset({"accuracy", "mrr"})  # of a group's ranking; the others score single answers


@dataclass(frozen=True)
class Batch:
    """What a training step knows about its examples besides the model inputs."""

    labels: torch.Tensor  # gold labels as `parse_label` made them (class index, or a target scaled to [0, 1])
    teacher_rows: torch.Tensor | None = None  # the cached teacher outputs of the same examples, when distilling
    groups: torch.Tensor | None = None  # each row's group number (a ranking task's candidates of one question share one)


@dataclass(frozen=True)
class Answer:
    """What a model says about one example, for people and output files (`bam predict`, `bam.load`)."""

    label: str | None = None  # the predicted label's name (classification)
    probabilities: dict[str, float] | None = None  # every label's probability, in the task's label order
    value: float | None = None  # the predicted value on the task's original scale (regression)
    score: float | None = None  # the candidate's score (ranking): higher ranks first within its group
    rank: int | None = None  # the candidate's place in its group by score, 1 for the top one (ranking)


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
    batch_unit: str  # what a batch is made of: "example", or "group" (a ranking task's candidates, never split)
    discrete_labels: bool  # labels are classes: a held-out dev split is stratified by them, a hub's -1 means "no label"
    likelihood: str  # "categorical" or "gaussian": which form of uncertainty weighting fits its loss (bam.weighting)
    target_settings: tuple[str, ...]  # the spec fields that turn stored outputs into teacher targets: a store records them, its students must share them

    def check_spec(self, task_name: str, spec: TaskSpec) -> None:
        """Refuse a spec this type cannot train, naming the task and field."""

    def fitting_metrics(self, spec: TaskSpec) -> list[str]:
        """The metrics (of `bam.metrics.METRICS`) that make sense for this task, in registry order."""

    def parse_label(self, raw: str, spec: TaskSpec, where: str) -> int | float:
        """A label from a text file, checked; `where` names the file and line."""

    def hub_label(self, value, spec: TaskSpec, where: str) -> int | float:
        """A label as a hub dataset stores it, checked."""

    def check_groups(self, labels: np.ndarray, groups: np.ndarray, wheres: list[str], spec: TaskSpec, path) -> np.ndarray:
        """The rows to keep of a split read with a `group_column` (all, or those of valid groups), or one line naming a bad group."""

    def output_size(self, spec: TaskSpec) -> int: ...

    def gold_targets(self, batch: Batch, spec: TaskSpec) -> torch.Tensor: ...

    def teacher_targets(self, batch: Batch, spec: TaskSpec) -> torch.Tensor:
        """Targets from the teacher's rows, in the same space as `gold_targets`, so the two blend."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, batch: Batch, spec: TaskSpec) -> torch.Tensor:
        """The batch's mean loss (a tensor with a gradient)."""

    def predictions(self, outputs: torch.Tensor, spec: TaskSpec) -> torch.Tensor:
        """What the model answers: a class index, or a value on the task's original scale."""

    def metric_inputs(self, batch: Batch, outputs: torch.Tensor, spec: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
        """(gold, predicted), as the task's metrics take them, from the gold labels (and groups) of `batch`."""

    def kpi(self, outputs: torch.Tensor, batch: Batch, spec: TaskSpec) -> float:
        """How well the batch went, in [0, 1] (higher is better), for loss weightings that need one."""

    def answers(self, outputs: torch.Tensor, spec: TaskSpec, groups: torch.Tensor | None = None) -> list[Answer]:
        """One answer per row of head outputs, in the words of the task (label names, original scale, rank in the row's group)."""

    def stock_outputs(self, task_name: str, spec: TaskSpec) -> StockOutputs:
        """Labels, problem type and output scaling of the task's exported classifier."""

    def ensemble(self, outputs: list[torch.Tensor], spec: TaskSpec, groups: torch.Tensor | None = None) -> torch.Tensor:
        """The outputs to store for a teacher ensemble, from its members' stored outputs (the same rows in the same order).

        What is averaged is what the student learns from, so that `teacher_targets` of the
        result is the mean of the members' `teacher_targets`: probability distributions
        (classification), values (regression), each group's distribution over its candidates (ranking).
        """


class Classification:
    """Softmax over the label set; soft targets are probability distributions."""

    name = "classification"
    label_dtype = "int64"
    batch_unit = "example"
    target_settings = ()
    discrete_labels = True
    likelihood = "categorical"

    def check_spec(self, task_name: str, spec: TaskSpec) -> None:
        if len(spec.labels) < 2:
            raise BamError(f"task {task_name!r}: a classification task needs at least two `labels`")
        _check_metrics(task_name, spec, self.fitting_metrics(spec), f"a classification task with {len(spec.labels)} labels")

    def fitting_metrics(self, spec: TaskSpec) -> list[str]:
        binary_only = {"f1"} if len(spec.labels) != 2 else set()  # binary F1 of the positive class only
        return [name for name in metrics.METRICS if name not in CORRELATIONS | binary_only | {"mrr"}]

    def parse_label(self, raw: str, spec: TaskSpec, where: str) -> int:
        return _label_index(raw, spec, where)

    def hub_label(self, value, spec: TaskSpec, where: str) -> int:
        if not isinstance(value, int) or not 0 <= value < len(spec.labels):
            raise BamError(f"{where}: label {value!r} is not an index into {', '.join(spec.labels)}")
        return value

    def check_groups(self, labels: np.ndarray, groups: np.ndarray, wheres: list[str], spec: TaskSpec, path) -> np.ndarray:
        raise BamError(f"{path}: a {self.name} task has no groups (`local.group_column` is for ranking tasks)")

    def output_size(self, spec: TaskSpec) -> int:
        return len(spec.labels)

    def gold_targets(self, batch: Batch, spec: TaskSpec) -> torch.Tensor:
        return F.one_hot(batch.labels.long(), len(spec.labels)).float()

    def teacher_targets(self, batch: Batch, spec: TaskSpec) -> torch.Tensor:
        return torch.softmax(batch.teacher_rows.float(), dim=-1)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, batch: Batch, spec: TaskSpec) -> torch.Tensor:
        # Cross-entropy against a distribution, which is what the blended target is.
        return -(targets * torch.log_softmax(outputs.float(), dim=-1)).sum(dim=-1).mean()

    def predictions(self, outputs: torch.Tensor, spec: TaskSpec) -> torch.Tensor:
        return outputs.argmax(dim=-1)

    def metric_inputs(self, batch: Batch, outputs: torch.Tensor, spec: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
        return batch.labels.numpy(), self.predictions(outputs, spec).numpy()

    def kpi(self, outputs: torch.Tensor, batch: Batch, spec: TaskSpec) -> float:
        """The batch accuracy against the gold labels."""
        return (outputs.argmax(dim=-1) == batch.labels.to(outputs.device)).float().mean().item()

    def answers(self, outputs: torch.Tensor, spec: TaskSpec, groups: torch.Tensor | None = None) -> list[Answer]:
        chosen = self.predictions(outputs, spec).tolist()  # the same argmax the metrics score
        probabilities = torch.softmax(outputs.double(), dim=-1).tolist()
        return [Answer(label=spec.labels[index], probabilities=dict(zip(spec.labels, row))) for index, row in zip(chosen, probabilities)]

    def stock_outputs(self, task_name: str, spec: TaskSpec) -> StockOutputs:
        return StockOutputs(spec.labels, "single_label_classification", scale=1.0, shift=0.0)

    def ensemble(self, outputs: list[torch.Tensor], spec: TaskSpec, groups: torch.Tensor | None = None) -> torch.Tensor:
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
    target_settings = ()
    discrete_labels = False
    likelihood = "gaussian"

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

    def check_groups(self, labels: np.ndarray, groups: np.ndarray, wheres: list[str], spec: TaskSpec, path) -> np.ndarray:
        raise BamError(f"{path}: a {self.name} task has no groups (`local.group_column` is for ranking tasks)")

    def output_size(self, spec: TaskSpec) -> int:
        return 1

    def gold_targets(self, batch: Batch, spec: TaskSpec) -> torch.Tensor:
        return batch.labels.float()

    def teacher_targets(self, batch: Batch, spec: TaskSpec) -> torch.Tensor:
        return batch.teacher_rows.float().squeeze(-1)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, batch: Batch, spec: TaskSpec) -> torch.Tensor:
        return F.mse_loss(outputs.float().squeeze(-1), targets)

    def predictions(self, outputs: torch.Tensor, spec: TaskSpec) -> torch.Tensor:
        low, high = spec.label_range
        return outputs.float().squeeze(-1) * (high - low) + low

    def metric_inputs(self, batch: Batch, outputs: torch.Tensor, spec: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
        # Both on the task's original scale, as the official scorer sees them.
        return self.predictions(batch.labels.unsqueeze(-1), spec).numpy(), self.predictions(outputs, spec).numpy()

    def kpi(self, outputs: torch.Tensor, batch: Batch, spec: TaskSpec) -> float:
        """1 minus the batch's mean absolute error on the [0, 1] target scale (a correlation is unstable on one batch)."""
        error = (outputs.float().squeeze(-1) - batch.labels.to(outputs.device).float()).abs().mean().item()
        return max(0.0, 1.0 - error)

    def answers(self, outputs: torch.Tensor, spec: TaskSpec, groups: torch.Tensor | None = None) -> list[Answer]:
        return [Answer(value=value) for value in self.predictions(outputs, spec).double().tolist()]

    def stock_outputs(self, task_name: str, spec: TaskSpec) -> StockOutputs:
        # The [0, 1] scaling is folded into the exported last layer: it answers on the task's original scale, as `predictions`.
        low, high = spec.label_range
        return StockOutputs((task_name,), "regression", scale=high - low, shift=low)

    def ensemble(self, outputs: list[torch.Tensor], spec: TaskSpec, groups: torch.Tensor | None = None) -> torch.Tensor:
        """The mean of the members' values (on the [0, 1] target scale, which is what they store)."""
        return torch.stack([member.double() for member in outputs]).mean(dim=0).float()


class Ranking:
    """MT-DNN's pairwise ranking: one score per candidate, a softmax over each group's candidates.

    A group (a question with its candidate answers, rows sharing a `group_column`
    value) holds exactly one positive candidate, the task's second label. The loss
    is the cross-entropy of P(candidate | group) = softmax over the group of
    `ranking_scale` * score (MT-DNN's gamma, 1 there), averaged over groups; the
    teacher's target is its own softmax over the group, so BAM's blend of gold and
    teacher is a blend of two distributions over the group's candidates. Batches
    hold whole groups (`batch_unit`). Metrics: `accuracy` is the share of groups whose
    top-scored candidate is the positive, `mrr` the mean reciprocal rank of the positive.
    """

    name = "ranking"
    label_dtype = "int64"
    batch_unit = "group"
    target_settings = ("ranking_scale",)
    discrete_labels = False  # the head gives one score per candidate, not a distribution over labels
    likelihood = "categorical"  # a softmax over each group's candidates

    def check_spec(self, task_name: str, spec: TaskSpec) -> None:
        if len(spec.labels) != 2:
            raise BamError(f"task {task_name!r}: a ranking task has two `labels`, the second naming the positive candidate (e.g. [\"not_entailment\", \"entailment\"])")
        if spec.local.group_column == "":
            raise BamError(f"task {task_name!r}: a ranking task needs `local.group_column`, the column whose equal values make one group of candidates")
        # Scores of a few units times a scale beyond 1000 overflow float32 logits to inf (NaN losses from step 1),
        # and the group softmax is already an argmax long before that.
        if not 0 < spec.ranking_scale <= MAX_RANKING_SCALE:
            raise BamError(f"task {task_name!r}: `ranking_scale` must be a number above 0 and at most {MAX_RANKING_SCALE:g}, got {spec.ranking_scale!r}")
        _check_metrics(task_name, spec, self.fitting_metrics(spec), "a ranking task")

    def fitting_metrics(self, spec: TaskSpec) -> list[str]:
        return [name for name in metrics.METRICS if name in RANKING_METRICS]

    def parse_label(self, raw: str, spec: TaskSpec, where: str) -> int:
        return _label_index(raw, spec, where)  # 1 for the positive candidate

    def hub_label(self, value, spec: TaskSpec, where: str) -> int:
        raise BamError(f"{where}: a ranking task is read from local files, whose `local.group_column` gives its groups")

    def check_groups(self, labels: np.ndarray, groups: np.ndarray, wheres: list[str], spec: TaskSpec, path) -> np.ndarray:
        """Every group must hold exactly one positive: refused with one line, or (invalid_groups = "drop") left out and counted."""
        positives = np.bincount(groups, weights=labels == 1, minlength=groups.max() + 1)
        invalid = np.flatnonzero(positives != 1)
        if len(invalid) == 0:
            return self._counting_single_candidates(np.arange(len(labels)), groups, path)
        if spec.local.invalid_groups == "refuse":
            first_row = int(np.flatnonzero(groups == invalid[0])[0])
            raise BamError(
                f"{wheres[first_row]}: the group starting here has {int(positives[invalid[0]])} positive candidates ({spec.labels[1]!r}); "
                f"a ranking group needs exactly one ({len(invalid)} group(s) of {len(positives)} do not; local.invalid_groups = \"drop\" leaves them out)"
            )
        kept = np.flatnonzero(~np.isin(groups, invalid))
        if len(kept) == 0:
            raise BamError(f"{path}: no group has exactly one positive candidate ({spec.labels[1]!r})")
        logger.info("%s: left out %d of %d group(s) (%d rows) without exactly one positive candidate", path, len(invalid), len(positives), len(labels) - len(kept))
        return self._counting_single_candidates(kept, groups, path)

    @staticmethod
    def _counting_single_candidates(kept: np.ndarray, groups: np.ndarray, path) -> np.ndarray:
        """`kept`, after saying how many of its groups have one candidate: ranked first whatever the model, they lift accuracy and MRR."""
        sizes = np.bincount(groups[kept])
        present = sizes[sizes > 0]
        if (single := int((present == 1).sum())) > 0:
            logger.info("%s: %d of %d group(s) have a single candidate, which is always ranked first (right by accuracy and MRR)", path, single, len(present))
        return kept

    def output_size(self, spec: TaskSpec) -> int:
        return 1

    def gold_targets(self, batch: Batch, spec: TaskSpec) -> torch.Tensor:
        return (batch.labels == 1).float()  # one group's candidates: 1 for its positive, 0 for the others

    def teacher_targets(self, batch: Batch, spec: TaskSpec) -> torch.Tensor:
        return group_log_softmax(spec.ranking_scale * batch.teacher_rows.float().squeeze(-1), batch.groups).exp()

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, batch: Batch, spec: TaskSpec) -> torch.Tensor:
        log_probabilities = group_log_softmax(spec.ranking_scale * outputs.float().squeeze(-1), batch.groups.to(outputs.device))
        return -(targets * log_probabilities).sum() / len(torch.unique(batch.groups))

    def predictions(self, outputs: torch.Tensor, spec: TaskSpec) -> torch.Tensor:
        return outputs.float().squeeze(-1)  # the score; which candidate is chosen depends on its group

    def metric_inputs(self, batch: Batch, outputs: torch.Tensor, spec: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
        """(0 per group, the 0-based rank of the group's positive): `accuracy` is then the share of groups ranked right."""
        ranks = positive_ranks(self.predictions(outputs, spec), batch.labels, batch.groups)
        return np.zeros(len(ranks), dtype=np.int64), ranks

    def kpi(self, outputs: torch.Tensor, batch: Batch, spec: TaskSpec) -> float:
        """The share of the batch's groups whose positive scored highest."""
        return float(np.mean(positive_ranks(self.predictions(outputs.detach().cpu(), spec), batch.labels.cpu(), batch.groups.cpu()) == 0))

    def answers(self, outputs: torch.Tensor, spec: TaskSpec, groups: torch.Tensor | None = None) -> list[Answer]:
        if groups is None:
            raise BamError("a ranking task's answers need each row's group (give its group column)")
        scores = self.predictions(outputs, spec).double()
        ranks = candidate_ranks(scores, groups)
        return [Answer(score=score, rank=rank) for score, rank in zip(scores.tolist(), ranks.tolist())]

    def stock_outputs(self, task_name: str, spec: TaskSpec) -> StockOutputs:
        # One score per candidate, as the head gives it; ranking a group's candidates is left to the caller.
        return StockOutputs((task_name,), "regression", scale=1.0, shift=0.0)

    def ensemble(self, outputs: list[torch.Tensor], spec: TaskSpec, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Scores whose softmax over each group is the mean of the members' distributions over that group.

        log(mean probability) / ranking_scale, computed in float64 with logsumexp as for classification.
        """
        log_probabilities = torch.stack([group_log_softmax(spec.ranking_scale * member.double().squeeze(-1), groups) for member in outputs])
        return ((torch.logsumexp(log_probabilities, dim=0) - math.log(len(outputs))) / spec.ranking_scale).float().unsqueeze(-1)


def group_log_softmax(scores: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Each score's log-probability under a softmax over the scores of its group (the rows sharing its group number)."""
    _, inverse = torch.unique(groups.to(scores.device), return_inverse=True)
    count = int(inverse.max()) + 1
    # Shifted by each group's maximum (a constant for the softmax, no gradient needed) so exp cannot overflow.
    maxima = torch.full((count,), -math.inf, dtype=scores.dtype, device=scores.device).scatter_reduce(0, inverse, scores.detach(), "amax")
    shifted = scores - maxima[inverse]
    sums = torch.zeros(count, dtype=scores.dtype, device=scores.device).index_add(0, inverse, shifted.exp())
    return shifted - sums.log()[inverse]


def candidate_ranks(scores: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Each candidate's 1-based place in its group by score (ties share the better place)."""
    ordered = _GroupOrder(scores, groups)
    return ordered.count_from(ordered.keys, right=True) + 1  # the group's candidates scoring strictly higher, plus one


def positive_ranks(scores: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> np.ndarray:
    """For each group (in order of group number), how many of its candidates scored above its positive (0: ranked first).

    A tie with the positive counts against it, so a model scoring every candidate alike ranks nothing right.
    """
    ordered = _GroupOrder(scores, groups)
    positives = torch.bincount(ordered.group_index, weights=(labels == 1).double(), minlength=len(ordered.group_values))
    if (positives != 1).any():  # a file scored by `bam predict` is not checked as training data is
        bad = int((positives != 1).nonzero()[0])
        raise BamError(f"group {int(ordered.group_values[bad])} (numbered in order of appearance) has {int(positives[bad])} positive candidates; a ranking group is scored with exactly one")
    rows = (labels == 1).nonzero().squeeze(-1)
    ranks = torch.empty(len(ordered.group_values), dtype=torch.int64)
    ranks[ordered.group_index[rows]] = ordered.count_from(ordered.keys[rows], right=False) - 1  # those scoring at least as high, but itself
    return ranks.numpy()


class _GroupOrder:
    """The rows sorted by (group, score) as one integer key each, so that counting a group's candidates above a score
    is two binary searches: O(n log n) for a whole file, where a loop over groups would be quadratic."""

    def __init__(self, scores: torch.Tensor, groups: torch.Tensor):
        self.group_values, self.group_index = torch.unique(groups, return_inverse=True)
        _, score_index = torch.unique(scores.double(), return_inverse=True)  # dense ranks of the scores, equal scores equal
        self.width = int(score_index.max()) + 2 if len(score_index) else 1
        self.keys = self.group_index * self.width + score_index
        self.sorted_keys = torch.sort(self.keys).values

    def count_from(self, keys: torch.Tensor, right: bool) -> torch.Tensor:
        """For each key, its group's candidates above it (right=True: strictly above; False: at or above)."""
        group_end = torch.searchsorted(self.sorted_keys, (torch.div(keys, self.width, rounding_mode="floor") + 1) * self.width)
        return group_end - torch.searchsorted(self.sorted_keys, keys, right=right)


def _label_index(raw: str, spec: TaskSpec, where: str) -> int:
    if raw not in spec.labels:
        raise BamError(f"{where}: label {raw!r} is not one of {', '.join(spec.labels)}")
    return spec.labels.index(raw)


def _check_metrics(task_name: str, spec: TaskSpec, fitting: list[str], described: str) -> None:
    for metric in spec.metrics:
        if metric not in fitting:
            raise BamError(f"task {task_name!r}: metric {metric!r} does not fit {described} (these do: {', '.join(fitting)})")


TASK_TYPES: dict[str, TaskType] = {task_type.name: task_type for task_type in (Classification(), Regression(), Ranking())}


def task_type(name: str, task_name: str) -> TaskType:
    """The registered type called `name`, or one line naming the task and the known types."""
    if name not in TASK_TYPES:
        raise BamError(f"task {task_name!r}: unknown type {name!r}{did_you_mean(name, TASK_TYPES)}; known types: {', '.join(TASK_TYPES)}")
    return TASK_TYPES[name]
