"""Stage 3 of MT-DNN, `bam finetune`: each task fine-tuned alone, starting from a multi-task run's model.

MT-DNN trains one multi-task model ("multi-task refinement"), then fine-tunes a
copy of it per task with single-task settings; the paper's "MT-DNN" numbers are
those per-task models. For each task: build (the run's shared encoder and that
task's trained head, nothing else) -> train (gold labels, the recipe's
`teacher` settings: the single-task ones) -> evaluate -> save, as a teacher of
the store (`bam.teachers`), so the result is scored, reported and can teach
like any single-task model. The starting weights are part of the checkpoint
key: a resumed fine-tuning never continues from another run's model.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

from bam.config import Recipe, recipe_from_data
from bam.data import DataDirectories
from bam.errors import BamError
from bam.files import read_json
from bam.model import MultiTaskModel, saved_model_folder
from bam.tasks import Task
from bam.teachers import train_teachers
from bam.training import ProgressCallback


def finetune(
    run: Path,
    recipe: Recipe,
    tasks: list[Task],
    *,
    data_dir: DataDirectories,
    store: Path,
    progress: Callable[[str], ProgressCallback | None] = lambda task_name: None,
) -> dict:
    """Fine-tune every task of `tasks` from the model of `run` into `store`; returns the metrics.json layout of their dev scores."""
    # build: everything that can be refused, before any training
    folder = saved_model_folder(Path(run))
    starting = MultiTaskModel.load(folder, legacy_recipe=recipe)  # an older model's heads are described by its recipe
    missing = [task.name for task in tasks if task.name not in starting.heads]
    if missing:
        raise BamError(f"{run}: the model has no head for {', '.join(map(repr, missing))} (it has {', '.join(starting.heads)})")
    for task in tasks:  # the recipe trains the model's head: labels in another order would permute its classes
        saved = starting.tasks[task.name].spec
        differing = [key for key in SAME_AS_TRAINED if getattr(task.spec, key) != getattr(saved, key)]
        if differing:
            raise BamError(f"{run}: task {task.name!r} has another {', '.join(differing)} in the recipe than in the model ({', '.join(f'{key} = {getattr(saved, key)!r}' for key in differing)})")
    if starting.pooling != recipe.pooling:
        raise BamError(f"{run}: the model pools with {starting.pooling!r}, the recipe with {recipe.pooling!r}")
    del starting  # each task loads its own copy
    # The recipe's encoder becomes the run's; its fingerprint (encoder and heads) keys the checkpoints.
    # Each task trains as a teacher does, from a fresh copy of the run's model restricted to that task.
    return train_teachers(
        dataclasses.replace(recipe, model=str(folder / "encoder")), tasks, data_dir=data_dir, store=store, progress=progress,
        start=lambda task: MultiTaskModel.load(folder, legacy_recipe=recipe).keep_only(task.name), start_fingerprint=weights_fingerprint(folder),
    )  # fmt: skip


def weights_fingerprint(folder: Path) -> str:
    """A hash of a saved model's weight and layout files, so checkpoints know which model a fine-tuning started from."""
    digest = hashlib.sha256()
    for path in sorted([*folder.glob("*.json"), *folder.glob("*.safetensors"), *(folder / "encoder").glob("*.json"), *(folder / "encoder").glob("*.safetensors")]):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def run_recipe(run: Path, overrides: Sequence[str] = ()) -> Recipe:
    """The recipe a run directory was trained with (its config.json, less where its data and teachers came from), with overrides."""
    path = Path(run) / "config.json"
    if not path.is_file():
        raise BamError(f"{run}: not a run directory (no config.json)")
    recorded = read_json(path)
    if not isinstance(recorded, dict):
        raise BamError(f"{path}: not a recorded recipe")
    data = {key: value for key, value in recorded.items() if key not in RUN_SOURCES}
    return recipe_from_data(data, overrides, path)


RUN_SOURCES = ("data_dir", "teacher_store")
SAME_AS_TRAINED = ("type", "labels", "label_range", "head", "head_options")  # what a fine-tuned task must share with the model's  # what config.json records beside the recipe (bam.student)
