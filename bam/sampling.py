"""Step samplers: which tasks' examples each optimizer step trains on.

A sampler turns the training sets' sizes (and lengths, for length-grouped
batches) into the plan of the whole run: one `Step` per optimizer step, each a
list of (task index, example indices) parts. The run has as many steps as the
plan; a resumed run replays the same plan from the seed. Three samplers:

    proportional  one task per step, drawn with probability |D|^alpha (BAM and MT-DNN's
                  sampling; alpha = 1 is proportional to size, 0 uniform, 0.75 the paper's)
    epoch-shuffle MT-DNN's loop: every epoch visits every batch of every task once, the
                  batches of all tasks shuffled together
    all-tasks     one batch of every task in every step (what gradient-based loss
                  weighting needs: all tasks' losses at once)

The new samplers give each task its own random generator, keyed by the
task's name, so adding or reordering tasks does not change the batches of the
others. `proportional` keeps the single
generator it has always drawn from (schedule first, then each task's epochs
as they are needed), so its runs keep their numbers.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bam.config import TrainConfig


def sampling_weights(sizes: Sequence[int], alpha: float) -> np.ndarray:
    """Probability of drawing each task: |D|^alpha, normalised to sum to 1.

    Computed as exp(alpha * (log |D| - log max |D|)), so a large alpha tends to all weight on the largest
    task instead of overflowing |D|^alpha to inf (and the probabilities to NaN).
    """
    logs = np.log(np.asarray(sizes, dtype=np.float64))
    powered = np.exp(alpha * (logs - logs.max()))
    return powered / powered.sum()


def total_steps(sizes: Sequence[int], batch_size: int, epochs: float) -> int:
    """Optimizer steps for `epochs` passes over all the training sets together."""
    return max(1, math.ceil(epochs * sum(sizes) / batch_size))


def task_schedule(sizes: Sequence[int], alpha: float, steps: int, rng: np.random.Generator) -> np.ndarray:
    """The task index of every step, drawn independently with `sampling_weights`."""
    if len(sizes) == 1:
        return np.zeros(steps, dtype=np.int64)
    return rng.choice(len(sizes), size=steps, p=sampling_weights(sizes, alpha))


def endless_batches(make_epoch: Callable[[], list[np.ndarray]]) -> Iterator[np.ndarray]:
    """Batches of one task, epoch after epoch, each epoch freshly shuffled by `make_epoch`."""
    while True:
        yield from make_epoch()


def length_grouped_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, group_batches: int = 50) -> list[np.ndarray]:
    """Shuffled batches of similar-length examples, so padding stays small but order stays random.

    The examples are shuffled, cut into groups of `group_batches` batches, sorted
    by length inside each group, split into batches, and the batches shuffled.
    A group as large as the data set sorts all of it: every epoch then cuts
    nearly the same batches, each of one narrow length range.
    """
    order = rng.permutation(len(lengths))
    group = batch_size * group_batches
    batches = []
    for start in range(0, len(order), group):
        chunk = order[start : start + group]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


@dataclass(frozen=True)
class Step:
    """One optimizer step: the examples of each task it trains on."""

    parts: tuple[tuple[int, np.ndarray], ...]  # (task index, example indices), one task at most once


class StepSampler(Protocol):
    name: str

    def plan(self, lengths: dict[str, np.ndarray], config: TrainConfig, seed: int) -> list[Step]:
        """Every step of the run, from each task's example lengths (task name -> lengths, in task order); the same seed gives the same plan."""


def _task_batches(lengths: np.ndarray, config: TrainConfig, rng: np.random.Generator) -> Iterator[np.ndarray]:
    return endless_batches(lambda: length_grouped_batches(lengths, config.batch_size, rng, config.length_group_batches))


def _own_generator(seed: int, name: str) -> np.random.Generator:
    """A generator of its own for one task (or another named purpose), the same whatever the other tasks are."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


class Proportional:
    name = "proportional"

    def plan(self, lengths: dict[str, np.ndarray], config: TrainConfig, seed: int) -> list[Step]:
        rng = np.random.default_rng(seed)
        sizes = [len(task_lengths) for task_lengths in lengths.values()]
        steps = total_steps(sizes, config.batch_size, config.epochs)
        schedule = task_schedule(sizes, config.task_sampling_alpha, steps, rng)
        batches = [_task_batches(task_lengths, config, rng) for task_lengths in lengths.values()]
        return [Step(((int(task), next(batches[task])),)) for task in schedule]


class EpochShuffle:
    name = "epoch-shuffle"

    def plan(self, lengths: dict[str, np.ndarray], config: TrainConfig, seed: int) -> list[Step]:
        task_generators = [_own_generator(seed, name) for name in lengths]
        # Keyed apart from every task name: a task's name is never empty.
        order_generator = _own_generator(seed, "")
        plan: list[Step] = []
        per_epoch = sum(math.ceil(len(task_lengths) / config.batch_size) for task_lengths in lengths.values())
        steps = max(1, math.ceil(config.epochs * per_epoch))  # a fractional last epoch takes the first part of its order
        while len(plan) < steps:
            epoch = [
                Step(((task, batch),))
                for task, task_lengths in enumerate(lengths.values())
                for batch in length_grouped_batches(task_lengths, config.batch_size, task_generators[task], config.length_group_batches)
            ]
            plan.extend(epoch[index] for index in order_generator.permutation(len(epoch)))
        return plan[:steps]


class AllTasks:
    name = "all-tasks"

    def plan(self, lengths: dict[str, np.ndarray], config: TrainConfig, seed: int) -> list[Step]:
        # As many examples over the run as the other samplers: each step holds one batch of every task.
        steps = total_steps([len(task_lengths) for task_lengths in lengths.values()], config.batch_size * len(lengths), config.epochs)
        batches = [_task_batches(task_lengths, config, _own_generator(seed, name)) for name, task_lengths in lengths.items()]
        return [Step(tuple((task, next(task_batches)) for task, task_batches in enumerate(batches))) for _ in range(steps)]


SAMPLERS: dict[str, StepSampler] = {sampler.name: sampler for sampler in (Proportional(), EpochShuffle(), AllTasks())}
