import numpy as np
import pytest

from bam.sampling import endless_batches, length_grouped_batches, sampling_weights, task_schedule, total_steps


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


def test_length_grouped_batches_cover_every_example_once_with_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 128, size=1000)
    batches = length_grouped_batches(lengths, 16, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([lengths[batch].max() - lengths[batch].min() for batch in batches])
    assert spread < 10  # random batches of 16 would spread by about 110
    again = length_grouped_batches(lengths, 16, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


def test_smaller_length_groups_give_more_random_batches():
    lengths = np.random.default_rng(0).integers(5, 128, size=1000)
    spreads = {}
    for group_batches in (1, 4, 100):
        batches = length_grouped_batches(lengths, 16, np.random.default_rng(1), group_batches)
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
        spreads[group_batches] = np.mean([lengths[batch].max() - lengths[batch].min() for batch in batches])
    assert spreads[1] > 90 and spreads[4] < spreads[1] / 2 and spreads[100] < 3, spreads
    # One group holding the whole set cuts the same batches every epoch, whatever the shuffle (lengths all differ here).
    distinct = np.random.default_rng(2).permutation(1000)
    epochs = [length_grouped_batches(distinct, 16, np.random.default_rng(seed), 100) for seed in (3, 4)]
    assert sorted(map(tuple, map(sorted, epochs[0]))) == sorted(map(tuple, map(sorted, epochs[1])))
