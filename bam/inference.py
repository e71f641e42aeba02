"""Use a trained model: load it from any form bam saves, and predict on new text (`bam.load`).

    import bam
    model = bam.load("runs/glue-mini-linear-seed0")
    model.predict(["a gripping, funny film"], task="sst2")           # [Answer(label='1', probabilities={...})]
    model.predict([("A man is playing.", "A man plays.")], task="rte")

`load` takes a run directory, a teacher-store task folder, a model folder (as
`bam export --all` writes it), or a one-task folder from `bam export --task`
(stock transformers weights plus `bam_task.json`). Answers are in the task's
own words: label names and every label's probability, or a value on the
task's original scale. Prediction sorts the texts by length into batches
(`bam.training.predict`), so little time goes into padding; answers come back
in the order the texts were given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import datasets
import torch
from torch import nn

from bam.config import TaskSpec, build, did_you_mean
from bam.data import group_numbers, tokenize
from bam.errors import BamError, first_line
from bam.files import read_format
from bam.model import MultiTaskModel, load_tokenizer, saved_model_folder
from bam.task_types import Answer
from bam.tasks import Task, check_spec
from bam.training import predict

Texts = Sequence[str] | Sequence[tuple[str, str]]


class Model:
    """A trained model with its tokenizer and tasks, ready to answer."""

    def __init__(self, network: nn.Module, tokenizer, tasks: dict[str, Task], max_length: int, source: Path):
        self.network = network  # called as network(task_name, inputs) -> the head's outputs, as MultiTaskModel is
        self.tokenizer = tokenizer
        self.tasks = tasks
        self.max_length = max_length
        self.source = source

    def task(self, name: str) -> Task:
        """The task called `name`, or one line listing the tasks this model has heads for."""
        if name not in self.tasks:
            raise BamError(f"{self.source}: no head for task {name!r}{did_you_mean(name, self.tasks)}; this model has: {', '.join(self.tasks)}")
        return self.tasks[name]

    def outputs(
        self, texts: Texts, task: str, *, batch_size: int = 128, precision: str = "fp32", on_batch: Callable[[int], None] | None = None
    ) -> torch.Tensor:
        """The head's raw outputs for every text, in the order given (logits, or a regression value scaled to [0, 1])."""
        chosen = self.task(task)
        dataset = _as_dataset(texts, chosen)
        if len(dataset) == 0:
            return torch.empty(0, chosen.output_size)
        tokenized = tokenize(dataset, self.tokenizer, self.max_length)
        return predict(self.network, chosen, tokenized, self.tokenizer, precision=precision, batch_size=batch_size, on_batch=on_batch)

    def predict(self, texts: Texts, task: str, groups: Sequence | None = None, **options) -> list[Answer]:
        """One answer per text: its label and the label probabilities, or its value (`outputs` takes the same options).

        A ranking task needs `groups`, one value per text (texts with equal values are
        candidates of one group); each answer then has its score and its rank in the group.
        """
        chosen = self.task(task)
        numbers = None if groups is None else torch.as_tensor(group_numbers(_checked_groups(groups, texts, chosen)), dtype=torch.int64)
        if numbers is None and chosen.type.batch_unit == "group":
            raise BamError(f"task {task!r} ranks the candidates of each group: give groups=, one group per text")
        return chosen.type.answers(self.outputs(texts, task, **options), chosen.spec, numbers)


def load(path: str | Path) -> Model:
    """A saved model, from a run directory, a teacher-store task folder, or an exported folder."""
    path = Path(path)
    if (path / "bam_task.json").is_file():
        return _load_exported_task(path)
    folder = saved_model_folder(path)
    recipe = _recipe_of_older_model(folder)
    network = MultiTaskModel.load(folder, legacy_recipe=recipe)
    max_length = network.max_length or recipe.max_length
    tokenizer = load_tokenizer(str(folder / "encoder"), max_length)
    return Model(network.eval(), tokenizer, network.tasks, max_length, path)


def _recipe_of_older_model(folder: Path):
    """For a model saved before heads.json was versioned (which does not describe its tasks): the recipe it was trained
    with, from its run directory's config.json or its teacher store's manifest; None for any other model."""
    from bam.config import Recipe
    from bam.files import read_json

    layout = read_json(folder / "heads.json") if (folder / "heads.json").is_file() else None
    if not isinstance(layout, dict) or "format" in layout:
        return None
    if (folder.parent / "config.json").is_file():  # a run directory
        from bam.finetune import run_recipe

        return run_recipe(folder.parent)
    manifest = read_json(folder.parent / "manifest.json") if (folder.parent / "manifest.json").is_file() else None
    if isinstance(manifest, dict) and isinstance(manifest.get("recipe"), dict):  # a teacher-store task folder
        return build(Recipe, manifest["recipe"])
    return None


class _ExportedTask(nn.Module):
    """A stock `...ForSequenceClassification` behind MultiTaskModel's call, giving outputs on bam's scale.

    The export folded the task's output scale into the last layer (a regression model outputs values
    on the original scale, as a transformers user expects); this unfolds it, so answers and metrics
    go through the task type exactly as for a model bam saved itself.
    """

    def __init__(self, classifier: nn.Module, task: Task):
        super().__init__()
        self.classifier = classifier
        self.tasks = {task.name: task}
        stock = task.type.stock_outputs(task.name, task.spec)
        self.scale, self.shift = stock.scale, stock.shift

    def forward(self, task_name: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return (self.classifier(**inputs).logits - self.shift) / self.scale


def _load_exported_task(folder: Path) -> Model:
    from transformers import AutoModelForSequenceClassification

    from bam.export import TASK_FORMAT  # the one writer of bam_task.json

    path = folder / "bam_task.json"
    described = read_format(path, TASK_FORMAT)
    if not isinstance(described.get("task"), str) or not isinstance(described.get("spec"), dict) or not isinstance(described.get("max_length"), int):
        raise BamError(f"{path}: must hold the task's name ('task'), its 'spec' and 'max_length'")
    try:
        task = Task(described["task"], build(TaskSpec, described["spec"], "spec"))
        check_spec(task.name, task.spec)
    except BamError as error:
        raise BamError(f"{path}: {error}") from None
    try:
        classifier = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=False, dtype=torch.float32)
    except Exception as error:  # transformers raises many types for a damaged folder; all mean "cannot load it"
        raise BamError(f"{folder}: could not load the exported model ({first_line(error)})") from None
    if classifier.config.num_labels != task.output_size:
        raise BamError(f"{folder}: the exported model has {classifier.config.num_labels} outputs, task {task.name!r} needs {task.output_size}")
    tokenizer = load_tokenizer(str(folder), described["max_length"])
    return Model(_ExportedTask(classifier, task).eval(), tokenizer, {task.name: task}, described["max_length"], folder)


def text_count(spec: TaskSpec) -> int | None:
    """How many texts one example of the task has (1, or 2 for a pair), as its data description says; None if unsaid."""
    counts = {len(spec.local.text_columns), len(spec.hub.text_fields)} - {0}
    return counts.pop() if len(counts) == 1 else None


def _checked_groups(groups: Sequence, texts: Texts, task: Task) -> list[str | int]:
    """One group per text, each a non-empty string or an integer (1 and "1" are different groups, as in a JSON-lines file)."""
    if task.type.batch_unit != "group":
        raise BamError(f"groups: task {task.name!r} is a {task.spec.type} task, which has no groups")
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence):
        raise BamError(f"groups must be a list with one group per text, not a {type(groups).__name__}")
    if len(groups) != len(texts):
        raise BamError(f"groups: {len(groups)} given for {len(texts)} texts; give one per text")
    for position, group in enumerate(groups):
        if isinstance(group, bool) or not isinstance(group, (str, int)) or (isinstance(group, str) and not group.strip()):
            raise BamError(f"group {position}: expected a non-empty string or an integer, got {group!r:.80}")
    return list(groups)


def _as_dataset(texts: Texts, task: Task) -> datasets.Dataset:
    """The texts as the columns `tokenize` reads, after checking each is a string or a pair of strings as the task takes."""
    if isinstance(texts, (str, tuple)):
        raise BamError("texts must be a list of strings or of (first, second) pairs, not a single " + type(texts).__name__)
    first, second = [], []
    for position, text in enumerate(texts):
        if isinstance(text, str):
            first.append(text)
            second.append(None)
        elif isinstance(text, (tuple, list)) and len(text) == 2 and all(isinstance(part, str) for part in text):
            first.append(text[0])
            second.append(text[1])
        else:
            raise BamError(f"text {position}: expected a string or a (first, second) pair of strings, got {text!r:.80}")
    pairs = {part is not None for part in second}
    if len(pairs) > 1:
        raise BamError("texts mix single sentences and pairs; give one kind")
    expected = text_count(task.spec)
    if pairs and expected is not None and (2 if True in pairs else 1) != expected:
        kind = "pairs of texts" if expected == 2 else "single texts"
        raise BamError(f"task {task.name!r} takes {kind}, got {'pairs' if True in pairs else 'single texts'}")
    features = datasets.Features({"text_a": datasets.Value("string"), "text_b": datasets.Value("string")})
    return datasets.Dataset.from_dict({"text_a": first, "text_b": second}, features=features)
