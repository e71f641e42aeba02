"""The significance tests of seed sweeps, as pure functions.

Results on small GLUE tasks move by points from seed to seed, so a claim is a
median over seeds tested with Mann-Whitney U (as the BAM paper does for its
ablations), and a difference between two runs on one dev set is tested with a
paired bootstrap over dev examples (as the paper does for its dev-set table).
Runs with the same seed share their data order, so the same-seed differences of
two conditions are also tested with the Wilcoxon signed-rank test.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import comb

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Spread:
    """Median, inter-quartile range and count of a set of scores."""

    median: float
    iqr: float
    n: int


def spread(scores: Sequence[float]) -> Spread:
    values = np.asarray(scores, dtype=float)
    low, high = np.percentile(values, [25, 75])
    return Spread(float(np.median(values)), float(high - low), len(values))


@dataclass(frozen=True)
class MannWhitney:
    """Mann-Whitney U of scores `a` against `b`: U counts the pairs where a beats b (ties count half)."""

    u: float
    p: float
    n_a: int
    n_b: int
    alternative: str


def mann_whitney(a: Sequence[float], b: Sequence[float], alternative: str = "greater") -> MannWhitney:
    """scipy's test; "greater" asks whether `a` tends to be larger than `b`.

    Without ties, scipy's exact distribution. With ties (common: dev-set scores
    take few values) not scipy's default normal approximation but a permutation
    test: over every split of the pooled scores while there are at most 100,000
    (scipy's own refuses a side with one score), else 9,999 random ones.
    """
    has_ties = len(set(map(float, a)) | set(map(float, b))) < len(a) + len(b)
    if has_ties and comb(len(a) + len(b), len(a)) <= 100_000:
        return _every_split(np.asarray(a, dtype=float), np.asarray(b, dtype=float), alternative)
    method = stats.PermutationMethod(n_resamples=9999, random_state=0) if has_ties else "exact"
    result = stats.mannwhitneyu(a, b, alternative=alternative, method=method)
    return MannWhitney(float(result.statistic), float(result.pvalue), len(a), len(b), alternative)


def _every_split(a: np.ndarray, b: np.ndarray, alternative: str) -> MannWhitney:
    """The exact permutation test: U of `a`, compared with U of every way to pick len(a) of the pooled scores."""
    ranks = stats.rankdata(np.concatenate([a, b]))  # ties share their mean rank
    offset = len(a) * (len(a) + 1) / 2
    u = ranks[: len(a)].sum() - offset
    picks = np.array(list(itertools.combinations(range(len(ranks)), len(a))))
    split_u = ranks[picks].sum(axis=1) - offset
    tolerance = 1e-9 * max(1.0, abs(u))  # sums of half ranks in another order
    greater, less = np.mean(split_u >= u - tolerance), np.mean(split_u <= u + tolerance)
    p = {"greater": greater, "less": less, "two-sided": min(1.0, 2 * min(greater, less))}[alternative]
    return MannWhitney(float(u), float(p), len(a), len(b), alternative)


def smallest_p(n_a: int, n_b: int, alternative: str = "greater") -> float:
    """The smallest p-value the exact Mann-Whitney test can give with these sample sizes.

    The most extreme ordering (every a above every b) is one of C(n_a + n_b, n_a)
    equally likely orderings under the null; two-sided doubles it. With 3 seeds
    against 3 that is 0.05 one-sided: no result can be significant at 0.05.
    """
    p = 1 / comb(n_a + n_b, n_a)
    return min(1.0, 2 * p) if alternative == "two-sided" else p


@dataclass(frozen=True)
class SignedRank:
    """Wilcoxon signed-rank test of paired differences: W sums the ranks of |difference| over the positive ones."""

    w: float
    p: float
    n: int  # the non-zero differences; zero ones carry no sign and are dropped (Wilcoxon's own rule)
    alternative: str


def signed_rank(differences: Sequence[float], alternative: str = "greater") -> SignedRank:
    """scipy's test of whether paired differences (target minus other, one per seed) lean positive.

    Exact over every sign flip: scipy's exact distribution without ties, a
    permutation test over the sign flips with them (exact up to 13 pairs).
    The smallest possible one-sided p is 1 / 2**n: 0.031 with 5 pairs.
    """
    nonzero = np.asarray([value for value in map(float, differences) if value != 0.0])
    if len(nonzero) == 0:
        return SignedRank(0.0, 1.0, 0, alternative)
    has_ties = len(set(np.abs(nonzero))) < len(nonzero)
    method = stats.PermutationMethod(n_resamples=9999, random_state=0) if has_ties else "exact"
    p = stats.wilcoxon(nonzero, alternative=alternative, method=method).pvalue
    w = stats.rankdata(np.abs(nonzero))[nonzero > 0].sum()  # scipy's two-sided statistic is min(W, W-) instead
    return SignedRank(float(w), float(p), len(nonzero), alternative)


def smallest_signed_rank_p(n: int, alternative: str = "greater") -> float:
    """The smallest p-value the exact signed-rank test can give with n non-zero pairs.

    Every difference positive is one of 2**n equally likely sign patterns under
    the null; two-sided doubles it. With 4 pairs that is 0.0625: no result can be
    significant at 0.05.
    """
    p = 0.5**n
    return min(1.0, 2 * p) if alternative == "two-sided" else p


@dataclass(frozen=True)
class Bootstrap:
    """A paired bootstrap of metric(a) - metric(b) over resampled dev examples."""

    difference: float
    p: float
    samples: int


def paired_bootstrap(
    gold: np.ndarray,
    predicted_a: np.ndarray,
    predicted_b: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    samples: int = 1000,
    seed: int = 0,
) -> Bootstrap:
    """One-sided test of "a is better than b" on the same examples (Berg-Kirkpatrick et al., 2012).

    Each sample draws the dev examples with replacement and recomputes the
    difference d* of the two systems' metric. Under the null the bootstrap
    distribution is shifted by the observed difference d, so p is the share of
    samples with d* >= 2d, counted as (k + 1) / (samples + 1) so it is never 0.
    """
    gold, predicted_a, predicted_b = map(np.asarray, (gold, predicted_a, predicted_b))
    rng = np.random.default_rng(seed)
    observed = metric(gold, predicted_a) - metric(gold, predicted_b)
    at_least_twice = 0
    for _ in range(samples):
        rows = rng.integers(0, len(gold), size=len(gold))
        if metric(gold[rows], predicted_a[rows]) - metric(gold[rows], predicted_b[rows]) >= 2 * observed:
            at_least_twice += 1
    return Bootstrap(float(observed), (at_least_twice + 1) / (samples + 1), samples)
