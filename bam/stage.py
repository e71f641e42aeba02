"""What the two stages share: train a model on its tasks, evaluate it on every dev split, write on the main process.

`bam.teachers` (one model per task) and `bam.student` (one model for all)
differ in what they build and what they save; between the two, both call
`train_and_evaluate`, and both write their output through
`write_on_main_process`, which also removes the run's checkpoints once the
output is complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bam.checkpoints import Checkpointing, remove_checkpoints
from bam.config import Recipe, TrainConfig
from bam.data import TaskData
from bam.model import MultiTaskModel
from bam.training import ProgressCallback, Teaching, accelerator, evaluate, fit


@dataclass(frozen=True)
class Trained:
    """A trained model's record: its training log and its dev outputs and metrics, per task."""

    earlier_seconds: float  # training seconds of killed attempts (the recorded wall time includes them)
    log: list[dict]
    dev_outputs: dict[str, dict[str, torch.Tensor]]  # task -> split -> outputs
    dev_metrics: dict[str, dict[str, float]]  # task -> metric -> value


def prediction_options(recipe: Recipe) -> dict:
    return {"precision": recipe.precision, "batch_size": recipe.eval_batch_size}


def train_and_evaluate(
    model: MultiTaskModel,
    prepared: list[TaskData],
    tokenizer,
    recipe: Recipe,
    config: TrainConfig,
    *,
    checkpointing: Checkpointing,
    progress: ProgressCallback | None,
    teaching: Teaching | None = None,
) -> Trained:
    """`fit` on the tasks' training sets, then every task's dev metrics."""
    result = fit(
        model, [data.task for data in prepared], {data.task.name: data.train for data in prepared}, tokenizer, config,
        precision=recipe.precision, seed=recipe.seed, teaching=teaching, progress=progress,
        checkpointing=checkpointing, max_tokens_per_pass=recipe.max_tokens_per_pass,
    )  # fmt: skip
    outputs, scores = {}, {}
    for data in prepared:
        outputs[data.task.name], scores[data.task.name] = evaluate(model, data.task, data.dev, tokenizer, **prediction_options(recipe))
    return Trained(result.earlier_seconds, result.log, outputs, scores)


def write_on_main_process(final: Path, write: Callable[[], None]) -> None:
    """Run `write` on the main process only and remove the checkpoints of `final`; the other processes wait for it."""
    if accelerator().is_main_process:
        write()
        remove_checkpoints(final)
    accelerator().wait_for_everyone()
