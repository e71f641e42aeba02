"""Stage 1, `bam train-teachers`: one single-task model per task, and its cached predictions.

For each task: build (data, encoder, head) -> train (gold labels) -> evaluate
(dev metrics) -> save (the model, its training log, and its outputs on the
FULL training set and on dev into the teacher store, with a manifest the
student checks). All data is read before any training, so a bad file stops
the run before it starts. Training checkpoints sit beside the store's task
folder until it is written, so the same command after a kill resumes instead
of starting again.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from pathlib import Path

from bam import metrics
from bam.checkpoints import Checkpointing, checkpoint_folder, run_key
from bam.config import Recipe, to_dict
from bam.data import DataDirectories, TaskData, load_tokenized
from bam.files import check_writable
from bam.model import MultiTaskModel, load_encoder, load_tokenizer
from bam.stage import prediction_options, train_and_evaluate, write_on_main_process
from bam.tasks import Task
from bam.teacher_store import Predictions, write_teacher
from bam.training import ProgressCallback, predict, run_facts, seed_everything


def train_teacher(
    recipe: Recipe,
    data: TaskData,
    train_fingerprint: str,
    tokenizer,
    *,
    store: Path,
    progress: ProgressCallback | None = None,
    start: Callable[[Task], MultiTaskModel] | None = None,
    start_fingerprint: str | None = None,
    save_model: bool = True,
) -> dict[str, float]:
    """Fine-tune, evaluate and store the teacher of one task; returns its dev metrics.

    `start` builds the model to fine-tune (default: the recipe's encoder with a new
    head); `start_fingerprint` identifies its weights in the checkpoint key (`bam.finetune`,
    `bam.adapt`); without `save_model` the store keeps the predictions only.
    """
    # build
    started = time.perf_counter()
    task = data.task
    seed_everything(recipe.seed)
    model = start(task) if start is not None else MultiTaskModel(load_encoder(recipe.model), [task], recipe.pooling)
    final = store / task.name
    identity = (task.name, train_fingerprint) if start_fingerprint is None else (task.name, train_fingerprint, start_fingerprint)
    checkpointing = Checkpointing(checkpoint_folder(final), recipe.checkpoint_every, run_key(to_dict(recipe), *identity))

    # train (resuming from this teacher's checkpoint if an earlier run was killed), evaluate
    trained = train_and_evaluate(model, [data], tokenizer, recipe, recipe.teacher, checkpointing=checkpointing, progress=progress)
    started -= trained.earlier_seconds  # the recorded wall time includes the training of killed attempts
    train_outputs = predict(model, task, data.train, tokenizer, **prediction_options(recipe))

    # save
    dev_metrics = trained.dev_metrics[task.name]
    predictions = {"train": Predictions.of(data.train, train_outputs)}
    predictions.update({split: Predictions.of(data.dev[split], outputs) for split, outputs in trained.dev_outputs[task.name].items()})
    details = teacher_details(recipe, {**dev_metrics, "score": metrics.task_score(dev_metrics)}, started)
    write_on_main_process(final, lambda: write_teacher(
        store, task, predictions=predictions, train_fingerprint=train_fingerprint, details=details,
        save_model=(lambda folder: model.save(folder, tokenizer, recipe.max_length)) if save_model else None, train_log=trained.log,
    ))  # fmt: skip
    return dev_metrics


def teacher_details(recipe: Recipe, dev_metrics: dict, started: float) -> dict:
    """The manifest entries that say where a teacher came from (also used when a student serves as teacher)."""
    return {
        "model": recipe.model,
        "seed": recipe.seed,
        "dev_metrics": dev_metrics,
        "recipe": to_dict(recipe),
        "wall_seconds": time.perf_counter() - started,
        **run_facts(recipe.precision),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def train_teachers(
    recipe: Recipe,
    tasks: list[Task],
    *,
    data_dir: DataDirectories,
    store: Path,
    progress: Callable[[str], ProgressCallback | None] = lambda task_name: None,
    start: Callable[[Task], MultiTaskModel] | None = None,
    start_fingerprint: str | None = None,
) -> dict:
    """Train every task's teacher in turn; returns the metrics.json layout of their dev scores (`start`: see `train_teacher`)."""
    tokenizer = load_tokenizer(recipe.model, recipe.max_length)
    prepared = [load_tokenized(task, data_dir, tokenizer, recipe.max_length) for task in tasks]
    for task in tasks:
        check_writable(store / task.name)
    results = {
        data.task.name: train_teacher(
            recipe, data, train_fingerprint, tokenizer, store=store, progress=progress(data.task.name), start=start, start_fingerprint=start_fingerprint,
        )
        for data, train_fingerprint in prepared
    }  # fmt: skip
    return metrics.summarize(results)
