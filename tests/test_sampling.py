import numpy as np
import pytest

from bam.config import TrainConfig
from bam.sampling import SAMPLERS, endless_batches, length_grouped_batches, sampling_weights, task_schedule, total_steps


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


def _config(**settings) -> TrainConfig:
    return TrainConfig(**{"batch_size": 4, "epochs": 2.0, "length_group_batches": 2, **settings})


def _lengths(*sizes: int) -> dict[str, np.ndarray]:
    return {f"task{index}": np.arange(size) % 5 + 3 for index, size in enumerate(sizes)}


def test_proportional_plan_is_the_schedule_then_each_tasks_batches_from_one_generator():
    lengths, config = _lengths(10, 7), _config()
    plan = SAMPLERS["proportional"].plan(lengths, config, seed=3)
    # The same draws by hand: the whole schedule first, then each task's epochs as the steps need them.
    rng = np.random.default_rng(3)
    schedule = task_schedule([10, 7], config.task_sampling_alpha, total_steps([10, 7], 4, 2.0), rng)
    batches = [endless_batches(lambda task_lengths=task_lengths: length_grouped_batches(task_lengths, 4, rng, 2)) for task_lengths in lengths.values()]
    assert len(plan) == len(schedule) == 9  # ceil(2 * 17 / 4)
    for step, task in zip(plan, schedule):
        (part_task, indices), = step.parts
        assert part_task == task and indices.tolist() == next(batches[task]).tolist()


def test_epoch_shuffle_visits_every_batch_of_every_task_once_per_epoch():
    plan = SAMPLERS["epoch-shuffle"].plan(_lengths(10, 7), _config(), seed=0)
    assert len(plan) == 2 * (3 + 2)  # ceil(10/4) + ceil(7/4) batches per epoch, 2 epochs
    for epoch in (plan[:5], plan[5:]):
        seen = {0: [], 1: []}
        for step in epoch:
            (task, indices), = step.parts
            seen[task].extend(indices.tolist())
        assert sorted(seen[0]) == list(range(10)) and sorted(seen[1]) == list(range(7))
    tasks_in_order = [step.parts[0][0] for step in plan]
    assert tasks_in_order != sorted(tasks_in_order)  # the tasks' batches are shuffled together, not one task after the other


def test_epoch_shuffle_takes_the_first_part_of_a_fractional_last_epoch():
    assert len(SAMPLERS["epoch-shuffle"].plan(_lengths(10, 7), _config(epochs=1.5), seed=0)) == 8  # ceil(1.5 * 5)


def test_all_tasks_puts_a_batch_of_every_task_in_every_step():
    plan = SAMPLERS["all-tasks"].plan(_lengths(10, 7, 5), _config(), seed=0)
    assert len(plan) == 4  # ceil(2 * 22 / (4 * 3)): about as many examples as the other samplers
    assert all([task for task, _ in step.parts] == [0, 1, 2] for step in plan)
    first_epoch_of_task_2 = [index for step in plan[:2] for task, indices in step.parts if task == 2 for index in indices.tolist()]
    assert sorted(first_epoch_of_task_2) == list(range(5))  # 5 rows: batches of 4 and 1, then a new epoch


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_plans_are_a_function_of_the_seed(name):
    def flat(plan):
        return [(task, indices.tolist()) for step in plan for task, indices in step.parts]

    lengths = _lengths(10, 7)
    assert flat(SAMPLERS[name].plan(lengths, _config(), seed=1)) == flat(SAMPLERS[name].plan(lengths, _config(), seed=1))
    assert flat(SAMPLERS[name].plan(lengths, _config(), seed=1)) != flat(SAMPLERS[name].plan(lengths, _config(), seed=2))


def _batches_of(plan, task) -> list[list[int]]:
    return [indices.tolist() for step in plan for part_task, indices in step.parts if part_task == task]


def test_epoch_shuffle_gives_each_task_its_own_generator():
    """Adding a task leaves the batches of the others as they were; only their place in the shuffled order moves."""
    two = SAMPLERS["epoch-shuffle"].plan(_lengths(10, 7), _config(), seed=4)
    three = SAMPLERS["epoch-shuffle"].plan(_lengths(10, 7, 6), _config(), seed=4)
    # Epochs of 3 + 2 and 3 + 2 + 2 batches; the second epoch shows whether task 2's draws moved the others'.
    for task in (0, 1):
        for two_epoch, three_epoch in ((two[:5], three[:7]), (two[5:], three[7:])):
            assert sorted(_batches_of(three_epoch, task)) == sorted(_batches_of(two_epoch, task))


def test_all_tasks_gives_each_task_its_own_generator():
    two = SAMPLERS["all-tasks"].plan(_lengths(10, 7), _config(), seed=4)
    three = SAMPLERS["all-tasks"].plan(_lengths(10, 7, 6), _config(), seed=4)
    shared = min(len(two), len(three))
    assert _batches_of(three, 0)[:shared] == _batches_of(two, 0)[:shared] and _batches_of(three, 1)[:shared] == _batches_of(two, 1)[:shared]


def test_a_huge_sampling_exponent_picks_the_largest_task_instead_of_overflowing():
    weights = sampling_weights([100, 60, 100], 1000.0)
    assert np.isfinite(weights).all() and weights.tolist() == pytest.approx([0.5, 0.0, 0.5])
    assert sampling_weights([4, 1], 0.5).tolist() == pytest.approx([2 / 3, 1 / 3])  # sqrt: 2 and 1


def test_a_task_keeps_its_batches_when_another_is_put_before_it():
    b = {"b": np.arange(7) % 5 + 3}
    alone, behind = (SAMPLERS["epoch-shuffle"].plan(lengths, _config(), seed=4) for lengths in (b, {"a": np.arange(10) % 5 + 3, **b}))
    assert sorted(_batches_of(behind[:5], 1)) == sorted(_batches_of(alone[:2], 0))  # the first epoch: 3 + 2 and 2 batches
    alone, behind = (SAMPLERS["all-tasks"].plan(lengths, _config(), seed=4) for lengths in (b, {"a": np.arange(10) % 5 + 3, **b}))
    shared = min(len(alone), len(behind))
    assert _batches_of(behind, 1)[:shared] == _batches_of(alone, 0)[:shared]
