import numpy as np
import pytest

from bam.sampling import endless_batches, sampling_weights, task_schedule, total_steps


def test_weights_follow_size_to_the_alpha():
    # sizes 100 and 1600 with alpha 0.5: 10 and 40 -> 0.2 and 0.8.
    assert sampling_weights([100, 1600], 0.5).tolist() == pytest.approx([0.2, 0.8])
    assert sampling_weights([100, 300], 1.0).tolist() == pytest.approx([0.25, 0.75])
    assert sampling_weights([100, 300], 0.0).tolist() == pytest.approx([0.5, 0.5])


def test_sampled_task_frequencies_match_size_to_the_alpha():
    sizes, steps = [2490, 3668, 5749, 8551], 40_000
    schedule = task_schedule(sizes, 0.75, steps, np.random.default_rng(0))
    observed = np.bincount(schedule, minlength=4) / steps
    expected = sampling_weights(sizes, 0.75)
    # Binomial standard error at 40k draws is at most 0.0025; allow four of them.
    assert np.abs(observed - expected).max() < 0.01
    # And not simply proportional: the smallest task gets more than its share of examples.
    assert observed[0] > sizes[0] / sum(sizes) + 0.01


def test_total_steps_cover_the_epochs():
    assert total_steps([100, 60], batch_size=32, epochs=2) == 10
    assert total_steps([10], batch_size=32, epochs=1) == 1


def test_endless_batches_reshuffle_each_epoch():
    epochs = iter([[1, 2], [3]])
    batches = endless_batches(lambda: next(epochs))
    assert [next(batches) for _ in range(3)] == [1, 2, 3]
