"""The training loop both stages share, and prediction.

A teacher is trained by `fit` on one task with gold targets only; the student
by the same `fit` on all tasks, with each batch's target blended from gold
labels and cached teacher outputs by `bam.distillation`. `fit` is setup (the
step sampler's plan of the whole run, AdamW with warm-up and linear decay, the
loss weighting; or the newest checkpoint), then one `_train_step` per step of
the plan: per-task losses against their targets, the weighting's backward,
clipping, the update, a line of the training log; a checkpoint every N steps.

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
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from bam.checkpoints import Checkpointing, latest_checkpoint, load_checkpoint, save_checkpoint
from bam.config import TrainConfig
from bam.data import column, groups_of
from bam.distillation import blend, gold_weight
from bam.errors import BamError
from bam.files import code_fingerprint
from bam.hardware import resolve_precision
from bam.model import ENCODER_INPUTS, LAYER_INDEX, MultiTaskModel, layer_depth, parameter_groups
from bam.sampling import SAMPLERS, Step
from bam.task_types import Batch
from bam.tasks import Task
from bam.weighting import LossWeighting, build_weighting



@dataclass
class StepReport:
    """What the progress display shows after each step; token counts are cumulative over the run."""

    step: int
    total_steps: int
    loss: float  # this step's loss, summed over the tasks it trained
    gold_weight: float
    examples_per_second: float
    examples: int = 0  # examples trained on so far, all processes
    tokens: int = 0  # real (non-padding) tokens this process has trained on so far
    padded_tokens: int = 0  # the same including padding
    task_losses: dict[str, float] = field(default_factory=dict)  # each task's mean loss over its last 20 steps


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

    # A step trains some tasks' heads, so the other heads get no gradient: DDP must expect that.
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


def autocast(precision: str, device: torch.device):
    """bf16 autocast for the matrix products, or nothing for fp32 ('auto' decides by hardware)."""
    if resolve_precision(precision, device.type) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def collate(dataset, indices: np.ndarray, tokenizer, device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Model inputs for the given rows, padded to the longest of them, and their labels (None for unlabelled text).

    Besides the encoder's inputs they hold `segment_ids` (0 up to and including the
    first separator token, 1 after it), which a pair head reads (`bam.heads.SANHead`).
    """
    rows = dataset[indices.tolist()]
    features = [{name: rows[name][i] for name in ENCODER_INPUTS if name in rows} for i in range(len(indices))]
    padded = tokenizer.pad(features, return_tensors="pt")
    padded["segment_ids"] = segment_ids(padded["input_ids"], tokenizer.sep_token_id)
    labels = torch.as_tensor(np.asarray(rows["label"])) if "label" in rows else None
    return {name: tensor.to(device) for name, tensor in padded.items()}, labels


def segment_ids(input_ids: torch.Tensor, separator: int | None) -> torch.Tensor:
    """Which text each token belongs to: the number of separators strictly before it, at most 1 ([CLS] A [SEP] -> 0, B [SEP] -> 1)."""
    if separator is None:
        return torch.zeros_like(input_ids)
    is_separator = (input_ids == separator).long()
    return (torch.cumsum(is_separator, dim=1) - is_separator).clamp(max=1)


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


def memory_passes(indices: np.ndarray, lengths: np.ndarray, max_tokens: int, sizes: np.ndarray | None = None) -> list[tuple[np.ndarray, float]]:
    """A batch cut into forward/backward passes of at most about `max_tokens` padded tokens each, with their weights.

    Activation memory grows with examples x padded length; a batch whose
    longest example times its size exceeds `max_tokens` is split into equal
    parts, and weighting each part's mean loss by its share of the batch makes
    the summed gradient the whole batch's. Short batches stay whole. The
    indices are batch units (`Units`): with `sizes` (rows per unit, for groups
    of candidates) a pass holds whole units, never part of one.
    """
    rows = len(indices) if sizes is None else int(sizes[indices].sum())
    count = max(1, min(len(indices), math.ceil(int(lengths[indices].max()) * rows / max_tokens)))
    return [(part, len(part) / len(indices)) for part in np.array_split(indices, count)]


@dataclass(frozen=True)
class Units:
    """A training set's rows as the units its batches are made of: each row alone, or each group of candidates whole.

    Samplers, process shares and memory passes all work on unit indices, so a
    ranking group is never split; `rows` turns units back into dataset rows.
    For a task without groups a unit is its row, and everything is as before.
    """

    groups: torch.Tensor | None  # each dataset row's group number (None: no groups)
    order: np.ndarray | None  # dataset rows, each unit's rows together (None: one row per unit, in row order)
    starts: np.ndarray | None  # unit i is order[starts[i] : starts[i + 1]]
    lengths: np.ndarray  # the longest row of each unit, in tokens (what length-grouped batching sorts by)
    sizes: np.ndarray | None  # rows per unit (None: 1 each)

    @classmethod
    def of(cls, dataset) -> "Units":
        lengths, numbers = column(dataset, "length"), groups_of(dataset)
        if numbers is None:
            return cls(None, None, None, lengths, None)
        groups = numbers.numpy()
        order = np.argsort(groups, kind="stable")
        sizes = np.bincount(groups)
        if (sizes == 0).any():  # a number without rows would be an empty unit, planned into batches like the others
            raise BamError(f"group numbers must run 0, 1, ... without gaps ({int(np.flatnonzero(sizes == 0)[0])} has no rows); bam.data numbers them so")
        starts = np.concatenate([[0], np.cumsum(sizes)])
        return cls(numbers, order, starts, np.maximum.reduceat(lengths[order], starts[:-1]), sizes)

    def count(self, units: np.ndarray) -> int:
        """How many rows the units hold."""
        return len(units) if self.sizes is None else int(self.sizes[units].sum())

    def rows(self, units: np.ndarray) -> np.ndarray:
        if self.order is None:
            return units
        return np.concatenate([self.order[self.starts[unit] : self.starts[unit + 1]] for unit in units])


def batch_targets(task: Task, batch: Batch, gold_weight: float) -> torch.Tensor:
    """What the batch is trained towards: gold targets, blended with the teacher's rows when there is a teacher."""
    gold = task.type.gold_targets(batch, task.spec)
    if batch.teacher_rows is None:
        return gold
    return blend(gold, task.type.teacher_targets(batch, task.spec), gold_weight)


def _run_key(checkpointing: Checkpointing, processes: int) -> Checkpointing:
    # A checkpoint from a run with another process count splits batches differently: never resume it.
    key = hashlib.sha256(json.dumps([checkpointing.key, processes]).encode()).hexdigest()
    return Checkpointing(checkpointing.folder, checkpointing.every, key)


@dataclass(frozen=True)
class Teaching:
    """The cached teacher outputs a student trains against, and how the gold label's weight anneals."""

    outputs: dict[str, torch.Tensor]  # task name -> outputs, row-aligned with that task's training set
    anneal: str
    teacher_weight: float = 0.5

    def __post_init__(self):
        if self.anneal == "none":  # gold only would silently ignore the teachers it was given
            raise ValueError("Teaching: teacher outputs given with anneal='none'")

    def gold_weight(self, step: int, steps: int) -> float:
        return gold_weight(self.anneal, step, steps, self.teacher_weight)


@dataclass(frozen=True)
class FitResult:
    """What `fit` leaves besides the trained model."""

    earlier_seconds: float  # training seconds of killed attempts before the checkpoint this run resumed from (0 if fresh)
    log: list[dict]  # one record per step, for train_log.jsonl (bam.train_log)


@dataclass
class _Training:
    """Everything a step needs, built once by `_setup`."""

    model: MultiTaskModel
    tasks: list[Task]
    train_sets: dict
    tokenizer: object
    config: TrainConfig
    precision: str
    teaching: Teaching | None
    max_tokens_per_pass: int
    plan: list[Step]  # unit indices (`Units`) of each task per step
    lengths: dict[str, np.ndarray]  # each training row's length in tokens
    units: dict[str, Units]
    optimizer: torch.optim.Optimizer
    scheduler: object
    weighting: LossWeighting
    trained: torch.nn.Module | None = None  # the model as accelerate prepared it (DDP-wrapped with several processes)

    @property
    def device(self) -> torch.device:
        return accelerator().device

    def gold_weight(self, step: int) -> float:
        return 1.0 if self.teaching is None else self.teaching.gold_weight(step, len(self.plan))


def fit(
    model: MultiTaskModel,
    tasks: list[Task],
    train_sets: dict,
    tokenizer,
    config: TrainConfig,
    *,
    precision: str,
    seed: int,
    teaching: Teaching | None = None,
    progress: ProgressCallback | None = None,
    checkpointing: Checkpointing | None = None,
    max_tokens_per_pass: int = 1 << 62,
) -> FitResult:
    """Train `model` in place on the tasks' training sets: setup, then one `_train_step` per step of the sampler's plan.

    Without `teaching` targets are gold labels; with it, each batch's target is
    blended with the teacher's rows for the same examples, the gold weight
    following `teaching.anneal`. With `checkpointing`, a resumable checkpoint is
    written every `checkpointing.every` steps and once at the end, and a run
    finding one of its own checkpoints resumes from it, so a run killed during
    training, or during prediction, need not train again. Batches with more than
    `max_tokens_per_pass` padded tokens are trained in several passes
    (`memory_passes`), which bounds memory, not the maths.
    """
    fit_started = time.perf_counter()
    run = _setup(model, tasks, train_sets, tokenizer, config, precision, seed, teaching, max_tokens_per_pass)
    if checkpointing is not None:
        checkpointing = _run_key(checkpointing, accelerator().num_processes)
    first_step, earlier_seconds, log = _resume(checkpointing, run)
    run.trained, run.optimizer = accelerator().prepare(model, run.optimizer)

    def elapsed() -> float:  # training seconds of this run so far, earlier attempts included
        return earlier_seconds + time.perf_counter() - fit_started

    meter = _Meter(len(run.plan))
    for step in range(first_step, len(run.plan)):
        entry, counts = _train_step(run, step)
        log.append({"step": step + 1, "tasks": entry})
        report = meter.add(step + 1, entry, counts)
        if progress is not None:
            progress(report)
        if checkpointing is not None and checkpointing.every and (step + 1) % checkpointing.every == 0 and step + 1 < len(run.plan):
            _checkpoint(checkpointing, step + 1, run, elapsed(), log)
    if checkpointing is not None and first_step < len(run.plan):
        _checkpoint(checkpointing, len(run.plan), run, elapsed(), log)
    accelerator().free_memory()  # accelerate keeps every prepared model alive otherwise; a sweep worker trains many
    return FitResult(earlier_seconds, log)


def _setup(model, tasks, train_sets, tokenizer, config: TrainConfig, precision, seed, teaching, max_tokens_per_pass) -> _Training:
    """The plan of every step, the optimizer with its schedule, and the loss weighting."""
    model.to(device()).train()
    lengths = {task.name: column(train_sets[task.name], "length") for task in tasks}
    units = {task.name: Units.of(train_sets[task.name]) for task in tasks}
    plan = SAMPLERS[config.step_sampler].plan({task.name: units[task.name].lengths for task in tasks}, config, seed)
    if accelerator().num_processes > 1 and any(len(step.parts) > 1 for step in plan):
        # DDP marks a parameter unused from the last forward before a backward; two tasks' forwards before one
        # backward would make it see the first task's head twice, and fail.
        raise BamError(f"step_sampler {config.step_sampler!r} trains several tasks per step, which bam cannot yet split over processes; run it in one process")
    weighting = build_weighting(
        config.loss_weighting, {task.name: task.type.likelihood for task in tasks}, config.loss_weighting_options, math.ceil(len(plan) / config.epochs)
    ).to(device())
    if not weighting.runs_in_several_processes and accelerator().num_processes > 1:
        # Its state would follow each process's own share of the batches, and drift apart between processes.
        raise BamError(f"loss_weighting {config.loss_weighting!r} keeps state from each step's losses or gradients, which bam does not share between processes; run it in one process")
    weighting.attach(*shared_parameters(model))
    groups = parameter_groups(model, config.learning_rate, config.layerwise_lr_decay, config.weight_decay)
    if learnable := [parameter for parameter in weighting.parameters() if parameter.requires_grad]:
        groups.append({"params": learnable, "lr": config.learning_rate, "weight_decay": 0.0})
    # The fused kernel updates all parameters in one pass. Profiled on MiniLM, 1 CPU thread: 57-68 ms per step
    # against 360-530 ms for the default update, 11-15% of a step (the embedding matrix is half of MiniLM).
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, fused=True)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_fraction * len(plan)), len(plan))
    return _Training(model, tasks, train_sets, tokenizer, config, precision, teaching, max_tokens_per_pass, plan, lengths, units, optimizer, scheduler, weighting)


def shared_parameters(model: MultiTaskModel) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """The encoder's parameters (what all tasks share), and those of its last numbered layer (GradNorm's W)."""
    named = [(name, parameter) for name, parameter in model.named_parameters() if name.startswith("encoder.") and parameter.requires_grad]
    layers = model.encoder.config.num_hidden_layers
    last = [parameter for name, parameter in named if layer_depth(name, layers) == 0 and LAYER_INDEX.search(name)]
    return [parameter for _, parameter in named], last


def _train_step(run: _Training, step: int) -> tuple[dict[str, dict[str, float]], tuple[int, int, int]]:
    """One optimizer step of the plan: per-task losses, the weighting's backward, clipping, the update.

    Returns the step's log entry per task, and the examples (all processes),
    real tokens and padded tokens (this process) it trained on. Each task's
    batch is split between processes, then into memory passes; pass n of every
    task forms round n, whose losses the weighting combines in one backward.
    """
    processes = accelerator()
    rounds: list[list[tuple[Task, np.ndarray, float, float]]] = []
    examples = tokens = 0
    for task_index, indices in run.plan[step].parts:
        task, units = run.tasks[task_index], run.units[run.tasks[task_index].name]
        share, process_scale = process_share(indices, processes.process_index, processes.num_processes)
        for number, (part, part_scale) in enumerate(memory_passes(share, units.lengths, run.max_tokens_per_pass, units.sizes)):
            if number == len(rounds):
                rounds.append([])
            rounds[number].append((task, units.rows(part), part_scale, process_scale))
        examples += units.count(indices)
        tokens += int(run.lengths[task.name][units.rows(share)].sum())
    gold_weight, losses, weights, padded_tokens = run.gold_weight(step), defaultdict(float), {}, 0
    for number, passes in enumerate(rounds):
        # Gradients add up over the rounds; processes exchange them once, after the last.
        with processes.no_sync(run.trained) if number < len(rounds) - 1 else contextlib.nullcontext():
            scaled, kpis, means = {}, {}, {}
            for task, part, part_scale, process_scale in passes:
                loss, kpis[task.name] = _pass_loss(run, task, part, gold_weight)
                means[task.name] = loss.item()
                loss = loss * part_scale
                scaled[task.name] = loss * process_scale
                losses[task.name] += loss.item()
                padded_tokens += int(run.lengths[task.name][part].max()) * len(part)
            weights.update(run.weighting.backward(scaled, processes.backward, kpis, means))
    weights.update(run.weighting.combine())  # the gradient methods write the encoder's gradient from the tasks' here
    gradient_norm = processes.clip_grad_norm_(run.model.parameters(), run.config.max_grad_norm)
    _check_finite(losses, float(gradient_norm), step)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.weighting.end_step(dict(losses), _losses_after_step(run, rounds, gold_weight) if run.weighting.needs_losses_after_step else None)
    entry = {name: {"loss": loss, "gold_weight": gold_weight, "loss_weight": weights[name]} for name, loss in losses.items()}
    return entry, (examples, tokens, padded_tokens)


def _check_finite(losses: dict[str, float], gradient_norm: float, step: int) -> None:
    """Stop at the first step whose loss or gradient is not a finite number, before it reaches the weights.

    Training on would only write a model, outputs and metrics of NaN that look like
    results; the checkpoints from before the divergence are kept.
    """
    for name, loss in losses.items():
        if not math.isfinite(loss):
            raise BamError(f"task {name!r}, step {step + 1}: the training loss is {loss} (learning rate too high? non-finite teacher outputs?)")
    if not math.isfinite(gradient_norm):
        raise BamError(f"step {step + 1}: the gradient norm is {gradient_norm} (learning rate too high?)")


@torch.no_grad()
def _losses_after_step(run: _Training, rounds: list, gold_weight: float) -> dict[str, float]:
    """The step's batches scored again after the update, each task's loss summed over its passes as before it (FAMO)."""
    after: dict[str, float] = defaultdict(float)
    for passes in rounds:
        for task, part, part_scale, _ in passes:
            after[task.name] += _pass_loss(run, task, part, gold_weight)[0].item() * part_scale
    return dict(after)


def _pass_loss(run: _Training, task: Task, part: np.ndarray, gold_weight: float) -> tuple[torch.Tensor, float | None]:
    """The mean loss of one pass: some examples of one task, against their (blended) targets; and the batch's KPI if the weighting reads it."""
    inputs, labels = collate(run.train_sets[task.name], part, run.tokenizer, run.device)
    rows = torch.as_tensor(part)
    teacher_rows = None if run.teaching is None else run.teaching.outputs[task.name][rows]
    groups = run.units[task.name].groups
    batch = Batch(labels, teacher_rows, None if groups is None else groups[rows])
    targets = batch_targets(task, batch, gold_weight).to(run.device)
    with autocast(run.precision, run.device):
        outputs = run.trained(task.name, inputs)
    kpi = task.type.kpi(outputs.detach(), batch, task.spec) if run.weighting.needs_kpi else None
    return task.type.loss(outputs, targets, batch, task.spec), kpi


class _Meter:
    """Running counts for the progress display: throughput, tokens, and each task's recent losses."""

    def __init__(self, total_steps: int, window: int = 20):
        self.total_steps, self.started = total_steps, time.perf_counter()
        self.examples = self.tokens = self.padded_tokens = 0
        self.recent: dict[str, deque] = defaultdict(lambda: deque(maxlen=window))

    def add(self, step: int, entry: dict, counts: tuple[int, int, int]) -> StepReport:
        examples, tokens, padded_tokens = counts
        self.examples, self.tokens, self.padded_tokens = self.examples + examples, self.tokens + tokens, self.padded_tokens + padded_tokens
        for name, values in entry.items():
            self.recent[name].append(values["loss"])
        rate = self.examples / max(time.perf_counter() - self.started, 1e-9)
        gold_weight = next(iter(entry.values()))["gold_weight"]
        running = {name: float(np.mean(values)) for name, values in self.recent.items()}
        loss = sum(values["loss"] for values in entry.values())
        return StepReport(step, self.total_steps, loss, gold_weight, rate, self.examples, self.tokens, self.padded_tokens, running)


def _resume(checkpointing: Checkpointing | None, run: _Training) -> tuple[int, float, list[dict]]:
    """The step to start from, the training seconds spent before it, and the log so far: 0, 0, [] or the newest checkpoint's."""
    found = latest_checkpoint(checkpointing) if checkpointing is not None else None
    if found is None:
        return 0, 0.0, []
    resumed = load_checkpoint(found, run.model, run.optimizer, run.scheduler, run.weighting)
    restore_random_state(resumed.random_states[accelerator().process_index])
    return resumed.step, resumed.seconds, resumed.log


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


def _checkpoint(checkpointing: Checkpointing, step: int, run: _Training, seconds: float, log: list[dict]) -> None:
    random_states = gather(random_state())
    if accelerator().is_main_process:
        save_checkpoint(checkpointing, step, run.model, run.optimizer.optimizer, run.scheduler, random_states, seconds, weighting=run.weighting, log=log)
    accelerator().wait_for_everyone()


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
def predict(
    model: MultiTaskModel, task: Task, dataset, tokenizer, *, precision: str, batch_size: int, on_batch: Callable[[int], None] | None = None
) -> torch.Tensor:
    """The head's raw outputs (logits, or the scaled value) for every row, in dataset order, as fp32.

    With several processes each predicts every n-th batch and all get the full result.
    `on_batch` hears how many examples each finished batch held (for a progress bar).
    """
    processes = accelerator()
    model.to(processes.device).eval()
    batches = prediction_batches(column(dataset, "length"), batch_size)
    predicted = []
    for indices in batches[processes.process_index :: processes.num_processes]:
        with autocast(precision, processes.device):
            inputs = collate(dataset, indices, tokenizer, processes.device)[0]
            predicted.append((indices, model(task.name, inputs).float().cpu()))
        if on_batch is not None:
            on_batch(len(indices))
    outputs = torch.empty(len(dataset), task.output_size)
    for part in gather(predicted):
        for indices, values in part:
            outputs[torch.as_tensor(indices)] = values
    model.train()
    return outputs


def evaluate(model: MultiTaskModel, task: Task, dev_sets: dict, tokenizer, *, precision: str, batch_size: int):
    """Per-split outputs and the task's metrics; with several splits, metric names get the split as prefix."""
    outputs = {split: predict(model, task, dataset, tokenizer, precision=precision, batch_size=batch_size) for split, dataset in dev_sets.items()}
    return outputs, task.score_splits({split: (torch.as_tensor(column(dataset, "label")), outputs[split], groups_of(dataset)) for split, dataset in dev_sets.items()})
