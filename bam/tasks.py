"""The task registry: tasks as data, checked.

Tasks are data: `glue_tasks.toml` (and a recipe's `[custom_tasks.NAME]`
tables) give each task's files, fields, labels, type and metrics. The only code
is per task *type* (`bam.task_types`) and per head (`bam.heads`).
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePath

import numpy as np
import torch

from bam import metrics
from bam.config import LocalFiles, Recipe, TaskSpec, build, did_you_mean
from bam.errors import BamError
from bam.heads import head_kind
from bam.task_types import Batch, TaskType, task_type


@dataclass(frozen=True)
class Task:
    """A named task spec with its type's behaviour attached."""

    name: str
    spec: TaskSpec

    @property
    def type(self) -> TaskType:
        return task_type(self.spec.type, self.name)

    @property
    def output_size(self) -> int:
        return self.type.output_size(self.spec)

    def score(self, labels: torch.Tensor, outputs: torch.Tensor, groups: torch.Tensor | None = None) -> dict[str, float]:
        """The task's metrics for model outputs against gold labels (as the data holds them), and each row's group (ranking)."""
        return self.score_metric_inputs(*self.metric_inputs(labels, outputs, groups))

    def metric_inputs(self, labels: torch.Tensor, outputs: torch.Tensor, groups: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(gold, predicted) as the metrics take them: one item per example, or per group for ranking (what a bootstrap resamples)."""
        return self.type.metric_inputs(Batch(labels, groups=groups), outputs, self.spec)

    def score_metric_inputs(self, gold: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
        classes = range(len(self.spec.labels))  # the label set F1 averages run over (empty for regression)
        return metrics.compute(self.spec.metrics, gold, predicted, classes)

    def score_splits(self, splits: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]) -> dict[str, float]:
        """The task's metrics on every evaluation split, from (gold labels, outputs, groups or None); with several splits, names get the split as prefix."""
        results = {}
        for split, (labels, outputs, groups) in splits.items():
            for name, value in self.score(labels, outputs, groups).items():
                results[name if len(splits) == 1 else f"{split}_{name}"] = value
        return results


TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@functools.cache
def registry() -> dict[str, TaskSpec]:
    """The built-in GLUE task specs, read from glue_tasks.toml."""
    text = resources.files("bam").joinpath("glue_tasks.toml").read_text(encoding="utf-8")
    return {name: build(TaskSpec, table, name) for name, table in tomllib.loads(text).items()}


def check_spec(name: str, spec: TaskSpec) -> None:
    """Reject specs that cannot work, naming the task and field."""
    if not TASK_NAME.fullmatch(name):  # it names folders and files in the teacher store and run folders
        raise BamError(f"task {name!r}: a task name is letters, digits, '_' and '-', starting with a letter or digit")
    if name == "average":
        raise BamError("task 'average': the name is taken by the average score in results and reports")
    if len(set(spec.labels)) != len(spec.labels):
        raise BamError(f"task {name!r}: `labels` names a label twice")
    if len(spec.local.delimiter) != 1:
        raise BamError(f"task {name!r}: `local.delimiter` must be one character, got {spec.local.delimiter!r}")
    kind = task_type(spec.type, name)
    unknown = [metric for metric in spec.metrics if metric not in metrics.METRICS]
    if unknown:
        fitting = ", ".join(kind.fitting_metrics(spec))
        raise BamError(f"task {name!r}: unknown metric {unknown[0]!r}{did_you_mean(unknown[0], metrics.METRICS)}; metrics that fit this task: {fitting}")
    if not spec.metrics:
        raise BamError(f"task {name!r}: `metrics` must name at least one metric")
    if kind.batch_unit != "group":  # a ranking setting on another type would be silently ignored
        for key, value, default in (
            ("local.group_column", spec.local.group_column, LocalFiles.__dataclass_fields__["group_column"].default),
            ("local.invalid_groups", spec.local.invalid_groups, LocalFiles.__dataclass_fields__["invalid_groups"].default),
            ("ranking_scale", spec.ranking_scale, TaskSpec.__dataclass_fields__["ranking_scale"].default),
        ):
            if value != default:
                raise BamError(f"task {name!r}: `{key}` is a ranking task's setting (its groups of candidates); a {spec.type} task has no groups")
    kind.check_spec(name, spec)
    _check_local(name, spec)
    head = head_kind(spec.head, name)
    head.check_options(name, spec.head_options)
    texts = len(spec.local.text_columns or spec.hub.text_fields)
    if head.needs_pairs and texts == 1:
        raise BamError(f"task {name!r}: the {spec.head} head reads sentence pairs, and the task has one text column")
    if head.needs_classes and not kind.discrete_labels:
        raise BamError(f"task {name!r}: the {spec.head} head answers with class probabilities, and a {spec.type} task has no classes")
    local_paths = {"local.folder": spec.local.folder, "local.train": spec.local.train, **{f"local.dev.{split}": name for split, name in spec.local.dev.items()}}
    for where, path in local_paths.items():
        if PurePath(path).is_absolute() or ".." in PurePath(path).parts or "\\" in path:  # it must stay inside the data directory
            raise BamError(f"task {name!r}: `{where}` = {path!r} must be a relative path inside the data directory, without '..'")
    for where, splits in (("local.dev", spec.local.dev), ("hub.dev", spec.hub.dev)):
        if not splits or "train" in splits:
            raise BamError(f"task {name!r}: `{where}` must name at least one evaluation split, none called 'train'")
        for split in splits:
            if not TASK_NAME.fullmatch(split):  # it names prediction files
                raise BamError(f"task {name!r}: split name {split!r} in `{where}` is not letters, digits, '_' and '-'")


def _check_local(name: str, spec: TaskSpec) -> None:
    """Refuse local-file settings that would read the wrong rows or fields without an error."""
    local = spec.local
    columns = {
        "local.text_columns": local.text_columns, "local.label_column": (local.label_column,),
        **{f"local.{key}": (getattr(local, key),) for key in ("id_column", "group_column") if getattr(local, key) != ""},
    }  # fmt: skip
    for where, given in columns.items():
        positional = [column for column in given if isinstance(column, int)]
        if positional and local.format == "jsonl":
            raise BamError(f"task {name!r}: `{where}` gives position {positional[0]}, but JSON lines have keys, not positions; name the field")
        if positional and local.format == "delimited" and local.header:
            # The first line would be taken as a header and lost: an example per file gone, every id shifted.
            raise BamError(f"task {name!r}: `{where}` gives position {positional[0]} while `local.header` is true; set header = false for a file without a header line, or name the column")
    if not 0 <= local.dev_fraction < 1:
        raise BamError(f"task {name!r}: `local.dev_fraction` = {local.dev_fraction!r} must be in [0, 1) (0: read the dev files)")
    if local.dev_fraction > 0 and local.group_column != "":  # a held-out part cut row by row would split groups
        raise BamError(f"task {name!r}: `local.dev_fraction` cannot hold out part of a task with groups; give its dev file in `local.dev`")
    if local.dev_fraction > 0 and local.dev != LocalFiles().dev:
        raise BamError(f"task {name!r}: `local.dev` and `local.dev_fraction` both give a dev split; keep one")
    if not 0 <= local.dev_seed < 2**32:
        raise BamError(f"task {name!r}: `local.dev_seed` must be between 0 and 2**32 - 1")
    clashing = [label for label in local.skip_labels if label in spec.labels]
    if clashing:
        raise BamError(f"task {name!r}: {clashing[0]!r} is both a label and in `local.skip_labels`")


def resolve(recipe: Recipe, only: str | None = None) -> list[Task]:
    """The recipe's tasks in recipe order, or the comma-separated subset `only` in its own order, checked."""
    known = {**registry(), **recipe.custom_tasks}
    names = list(recipe.tasks)
    if only is not None:
        # Case is forgiven (--tasks RTE), but the recipe's own spelling is what is used from here on.
        spelling = {name.lower(): name for name in names} | {name: name for name in names}
        given = [name.strip() for name in only.split(",") if name.strip()]
        if not given:
            raise BamError("--tasks: no task named")
        wanted = []
        for name in given:
            match = spelling.get(name) or spelling.get(name.lower())
            if match is None:
                raise BamError(f"--tasks: {name!r} is not one of this recipe's tasks ({', '.join(names)}){did_you_mean(name, names)}")
            wanted.append(match)
        repeated = [name for name in wanted if wanted.count(name) > 1]
        if repeated:  # it would be trained twice, and sampled twice as often
            raise BamError(f"--tasks: {repeated[0]!r} is named twice")
        names = wanted
    tasks = []
    for name in names:
        if name not in known:
            raise BamError(f"unknown task {name!r}{did_you_mean(name, known)}")
        check_spec(name, known[name])
        tasks.append(Task(name, known[name]))
    return tasks
