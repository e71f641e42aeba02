"""The training loop both stages share, and prediction.

A teacher is trained by `fit` on one task with gold targets only; the student
by the same `fit` on all tasks, with each batch's target blended from gold
labels and cached teacher outputs by `bam.distillation`. The loop: pick a task
(|D|^alpha), take its next length-grouped batch, build targets, step AdamW
with warm-up, linear decay and clipping; checkpoint every N steps.

Devices and processes go through `accelerate`: the same code runs on a CPU, a
GPU, or several processes launched by `accelerate launch` / `torchrun` (DDP).
With several processes each global batch is split between them and the loss
scaled so that the averaged gradient is the one of the whole batch: the run
matches a single-process run with the same batch size. Mixed precision is
torch autocast chosen per run (`bam.hardware.resolve_precision`), not
accelerate's, because accelerate fixes one precision per process and a test
or benchmark process trains in several.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from bam.checkpoints import Checkpointing, latest_checkpoint, load_checkpoint, save_checkpoint
from bam.config import TrainConfig
from bam.data import column, length_grouped_batches
from bam.distillation import blend, gold_weight
from bam.files import code_fingerprint
from bam.hardware import resolve_precision
from bam.model import MultiTaskModel, parameter_groups
from bam.sampling import endless_batches, task_schedule, total_steps
from bam.tasks import Task

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class StepReport:
    """What the progress display shows after each step; token counts are cumulative over the run."""

    step: int
    total_steps: int
    loss: float
    gold_weight: float
    examples_per_second: float
    examples: int = 0  # examples trained on so far, all processes
    tokens: int = 0  # real (non-padding) tokens this process has trained on so far
    padded_tokens: int = 0  # the same including padding


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
    # Deterministic mode also fills every new tensor with NaN to expose reads of uninitialised memory:
    # a debugging aid that took 4% of a training step on CPU and changes no result.
    torch.utils.deterministic.fill_uninitialized_memory = False


@functools.cache
def accelerator():
    """This process's `accelerate.Accelerator`: its device, and DDP when launched as several processes."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # Each step trains one task's head, so the other heads get no gradient: DDP must expect that.
    unused_heads = DistributedDataParallelKwargs(find_unused_parameters=True)
    # Without cpu=True accelerate ignores a multi-process launch on a machine without GPUs, and
    # every process would train alone on all the data.
    return Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[unused_heads])


def device() -> torch.device:
    return accelerator().device


def run_facts(precision: str) -> dict:
    """What shapes a run's numbers besides its recipe: the code, the thread and process counts, the precision used."""
    return {
        "code": code_fingerprint(), "threads": torch.get_num_threads(), "processes": accelerator().num_processes,
        "precision": resolve_precision(precision, device().type),
    }  # fmt: skip


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


def process_share(indices: np.ndarray, process: int, processes: int) -> tuple[np.ndarray, float]:
    """This process's part of a global batch, and the factor that makes its mean loss count as its share.

    DDP averages gradients over processes, so scaling each process's mean loss by
    processes * len(part) / len(batch) gives the gradient of the whole batch's
    mean loss, even when the parts differ in size. A process left without
    examples trains on one with weight 0, because DDP needs every process to
    take part in each step.
    """
    part = np.array_split(indices, processes)[process]
    if len(part) == 0:
        return indices[:1], 0.0
    return part, processes * len(part) / len(indices)


def memory_passes(indices: np.ndarray, lengths: np.ndarray, max_tokens: int) -> list[tuple[np.ndarray, float]]:
    """A batch cut into forward/backward passes of at most about `max_tokens` padded tokens each, with their weights.

    Activation memory grows with examples x padded length; a batch whose
    longest example times its size exceeds `max_tokens` is split into equal
    parts, and weighting each part's mean loss by its share of the batch makes
    the summed gradient the whole batch's. Short batches stay whole.
    """
    count = max(1, min(len(indices), math.ceil(int(lengths[indices].max()) * len(indices) / max_tokens)))
    return [(part, len(part) / len(indices)) for part in np.array_split(indices, count)]


def batch_targets(task: Task, labels: torch.Tensor, teacher_rows: torch.Tensor | None, weight: float) -> torch.Tensor:
    """What the batch is trained towards: gold targets, blended with the teacher's rows when there is a teacher."""
    gold = task.kind.gold_targets(labels, task.spec)
    if teacher_rows is None:
        return gold
    return blend(gold, task.kind.teacher_targets(teacher_rows), weight)


def _run_key(checkpointing: Checkpointing, processes: int) -> Checkpointing:
    # A checkpoint from a run with another process count splits batches differently: never resume it.
    key = hashlib.sha256(json.dumps([checkpointing.key, processes]).encode()).hexdigest()
    return Checkpointing(checkpointing.folder, checkpointing.every, key)


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
    checkpointing: Checkpointing | None = None,
    max_tokens_per_pass: int = 1 << 62,
) -> float:
    """Train `model` in place on `tasks` for `config.epochs` passes over their training sets.

    With `teacher_outputs` (task name -> one row per training example, in
    dataset order) targets are blended with the teacher according to `anneal`;
    without, they are the gold labels. With `checkpointing`, the run resumes
    from its newest checkpoint and saves one every `checkpointing.every` steps
    and at the end, so that a run killed during prediction need not train again.
    Batches with more than `max_tokens_per_pass` padded tokens are trained in
    several passes (`memory_passes`), which bounds memory, not the maths.
    Returns the seconds of training done by earlier attempts before the
    checkpoint this one resumed from (0 for a fresh run).
    """
    if teacher_outputs and anneal == "none":  # gold only would silently ignore the teachers it was given
        raise ValueError("fit: teacher_outputs given with anneal='none'")
    fit_started = time.perf_counter()
    engine = accelerator()
    on = engine.device
    model.to(on).train()
    rng = np.random.default_rng(seed)
    sizes = [len(train_sets[task.name]) for task in tasks]
    steps = total_steps(sizes, config.batch_size, config.epochs)
    schedule = task_schedule(sizes, config.task_sampling_alpha, steps, rng)
    lengths = {task.name: column(train_sets[task.name], "length") for task in tasks}
    batches = [
        endless_batches(lambda task_lengths=lengths[task.name]: length_grouped_batches(task_lengths, config.batch_size, rng, config.length_group_batches))
        for task in tasks
    ]
    # The fused kernel updates all parameters in one pass. Profiled on MiniLM, 1 CPU thread: 57-68 ms per step
    # against 360-530 ms for the default update, 11-15% of a step (the embedding matrix is half of MiniLM).
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.learning_rate, config.layerwise_lr_decay, config.weight_decay), lr=config.learning_rate, fused=True
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_fraction * steps), steps)

    if checkpointing is not None:
        checkpointing = _run_key(checkpointing, engine.num_processes)
    first_step, earlier_seconds = _resume(checkpointing, model, optimizer, scheduler, batches, schedule)

    def elapsed() -> float:  # training seconds of this run so far, earlier attempts included
        return earlier_seconds + time.perf_counter() - fit_started

    trained, optimizer = engine.prepare(model, optimizer)
    started, examples, tokens, padded_tokens = time.perf_counter(), 0, 0, 0
    for step in range(first_step, steps):
        task = tasks[schedule[step]]
        indices = next(batches[schedule[step]])
        share, loss_scale = process_share(indices, engine.process_index, engine.num_processes)
        weight = 1.0 if teacher_outputs is None else gold_weight(anneal, step, steps, teacher_weight)
        passes = memory_passes(share, lengths[task.name], max_tokens_per_pass)
        loss_value = 0.0
        for number, (part, part_scale) in enumerate(passes):
            # Gradients add up over the passes; processes exchange them once, after the last.
            with engine.no_sync(trained) if number < len(passes) - 1 else contextlib.nullcontext():
                inputs, labels = collate(train_sets[task.name], part, tokenizer, on)
                teacher = None if teacher_outputs is None else teacher_outputs[task.name][torch.as_tensor(part)]
                targets = batch_targets(task, labels, teacher, weight).to(on)
                with autocast(precision, on):
                    outputs = trained(task.name, inputs)
                loss = task.kind.loss(outputs, targets) * part_scale
                engine.backward(loss * loss_scale)
            loss_value += loss.item()
            padded_tokens += int(lengths[task.name][part].max()) * len(part)
        engine.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        examples += len(indices)
        tokens += int(lengths[task.name][share].sum())
        if progress is not None:
            rate = examples / max(time.perf_counter() - started, 1e-9)
            progress(StepReport(step + 1, steps, loss_value, weight, rate, examples, tokens, padded_tokens))
        if checkpointing is not None and checkpointing.every and (step + 1) % checkpointing.every == 0 and step + 1 < steps:
            _checkpoint(checkpointing, step + 1, model, optimizer, scheduler, elapsed())
    if checkpointing is not None and first_step < steps:
        _checkpoint(checkpointing, steps, model, optimizer, scheduler, elapsed())
    engine.free_memory()  # accelerate keeps every prepared model alive otherwise; a sweep worker trains many
    return earlier_seconds


def _resume(checkpointing: Checkpointing | None, model, optimizer, scheduler, batches: list, schedule) -> tuple[int, float]:
    """The step to start from and the training seconds spent before it: 0, 0 or the newest checkpoint's, whose states are loaded."""
    found = latest_checkpoint(checkpointing) if checkpointing is not None else None
    if found is None:
        return 0, 0.0
    first_step, random_states, seconds = load_checkpoint(found, model, optimizer, scheduler)
    restore_random_state(random_states[accelerator().process_index])
    # The data position: batch order depends only on the seed, so replay it without training.
    for step in range(first_step):
        next(batches[schedule[step]])
    return first_step, seconds


def random_state() -> dict[str, torch.Tensor]:
    """The states of the generators this process's dropout draws from: the CPU's, and the GPU's where there is one."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_random_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


def _checkpoint(checkpointing: Checkpointing, step: int, model, optimizer, scheduler, seconds: float) -> None:
    engine = accelerator()
    random_states = gather(random_state())
    if engine.is_main_process:
        save_checkpoint(checkpointing, step, model, optimizer.optimizer, scheduler, random_states, seconds)
    engine.wait_for_everyone()


def gather(value) -> list:
    """`value` from every process, in process order (just `[value]` with one process)."""
    if accelerator().num_processes == 1:
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


def prediction_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices in batches for prediction: longest first, so batches pad little and the biggest comes early."""
    order = np.argsort(-lengths, kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.inference_mode()
def predict(model: MultiTaskModel, task: Task, dataset, tokenizer, *, precision: str, batch_size: int) -> torch.Tensor:
    """The head's raw outputs (logits, or the scaled value) for every row, in dataset order, as fp32.

    With several processes each predicts every n-th batch and all get the full result.
    """
    engine = accelerator()
    on = engine.device
    model.to(on).eval()
    batches = prediction_batches(column(dataset, "length"), batch_size)
    predicted = []
    for indices in batches[engine.process_index :: engine.num_processes]:
        with autocast(precision, on):
            predicted.append((indices, model(task.name, collate(dataset, indices, tokenizer, on)[0]).float().cpu()))
    outputs = torch.empty(len(dataset), task.output_size)
    for part in gather(predicted):
        for indices, values in part:
            outputs[torch.as_tensor(indices)] = values
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
