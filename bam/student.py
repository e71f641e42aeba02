"""Stage 2, `bam distill`: one shared encoder trained on all tasks against annealed teacher targets.

build (data, teacher outputs, encoder with a head per task) -> train (targets
`lambda * gold + (1 - lambda) * teacher`, lambda per `student.anneal`) ->
evaluate (every task's dev metrics) -> save (a run directory with
metrics.json, config.json, run.json, the dev predictions and the model,
renamed into place when complete). Training checkpoints sit beside the run
directory until it is written, so the same command after a kill resumes.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

from bam import metrics
from bam.config import Recipe, to_dict
from bam.checkpoints import Checkpointing, checkpoint_folder, remove_checkpoints, run_key
from bam.data import DataDirectories, column, describe_directories, load_tokenized
from bam.files import atomic_directory, check_writable, write_json
from bam.model import MultiTaskModel, load_encoder, load_tokenizer
from bam.tasks import Task
from bam.teacher_store import Predictions, read_teacher, write_predictions, write_teacher
from bam.teachers import teacher_details
from bam.training import ProgressCallback, accelerator, evaluate, fit, predict, run_facts, seed_everything


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
    tokenizer = load_tokenizer(recipe.model)
    prepared = [load_tokenized(task, data_dir, tokenizer, recipe.max_length) for task in tasks]
    train_sets = {data.task.name: data.train for data, _ in prepared}
    teachers = {}
    if config.anneal != "none":
        teachers = {
            data.task.name: read_teacher(teacher_store, data.task, torch.as_tensor(column(data.train, "id")), train_fingerprint)
            for data, train_fingerprint in prepared
        }
    teacher_outputs = {name: teacher.outputs for name, teacher in teachers.items()} or None
    teacher_checksums = {name: teacher.sha256 for name, teacher in teachers.items()}
    check_writable(out)
    fingerprints = {data.task.name: train_fingerprint for data, train_fingerprint in prepared}
    checkpointing = Checkpointing(checkpoint_folder(out), recipe.checkpoint_every, run_key(to_dict(recipe), fingerprints, teacher_checksums))
    seed_everything(recipe.seed)
    encoder = load_encoder(recipe.model)
    model = MultiTaskModel(encoder, tasks, recipe.pooling)

    # train
    earlier_seconds = fit(
        model, tasks, train_sets, tokenizer, config,
        precision=recipe.precision, seed=recipe.seed, teacher_outputs=teacher_outputs,
        anneal=config.anneal, teacher_weight=config.teacher_weight, progress=progress,
        checkpointing=checkpointing, max_tokens_per_pass=recipe.max_tokens_per_pass,
    )  # fmt: skip
    started -= earlier_seconds  # the recorded wall time includes the training of killed attempts

    # evaluate
    predict_options = {"precision": recipe.precision, "batch_size": recipe.eval_batch_size}
    per_task, dev_predictions = {}, {}
    for data, _ in prepared:
        outputs, per_task[data.task.name] = evaluate(model, data.task, data.dev, tokenizer, **predict_options)
        for split, split_outputs in outputs.items():
            dev_predictions[f"{data.task.name}.{split}"] = Predictions.of(data.dev[split], split_outputs)
    results = metrics.summarize(per_task)
    train_predictions = {}
    if save_teacher_store:
        predict_train = functools.partial(predict, model, tokenizer=tokenizer, **predict_options)
        train_predictions = {data.task.name: Predictions.of(data.train, predict_train(data.task, data.train)) for data, _ in prepared}

    # save (one process writes; with several, the others wait for it)
    if accelerator().is_main_process:
        with atomic_directory(out) as partial:
            model.save(partial / "model", tokenizer)
            (partial / "predictions").mkdir()
            for name, split_predictions in dev_predictions.items():
                write_predictions(partial / "predictions" / f"{name}.safetensors", split_predictions)
            if save_teacher_store:  # this student as a teacher for another (BAM's Multi->Multi): its outputs on every training set
                for data, train_fingerprint in prepared:
                    split_predictions = {"train": train_predictions[data.task.name], **{split: dev_predictions[f"{data.task.name}.{split}"] for split in data.dev}}
                    details = teacher_details(recipe, results["tasks"][data.task.name], started)
                    write_teacher(partial / "teachers", data.task, predictions=split_predictions, train_fingerprint=train_fingerprint, details=details, save_model=None)
            sources = {"data_dir": describe_directories(data_dir), "teacher_store": str(teacher_store) if teacher_outputs else None}
            write_json(partial / "config.json", {**to_dict(recipe), **sources})
            write_json(partial / "run.json", {"wall_seconds": time.perf_counter() - started, **run_facts(recipe.precision)})
            write_json(partial / "metrics.json", results)
        remove_checkpoints(out)
    accelerator().wait_for_everyone()
    return results
