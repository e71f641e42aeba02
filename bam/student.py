"""Stage 2, `bam distill`: one shared encoder trained on all tasks against annealed teacher targets.

build (data, teacher outputs, encoder with a head per task) -> train (targets
`lambda * gold + (1 - lambda) * teacher`, lambda per `student.anneal`) ->
evaluate (every task's dev metrics) -> save (a run directory with
metrics.json, config.json, run.json, train_log.jsonl, the dev predictions and
the model, renamed into place when complete). Training checkpoints sit beside
the run directory until it is written, so the same command after a kill resumes.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bam import metrics
from bam.checkpoints import Checkpointing, checkpoint_folder, run_key
from bam.config import Recipe, to_dict
from bam.data import DataDirectories, TaskData, column, describe_directories, load_tokenized
from bam.files import atomic_directory, check_writable, write_json
from bam.model import MultiTaskModel, load_encoder, load_tokenizer
from bam.stage import Trained, prediction_options, train_and_evaluate, write_on_main_process
from bam.tasks import Task
from bam.teacher_store import Predictions, read_teacher, write_predictions, write_teacher
from bam.teachers import teacher_details
from bam.train_log import write_train_log
from bam.training import ProgressCallback, Teaching, predict, run_facts, seed_everything


def distill(
    recipe: Recipe,
    tasks: list[Task],
    *,
    data_dir: DataDirectories,
    teacher_store: Path,
    out: Path,
    progress: ProgressCallback | None = None,
    save_teacher_store: bool = False,
) -> dict:
    """Train and evaluate the multi-task student, write its run directory, return its metrics.

    With `save_teacher_store` the run directory also holds `teachers/`, this
    student's own predictions in teacher-store form, so it can teach another.
    """
    # build: read everything that can be refused before spending any time training
    started = time.perf_counter()
    config = recipe.student
    tokenizer = load_tokenizer(recipe.model, recipe.max_length)
    prepared = [load_tokenized(task, data_dir, tokenizer, recipe.max_length) for task in tasks]
    fingerprints = {data.task.name: train_fingerprint for data, train_fingerprint in prepared}
    teachers = {}
    if config.anneal != "none":
        teachers = {
            data.task.name: read_teacher(teacher_store, data.task, torch.as_tensor(column(data.train, "id")), train_fingerprint)
            for data, train_fingerprint in prepared
        }
    teaching = Teaching({name: teacher.outputs for name, teacher in teachers.items()}, config.anneal, config.teacher_weight) if teachers else None
    check_writable(out)
    teacher_checksums = {name: teacher.sha256 for name, teacher in teachers.items()}
    checkpointing = Checkpointing(checkpoint_folder(out), recipe.checkpoint_every, run_key(to_dict(recipe), fingerprints, teacher_checksums))
    seed_everything(recipe.seed)
    model = MultiTaskModel(load_encoder(recipe.model), tasks, recipe.pooling)

    # train, evaluate
    task_data = [data for data, _ in prepared]
    trained = train_and_evaluate(model, task_data, tokenizer, recipe, config, checkpointing=checkpointing, progress=progress, teaching=teaching)
    started -= trained.earlier_seconds  # the recorded wall time includes the training of killed attempts
    results = metrics.summarize(trained.dev_metrics)
    train_outputs = {}
    if save_teacher_store:  # this student as a teacher for another (BAM's Multi->Multi): its outputs on every training set
        train_outputs = {data.task.name: predict(model, data.task, data.train, tokenizer, **prediction_options(recipe)) for data in task_data}

    # save
    sources = {"data_dir": describe_directories(data_dir), "teacher_store": str(teacher_store) if teaching else None}
    write_on_main_process(out, lambda: _write_run(out, recipe, model, tokenizer, task_data, fingerprints, trained, train_outputs, results, sources, started))
    return results


def _write_run(
    out: Path, recipe: Recipe, model: MultiTaskModel, tokenizer, task_data: list[TaskData], fingerprints: dict[str, str],
    trained: Trained, train_outputs: dict[str, torch.Tensor], results: dict, sources: dict, started: float,
) -> None:  # fmt: skip
    """The run directory, renamed into place once complete."""
    with atomic_directory(out) as partial:
        model.save(partial / "model", tokenizer, recipe.max_length)
        (partial / "predictions").mkdir()
        dev_predictions = {}
        for data in task_data:
            for split, outputs in trained.dev_outputs[data.task.name].items():
                dev_predictions[data.task.name, split] = Predictions.of(data.dev[split], outputs)
                write_predictions(partial / "predictions" / f"{data.task.name}.{split}.safetensors", dev_predictions[data.task.name, split])
        for data in task_data if train_outputs else ():
            split_predictions = {"train": Predictions.of(data.train, train_outputs[data.task.name])}
            split_predictions.update({split: dev_predictions[data.task.name, split] for split in data.dev})
            details = teacher_details(recipe, results["tasks"][data.task.name], started)
            write_teacher(partial / "teachers", data.task, predictions=split_predictions, train_fingerprint=fingerprints[data.task.name], details=details, save_model=None)
        write_json(partial / "config.json", {**to_dict(recipe), **sources})
        write_json(partial / "run.json", {"wall_seconds": time.perf_counter() - started, **run_facts(recipe.precision)})
        write_train_log(partial / "train_log.jsonl", trained.log)
        write_json(partial / "metrics.json", results)
