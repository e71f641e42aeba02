"""The training loop both stages share, and prediction.

A teacher is trained by `fit` on one task with gold targets only; the student
by the same `fit` on all tasks, with each batch's target blended from gold
labels and cached teacher outputs by `bam.distillation`. The loop: pick a task
(|D|^alpha), take its next length-grouped batch, build targets, step AdamW
with warm-up, linear decay and clipping.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from bam.config import TrainConfig
from bam.data import column, length_grouped_batches
from bam.distillation import blend, gold_weight
from bam.hardware import resolve_precision
from bam.model import MultiTaskModel, parameter_groups
from bam.sampling import endless_batches, task_schedule, total_steps
from bam.tasks import Task

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class StepReport:
    """What the progress display shows after each step."""

    step: int
    total_steps: int
    loss: float
    gold_weight: float
    examples_per_second: float


ProgressCallback = Callable[[StepReport], None]


def quiet_libraries() -> None:
    """No per-file progress bars or warnings from transformers and datasets: bam reports progress itself."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def seed_everything(seed: int) -> None:
    """Same seed, same run: Python, NumPy and torch generators, deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(precision: str, on: torch.device):
    """bf16 autocast for the matrix products, or nothing for fp32 ('auto' decides by hardware)."""
    if resolve_precision(precision, on.type) == "bf16":
        return torch.autocast(device_type=on.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def collate(dataset, indices: np.ndarray, tokenizer, on: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Model inputs for the given rows, padded to the longest of them, and their labels."""
    rows = dataset[indices.tolist()]
    features = [{name: rows[name][i] for name in MODEL_INPUTS if name in rows} for i in range(len(indices))]
    padded = tokenizer.pad(features, return_tensors="pt")
    return {name: tensor.to(on) for name, tensor in padded.items()}, torch.as_tensor(np.asarray(rows["label"]))


def fit(
    model: MultiTaskModel,
    tasks: list[Task],
    train_sets: dict,
    tokenizer,
    config: TrainConfig,
    *,
    precision: str,
    seed: int,
    teacher_outputs: dict[str, torch.Tensor] | None = None,
    anneal: str = "none",
    teacher_weight: float = 0.5,
    progress: ProgressCallback | None = None,
) -> None:
    """Train `model` in place on `tasks` for `config.epochs` passes over their training sets.

    With `teacher_outputs` (task name -> one row per training example, in
    dataset order) targets are blended with the teacher according to `anneal`;
    without, they are the gold labels.
    """
    on = device()
    model.to(on).train()
    rng = np.random.default_rng(seed)
    sizes = [len(train_sets[task.name]) for task in tasks]
    steps = total_steps(sizes, config.batch_size, config.epochs)
    schedule = task_schedule(sizes, config.task_sampling_alpha, steps, rng)
    batches = [
        endless_batches(lambda lengths=column(train_sets[task.name], "length"): length_grouped_batches(lengths, config.batch_size, rng))
        for task in tasks
    ]
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.learning_rate, config.layerwise_lr_decay, config.weight_decay), lr=config.learning_rate
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_fraction * steps), steps)
    started, examples = time.perf_counter(), 0
    for step in range(steps):
        task = tasks[schedule[step]]
        indices = next(batches[schedule[step]])
        dataset = train_sets[task.name]
        inputs, labels = collate(dataset, indices, tokenizer, on)
        targets = task.kind.gold_targets(labels, task.spec).to(on)
        weight = 1.0
        if teacher_outputs is not None:
            weight = gold_weight(anneal, step, steps, teacher_weight)
            teacher = task.kind.teacher_targets(teacher_outputs[task.name][torch.as_tensor(indices)]).to(on)
            targets = blend(targets, teacher, weight)
        with autocast(precision, on):
            outputs = model(task.name, inputs)
        loss = task.kind.loss(outputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        examples += len(indices)
        if progress is not None:
            rate = examples / max(time.perf_counter() - started, 1e-9)
            progress(StepReport(step + 1, steps, loss.item(), weight, rate))


@torch.inference_mode()
def predict(model: MultiTaskModel, task: Task, dataset, tokenizer, *, precision: str, batch_size: int) -> torch.Tensor:
    """The head's raw outputs (logits, or the scaled value) for every row, in dataset order, as fp32."""
    on = device()
    model.to(on).eval()
    # Longest first, so batches pad little and the biggest one comes early.
    order = np.argsort(-column(dataset, "length"), kind="stable")
    outputs = torch.empty(len(dataset), task.output_size)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        with autocast(precision, on):
            outputs[torch.as_tensor(indices)] = model(task.name, collate(dataset, indices, tokenizer, on)[0]).float().cpu()
    model.train()
    return outputs


def evaluate(model: MultiTaskModel, task: Task, dev_sets: dict, tokenizer, *, precision: str, batch_size: int):
    """Per-split outputs and the task's metrics; with several splits, metric names get the split as prefix."""
    outputs, results = {}, {}
    for split, dataset in dev_sets.items():
        outputs[split] = predict(model, task, dataset, tokenizer, precision=precision, batch_size=batch_size)
        gold = torch.as_tensor(column(dataset, "label"))
        for name, value in task.score(gold, outputs[split]).items():
            results[name if len(dev_sets) == 1 else f"{split}_{name}"] = value
    return outputs, results
