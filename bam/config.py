"""Typed, frozen configuration loaded from TOML recipes.

A recipe lists only what differs from the defaults below, which are the BAM
paper's settings. Every field says why it exists. Loading rejects unknown keys
(with a "did you mean") and wrong types, naming the key; `--set key=value`
overrides go through the same checks.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bam.errors import BamError


def setting(default: Any, why: str) -> Any:
    """A dataclass field with its default and a one-line reason, kept in the field's metadata."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"why": why})
    return field(default=default, metadata={"why": why})


@dataclass(frozen=True)
class TrainConfig:
    """How one model is fine-tuned; the defaults are the paper's single-task teacher settings."""

    learning_rate: float = setting(5e-5, "peak AdamW learning rate (paper: 5e-5 single-task, 1e-4 multi-task)")
    batch_size: int = setting(32, "examples per optimizer step, or groups of candidates for a ranking task (paper: 32 single-task, 128 multi-task)")
    epochs: float = setting(3.0, "passes over the summed training sets; sets the total number of steps")
    layerwise_lr_decay: float = setting(1.0, "each encoder layer below the top trains at this factor of the one above")
    warmup_fraction: float = setting(0.1, "share of steps with linear learning-rate warm-up before linear decay")
    weight_decay: float = setting(0.01, "AdamW weight decay, not applied to biases and LayerNorm weights")
    max_grad_norm: float = setting(1.0, "gradients are clipped to this global norm (inf: no clipping)")
    task_sampling_alpha: float = setting(0.75, "tasks are sampled in proportion to |D|^alpha (1 proportional, 0 uniform)")
    length_group_batches: int = setting(50, "batches per length-sorted group: more means less padding, fewer means more random batches (1: random)")
    step_sampler: str = setting("proportional", "which tasks a step trains (bam.sampling): proportional (|D|^alpha), epoch-shuffle (MT-DNN), all-tasks")
    loss_weighting: str = setting("equal", "how a step's per-task losses are combined (bam.weighting): equal, fixed, uncertainty, dwa, dtp, gradnorm, mgda, pcgrad, famo")
    loss_weighting_options: dict[str, float] = setting({}, "the method's settings (bam.weighting), or task = weight for fixed; each method checks its own")


# Teacher annealing schedules (bam.distillation computes them); the CLI's --anneal offers the same.
Anneal = Literal["linear", "none", "constant"]


@dataclass(frozen=True)
class StudentConfig(TrainConfig):
    """The multi-task student: the paper's multi-task settings plus the distillation schedule."""

    learning_rate: float = setting(1e-4, "peak AdamW learning rate (paper: 1e-4 for the multi-task model)")
    batch_size: int = setting(128, "examples per optimizer step (paper: 128 for the multi-task model)")
    epochs: float = setting(6.0, "passes over the summed training sets (paper: 6 for the multi-task model)")
    layerwise_lr_decay: float = setting(0.9, "per-layer learning-rate factor (paper: 0.9 for the multi-task model)")
    anneal: Anneal = setting(
        "linear", "teacher annealing: lambda = step/total (linear), gold only (none), fixed blend (constant)"
    )
    teacher_weight: float = setting(0.5, "with anneal = constant: the fixed weight 1 - lambda given to the teacher")


@dataclass(frozen=True)
class LocalFiles:
    """Where a task lives in a local folder: delimited text files (GLUE's canonical TSV layout) or JSON lines."""

    folder: str = setting("", "sub-folder of the data directory, e.g. RTE")
    format: Literal["delimited", "jsonl"] = setting("delimited", "delimited text (one row per line) or JSON lines (one object per line, fields by name)")
    text_columns: tuple[int | str, ...] = setting((), "one or two text columns: header names or JSON keys, or 0-based positions")
    label_column: int | str = setting("label", "the gold label column: header name, JSON key or 0-based position")
    id_column: int | str = setting("", "a column of unique non-negative integer ids to use as example ids ('': the row's number in its file)")
    train: str = setting("train.tsv", "training file inside the folder")
    dev: dict[str, str] = setting({"dev": "dev.tsv"}, "evaluation splits: split name -> file (MNLI has two)")
    header: bool = setting(True, "whether the first line names the columns (CoLA's files have none)")
    delimiter: str = setting("\t", "field separator; quotes are never interpreted, as in GLUE's files")
    skip_labels: tuple[str, ...] = setting((), "labels that mean 'no gold label' (OCNLI's '-'): such rows are skipped and counted, not refused")
    dev_fraction: float = setting(0.0, "hold out this share of the training file, stratified by label, as the 'dev' split (for tasks with no dev file)")
    dev_seed: int = setting(0, "seeds the hold-out of `dev_fraction`, independently of the training seed")
    group_column: int | str = setting("", "ranking: the column whose equal values make one group of candidates (a question and its answers)")
    invalid_groups: Literal["refuse", "drop"] = setting("refuse", "ranking: a group without exactly one positive candidate stops the run (refuse) or is left out and counted (drop)")


@dataclass(frozen=True)
class HubDataset:
    """Where a task lives on the Hugging Face hub, used when no local data directory is given."""

    path: str = setting("nyu-mll/glue", "dataset repository on the hub")
    name: str = setting("", "dataset configuration, e.g. rte")
    text_fields: tuple[str, ...] = setting((), "one or two text fields")
    label_field: str = setting("label", "gold label field: an index into `labels`, or a number for regression")
    train: str = setting("train", "training split")
    dev: dict[str, str] = setting({"dev": "validation"}, "evaluation splits: our name -> hub split")


@dataclass(frozen=True)
class TaskSpec:
    """A task as data: where its examples are, what its labels mean, how it is scored."""

    type: str = setting("classification", "the task type (bam.task_types: classification, regression, ranking), which picks targets, loss and predictions")
    labels: tuple[str, ...] = setting((), "label names in the order of the classifier's outputs (classification)")
    metrics: tuple[str, ...] = setting(("accuracy",), "official metrics; the task score is their mean")
    label_range: tuple[float, float] = setting((0.0, 1.0), "regression targets are scaled from this range to [0, 1]")
    ranking_scale: float = setting(1.0, "ranking: the candidates' scores are multiplied by this gamma before the softmax over their group (MT-DNN: 1)")
    head: str = setting("linear", "the answer module on top of the encoder (bam.heads), chosen independently of the type")
    head_options: dict[str, int | float | str | bool] = setting({}, "settings of the head, checked by the head (the linear head has none)")
    local: LocalFiles = setting(LocalFiles(), "how to read the task from a local folder")
    hub: HubDataset = setting(HubDataset(), "how to read the task from the Hugging Face hub")


@dataclass(frozen=True)
class Recipe:
    """Everything a teacher or student run needs; the defaults are the BAM paper's."""

    model: str = setting("", "encoder: hub id, local folder, or package:<module> for a pip-installed model")
    tasks: tuple[str, ...] = setting((), "tasks to train on, by registry name or custom_tasks name")
    max_length: int = setting(128, "tokens per example after truncation (paper: 128)")
    pooling: Literal["first", "mean"] = setting("first", "sentence vector for the heads: first token, or mean of tokens")
    precision: Literal["auto", "bf16", "fp32"] = setting("auto", "bf16 autocast or fp32; auto picks bf16 only where it is fast (CUDA, CPUs with usable AMX)")
    seed: int = setting(0, "seeds data order, initialisation and dropout; same seed, same metrics")
    eval_batch_size: int = setting(128, "examples per batch when predicting (no gradients, so larger)")
    max_tokens_per_pass: int = setting(4096, "a batch with more padded tokens is trained in several passes whose gradients add up: same update, bounded memory")
    checkpoint_every: int = setting(200, "optimizer steps between resumable checkpoints (0: only one at the end of training)")
    teacher: TrainConfig = setting(TrainConfig(), "single-task teacher training")
    student: StudentConfig = setting(StudentConfig(), "multi-task student training")
    custom_tasks: dict[str, TaskSpec] = setting({}, "tasks declared in the recipe, usable by name in `tasks`; one named like a registry task changes only the keys it gives")


# ---------------------------------------------------------------------------
# Converting plain TOML values into the dataclasses above, checking as we go.


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _convert(value: Any, annotation: Any, key: str, default: Any = None) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        return build(annotation, value, key, base=default)
    if origin is Literal:
        if value not in args:
            raise BamError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _convert(value, option, key)
            except BamError:
                continue
        raise BamError(f"{key}: expected {_type_name(annotation)}, got {_shown(value)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise BamError(f"{key}: expected a list, got {_shown(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(item, args[0], f"{key}[{i}]") for i, item in enumerate(value))
        if len(value) != len(args):
            raise BamError(f"{key}: expected a list of {len(args)} values, got {len(value)}")
        return tuple(_convert(item, arg, f"{key}[{i}]") for i, (item, arg) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise BamError(f"{key}: expected a table, got {_shown(value)}")
        return {name: _convert(item, args[1], f"{key}.{name}") for name, item in value.items()}
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, float) and math.isnan(value):  # TOML reads nan (and inf: see _ranges)
        raise BamError(f"{key}: expected a number, got nan")
    if annotation in (int, float, str, bool) and (type(value) is annotation):
        return value
    raise BamError(f"{key}: expected {_type_name(annotation)}, got {_shown(value)}")


def _shown(value: Any) -> str:
    """A wrong value in an error: a boolean as TOML spells it, anything else with its kind."""
    return str(value).lower() if isinstance(value, bool) else f"{_type_name(type(value))} {value!r}"


def _type_name(annotation: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a table", list: "a list"}
    if annotation in names:
        return names[annotation]
    return str(annotation).replace("typing.", "")


def build(cls: type, data: Any, where: str = "", base: Any = None) -> Any:
    """Build dataclass `cls` from a TOML table, on top of `base` (default: the class defaults).

    Unknown keys and wrong types raise BamError naming the dotted key.
    """
    if not isinstance(data, dict):
        raise BamError(f"{where or 'recipe'}: expected a table, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    base = base if base is not None else cls()
    values = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        if name not in fields:
            raise BamError(f"unknown key {key!r}{did_you_mean(name, fields)}")
        values[name] = _convert(value, hints[name], key, default=getattr(base, name))
    return dataclasses.replace(base, **values)


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """Split 'student.learning_rate=3e-5' into (['student', 'learning_rate'], 3e-5).

    The value is read as a TOML value, so numbers, booleans and lists keep their
    type; anything that is not valid TOML is taken as a plain string.
    """
    if "=" not in assignment:
        raise BamError(f"--set {assignment!r}: expected key=value")
    key, raw = assignment.split("=", 1)
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def load_recipe(path: str | Path, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Read a recipe file, apply `key=value` overrides, and check every key and type."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # -sig: editors on Windows may add a byte-order mark
    except FileNotFoundError:
        raise BamError(f"{path}: recipe not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise BamError(f"{path}: not valid TOML: {error}") from None
    except OSError as error:
        raise BamError(f"{path}: cannot read recipe ({error.strerror})") from None
    return recipe_from_data(data, overrides, path)


def recipe_from_data(data: dict, overrides: typing.Sequence[str], path: str | Path) -> Recipe:
    """A recipe from its TOML (or recorded JSON) table, with `key=value` overrides, every key and type checked; errors name `path`."""
    for assignment in overrides:
        keys, value = parse_override(assignment)
        table = data
        for part in keys[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise BamError(f"--set {assignment!r}: {part!r} is not a table")
        table[keys[-1]] = value
    try:
        recipe = _on_registry_specs(build(Recipe, data), data)
    except BamError as error:
        raise BamError(f"{path}: {error}") from None
    if not recipe.model:
        raise BamError(f"{path}: 'model' is required")
    if not recipe.tasks:
        raise BamError(f"{path}: 'tasks' is required and must name at least one task")
    if len(set(recipe.tasks)) != len(recipe.tasks):
        raise BamError(f"{path}: 'tasks' names a task twice")
    for key, value, allowed, description in _ranges(recipe):
        if not allowed(value):
            raise BamError(f"{path}: {key} = {value!r} must be {description}")
    for key, value, known in _choices(recipe):
        if value not in known:
            raise BamError(f"{path}: {key} = {value!r} is not one of {', '.join(known)}{did_you_mean(value, known)}")
    return with_weighting_samplers(recipe, path)


def with_weighting_samplers(recipe: Recipe, path: str | Path) -> Recipe:
    """Each section's weighting settings checked, and the all-tasks sampler for a method that needs every task's loss in every step.

    The default sampler (proportional) is replaced, and the recipe a run records says so; a
    sampler chosen otherwise (epoch-shuffle) cannot feed such a method and is refused.
    """
    from bam.weighting import WEIGHTINGS

    changed = {}
    for section in ("teacher", "student"):
        config = getattr(recipe, section)
        method = WEIGHTINGS[config.loss_weighting]
        try:
            method.check_options(config.loss_weighting_options, recipe.tasks)
        except BamError as error:
            raise BamError(f"{path}: {section}.{error}") from None
        if method.needs_all_tasks and config.step_sampler != "all-tasks":
            if config.step_sampler != TrainConfig().step_sampler:
                raise BamError(
                    f"{path}: {section}.loss_weighting = {config.loss_weighting!r} needs every task's loss in every step, "
                    f"which step_sampler = {config.step_sampler!r} does not give; use 'all-tasks' (or leave step_sampler unset)"
                )
            changed[section] = dataclasses.replace(config, step_sampler="all-tasks")
    return dataclasses.replace(recipe, **changed) if changed else recipe


def _on_registry_specs(recipe: Recipe, data: dict) -> Recipe:
    """Custom tasks named like registry tasks, built on the registry's spec rather than the defaults.

    So a recipe changes one key of a GLUE task (`[custom_tasks.rte]` with
    `head = "sequence-classification"`) without copying the rest of its spec.
    """
    from bam.tasks import registry  # the registry imports this module

    tables = data.get("custom_tasks", {})
    overlaid = {
        name: build(TaskSpec, tables[name], f"custom_tasks.{name}", base=registry()[name])
        for name in recipe.custom_tasks if name in registry()
    }  # fmt: skip
    return dataclasses.replace(recipe, custom_tasks={**recipe.custom_tasks, **overlaid})


def _choices(recipe: Recipe):
    """(key, value, registered names) for every setting that names a registered component."""
    from bam.sampling import SAMPLERS  # the registries import this module
    from bam.weighting import WEIGHTINGS

    for section in ("teacher", "student"):
        config = getattr(recipe, section)
        yield f"{section}.step_sampler", config.step_sampler, list(SAMPLERS)
        yield f"{section}.loss_weighting", config.loss_weighting, list(WEIGHTINGS)


def _ranges(recipe: Recipe):
    """(key, value, check, what it must be) for every numeric setting with a valid range."""
    positive = (lambda value: 0 < value < math.inf, "greater than 0 and finite")
    unit = (lambda value: 0 <= value <= 1, "between 0 and 1")
    yield "seed", recipe.seed, lambda value: 0 <= value < 2**32, "between 0 and 2**32 - 1"  # what NumPy's generators take
    yield "max_length", recipe.max_length, lambda value: value >= 8, "at least 8"
    yield "eval_batch_size", recipe.eval_batch_size, *positive
    yield "max_tokens_per_pass", recipe.max_tokens_per_pass, lambda value: value >= 1, "at least 1"
    yield "checkpoint_every", recipe.checkpoint_every, lambda value: value >= 0, "at least 0"
    for section in ("teacher", "student"):
        config = getattr(recipe, section)
        for name in ("learning_rate", "batch_size"):
            yield f"{section}.{name}", getattr(config, name), *positive
        yield f"{section}.epochs", config.epochs, lambda value: 0 < value <= 10_000, "in (0, 10000]"
        yield f"{section}.layerwise_lr_decay", config.layerwise_lr_decay, lambda value: 0 < value <= 1, "in (0, 1]"
        yield f"{section}.warmup_fraction", config.warmup_fraction, lambda value: 0 <= value < 1, "in [0, 1)"
        yield f"{section}.weight_decay", config.weight_decay, lambda value: 0 <= value < math.inf, "at least 0 and finite"
        yield f"{section}.max_grad_norm", config.max_grad_norm, lambda value: value > 0, "greater than 0 (inf: no clipping)"
        yield f"{section}.task_sampling_alpha", config.task_sampling_alpha, lambda value: 0 <= value < math.inf, "at least 0 and finite"
        yield f"{section}.length_group_batches", config.length_group_batches, lambda value: value >= 1, "at least 1"
    yield "student.teacher_weight", recipe.student.teacher_weight, *unit


def to_dict(config: Any) -> Any:
    """A JSON-ready view of a config, for the run directory (tuples stay tuples; JSON writes them as lists)."""
    return dataclasses.asdict(config)
