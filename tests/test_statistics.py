import numpy as np
import pytest
from scipy import stats

from bam.statistics import SignedRank, mann_whitney, paired_bootstrap, signed_rank, smallest_p, smallest_signed_rank_p, spread


def test_spread_against_hand_values():
    result = spread([1, 2, 3, 4, 100])
    # median 3; numpy's linear quartiles: 2 and 4 -> IQR 2
    assert (result.median, result.iqr, result.n) == (3.0, 2.0, 5)


def test_mann_whitney_on_a_hand_computed_case():
    # a = (3, 4, 5) against b = (1, 2, 6): a beats b in 2 + 2 + 2 = 6 of 9 pairs.
    # Exact one-sided p: orderings of 6 with U >= 6 out of C(6,3) = 20; U >= 6 in 7 of them -> 0.35.
    result = mann_whitney([3, 4, 5], [1, 2, 6])
    assert result.u == 6 and result.p == pytest.approx(7 / 20) and (result.n_a, result.n_b) == (3, 3)


def test_complete_separation_gives_the_smallest_possible_p():
    a, b = [10, 11, 12, 13, 14], [1, 2, 3, 4, 5]
    assert mann_whitney(a, b).p == pytest.approx(smallest_p(5, 5)) == pytest.approx(1 / 252)
    assert mann_whitney(a, b, "two-sided").p == pytest.approx(smallest_p(5, 5, "two-sided")) == pytest.approx(2 / 252)
    assert smallest_p(3, 3) == pytest.approx(0.05)


def test_mann_whitney_matches_scipy_on_random_scores():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 12), rng.normal(0, 1, 9)
    for alternative in ("greater", "two-sided"):
        expected = stats.mannwhitneyu(a, b, alternative=alternative, method="exact")
        result = mann_whitney(a, b, alternative)
        assert (result.u, result.p) == pytest.approx((expected.statistic, expected.pvalue))


def test_ties_use_an_exact_permutation_test_not_the_normal_approximation():
    # a = (63, 63, 64) against b = (60, 61, 62): a beats b in all 9 pairs, but a ties with itself.
    # Of the C(6,3) = 20 ways to split the six scores, only this one gives U = 9: p = 1/20.
    result = mann_whitney([63, 63, 64], [60, 61, 62])
    assert result.u == 9 and result.p == pytest.approx(1 / 20)
    assert stats.mannwhitneyu([63, 63, 64], [60, 61, 62], alternative="greater").pvalue < 0.05  # what the default says


def test_ties_every_split_agrees_with_scipys_permutation_test():
    rng = np.random.default_rng(1)
    a, b = rng.integers(60, 66, 5).astype(float), rng.integers(58, 64, 6).astype(float)
    for alternative in ("greater", "less", "two-sided"):
        # 462 splits: scipy's permutation test is exact too when it may draw more than that.
        expected = stats.mannwhitneyu(a, b, alternative=alternative, method=stats.PermutationMethod(n_resamples=10_000))
        result = mann_whitney(a, b, alternative)
        assert (result.u, result.p) == pytest.approx((expected.statistic, expected.pvalue)), alternative


def test_one_score_against_several_with_ties():
    # 64 against (60, 62, 64): U = 2.5. Pooled ranks 1, 2, 3.5, 3.5: the lone score is any of them with
    # probability 1/4, so U takes 0, 1, 2.5, 2.5 and P(U >= 2.5) = 1/2.
    result = mann_whitney([64], [60, 62, 64])
    assert result.u == 2.5 and result.p == pytest.approx(0.5)
    assert mann_whitney([64], [60, 62, 64], "two-sided").p == pytest.approx(1.0)


def accuracy(gold, predicted):
    return float(np.mean(gold == predicted))


def test_bootstrap_of_a_system_against_itself_never_shows_it_better():
    gold = np.array([0, 1, 0, 1, 1, 0])
    result = paired_bootstrap(gold, gold, gold, accuracy, samples=200)
    assert result.difference == 0 and result.p == 1.0  # (200 + 1) / (200 + 1)


def test_bootstrap_of_a_clearly_better_system():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 2, 400)
    good = np.where(rng.random(400) < 0.9, gold, 1 - gold)
    poor = np.where(rng.random(400) < 0.6, gold, 1 - gold)
    result = paired_bootstrap(gold, good, poor, accuracy, samples=500)
    assert result.difference == pytest.approx(accuracy(gold, good) - accuracy(gold, poor))
    assert result.p < 0.01
    assert paired_bootstrap(gold, poor, good, accuracy, samples=500).p > 0.99


def test_bootstrap_p_on_hand_computed_cases():
    # Two examples; a is right only on the first, b only on the second, so d = 0.
    # A resample has d* = +1 (both draws first, P 1/4), 0 (P 1/2) or -1 (P 1/4): P(d* >= 0) = 3/4.
    gold = np.array([1, 1])
    a, b = np.array([1, 0]), np.array([0, 1])
    assert paired_bootstrap(gold, a, b, accuracy, samples=4000, seed=3).p == pytest.approx(0.75, abs=0.03)
    # Three examples; a right on all, b right on the first only: d = 2/3, so p counts d* >= 4/3: never.
    gold, a, b = np.array([1, 1, 1]), np.array([1, 1, 1]), np.array([1, 0, 0])
    result = paired_bootstrap(gold, a, b, accuracy, samples=999)
    assert result.difference == pytest.approx(2 / 3) and result.p == pytest.approx(1 / 1000)


def test_signed_rank_on_a_hand_computed_case():
    # Differences (1, 2, -3, 4, 5): W = 1 + 2 + 4 + 5 = 12, so the negative ranks sum to 3. Of the 2**5 = 32
    # sign flips, those whose negative ranks sum to at most 3 are {}, {1}, {2}, {3}, {1, 2}: p = 5/32.
    result = signed_rank([1, 2, -3, 4, 5])
    assert (result.w, result.n) == (12, 5) and result.p == pytest.approx(5 / 32)
    assert signed_rank([1, 2, 3, 4, 5]).p == pytest.approx(smallest_signed_rank_p(5)) == pytest.approx(1 / 32)
    assert signed_rank([-1, -2, -3, -4, -5], "two-sided").p == pytest.approx(smallest_signed_rank_p(5, "two-sided")) == pytest.approx(2 / 32)
    assert smallest_signed_rank_p(4) == pytest.approx(0.0625)  # 4 seeds: no paired result can reach 0.05


def test_signed_rank_drops_zero_differences_and_shares_tied_ranks():
    # (1, 0, -1, 2): the zero goes; |1| and |-1| share rank 1.5, 2 has rank 3: W = 1.5 + 3 = 4.5.
    # The 8 sign flips give W = 0, 1.5, 1.5, 3, 3, 4.5, 4.5, 6: P(W >= 4.5) = 3/8.
    result = signed_rank([1, 0, -1, 2])
    assert (result.w, result.n) == (4.5, 3) and result.p == pytest.approx(3 / 8)
    assert signed_rank([0.0, 0.0]) == signed_rank([]) == SignedRank(0.0, 1.0, 0, "greater")


def test_signed_rank_matches_scipy_on_random_differences():
    rng = np.random.default_rng(2)
    differences = rng.normal(0.4, 1, 11)
    for alternative in ("greater", "less", "two-sided"):
        expected = stats.wilcoxon(differences, alternative=alternative, method="exact")
        result = signed_rank(differences, alternative)
        assert result.p == pytest.approx(expected.pvalue), alternative
        assert result.w == pytest.approx(stats.wilcoxon(differences, alternative="greater").statistic)
