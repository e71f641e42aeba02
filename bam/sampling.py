"""Which task each training step draws its batch from.

Tasks are sampled in proportion to |D_task|^alpha (BAM and MT-DNN): alpha = 1
is proportional to size, alpha = 0 is uniform, and the paper's 0.75 gives
small tasks more steps than their share without letting them dominate. Each
batch holds one task's examples; batches of all tasks are interleaved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np


def sampling_weights(sizes: Sequence[int], alpha: float) -> np.ndarray:
    """Probability of drawing each task: |D|^alpha, normalised to sum to 1."""
    powered = np.asarray(sizes, dtype=np.float64) ** alpha
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
