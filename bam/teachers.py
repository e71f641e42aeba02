"""Stage 1, `bam train-teachers`: one single-task model per task, and its cached predictions.

For each task: build (data, encoder, head) -> train (gold labels) -> evaluate
(dev metrics) -> save (the model, and its outputs on the FULL training set and
on dev into the teacher store, with a manifest the student checks). All data
is read before any training, so a bad file stops the run before it starts.
Training checkpoints sit beside the store's task folder until it is written,
so the same command after a kill resumes instead of starting again.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from pathlib import Path

from bam import metrics
from bam.config import Recipe, to_dict
from bam.checkpoints import Checkpointing, checkpoint_folder, remove_checkpoints, run_key
from bam.data import DataDirectories, TaskData, load_tokenized
from bam.files import check_writable
from bam.model import MultiTaskModel, load_encoder, load_tokenizer
from bam.tasks import Task
from bam.teacher_store import Predictions, write_teacher
from bam.training import ProgressCallback, accelerator, evaluate, fit, predict, run_facts, seed_everything


def train_teacher(
    recipe: Recipe, data: TaskData, train_fingerprint: str, tokenizer, *, store: Path, progress: ProgressCallback | None = None
) -> dict[str, float]:
    """Fine-tune, evaluate and store the teacher of one task; returns its dev metrics."""
    # build
    started = time.perf_counter()
    task = data.task
    seed_everything(recipe.seed)
    encoder = load_encoder(recipe.model)
    model = MultiTaskModel(encoder, [task], recipe.pooling)

    # train (resuming from this teacher's checkpoint if an earlier run was killed)
    final = store / task.name
    checkpointing = Checkpointing(checkpoint_folder(final), recipe.checkpoint_every, run_key(to_dict(recipe), task.name, train_fingerprint))
    earlier_seconds = fit(
        model, [task], {task.name: data.train}, tokenizer, recipe.teacher,
        precision=recipe.precision, seed=recipe.seed, progress=progress,
        checkpointing=checkpointing, max_tokens_per_pass=recipe.max_tokens_per_pass,
    )  # fmt: skip
    started -= earlier_seconds  # the recorded wall time includes the training of killed attempts

    # evaluate
    predict_options = {"precision": recipe.precision, "batch_size": recipe.eval_batch_size}
    dev_outputs, dev_metrics = evaluate(model, task, data.dev, tokenizer, **predict_options)
    train_outputs = predict(model, task, data.train, tokenizer, **predict_options)

    # save (one process writes; with several, the others wait for it)
    predictions = {"train": Predictions.of(data.train, train_outputs)}
    predictions.update({split: Predictions.of(data.dev[split], outputs) for split, outputs in dev_outputs.items()})
    if accelerator().is_main_process:
        write_teacher(
            store, task, predictions=predictions, train_fingerprint=train_fingerprint,
            details=teacher_details(recipe, {**dev_metrics, "score": metrics.task_score(dev_metrics)}, started),
            save_model=lambda folder: model.save(folder, tokenizer),
        )  # fmt: skip
        remove_checkpoints(final)
    accelerator().wait_for_everyone()
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
) -> dict:
    """Train every task's teacher in turn; returns the metrics.json layout of their dev scores."""
    tokenizer = load_tokenizer(recipe.model)
    prepared = [load_tokenized(task, data_dir, tokenizer, recipe.max_length) for task in tasks]
    for task in tasks:
        check_writable(store / task.name)
    results = {
        data.task.name: train_teacher(recipe, data, train_fingerprint, tokenizer, store=store, progress=progress(data.task.name))
        for data, train_fingerprint in prepared
    }
    return metrics.summarize(results)
