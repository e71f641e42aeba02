"""Metrics by name, from scikit-learn and scipy, and the per-task and average scores.

Every metric is reported on GLUE's 0-100 scale. A task's score is the mean of
its metrics over all its evaluation splits (MRPC: F1 and accuracy; STS-B:
Pearson and Spearman; MNLI: matched and mismatched accuracy).

`f1` is GLUE's binary F1 of the second label. `macro_f1` (the CLUE/Tianchi
challenge's score), `micro_f1` and `weighted_f1` are sklearn's `f1_score`
averages over the task's whole label set, so a class that neither the gold
labels nor the predictions contain counts as an F1 of 0 rather than being
left out (sklearn's default when it is not told the labels; the two agree on
any dev set that holds every class).

A ranking task's `accuracy` is the share of groups whose top-scored candidate
is the positive one, and `mrr` the mean over groups of 1 / (the positive's
rank): `bam.task_types.Ranking.metric_inputs` gives each metric, per group,
0 as gold and the positive's 0-based rank as prediction.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as sk

# (gold, predicted, the task's class indices; empty for regression) -> value
MetricFunction = Callable[[np.ndarray, np.ndarray, Sequence[int]], float]


def _f1_average(average: str) -> MetricFunction:
    return lambda gold, predicted, classes: sk.f1_score(gold, predicted, labels=list(classes), average=average, zero_division=0.0)


METRICS: dict[str, MetricFunction] = {
    "accuracy": lambda gold, predicted, classes: sk.accuracy_score(gold, predicted),
    "f1": lambda gold, predicted, classes: sk.f1_score(gold, predicted, pos_label=1, zero_division=0.0),
    "macro_f1": _f1_average("macro"),
    "micro_f1": _f1_average("micro"),
    "weighted_f1": _f1_average("weighted"),
    "mcc": lambda gold, predicted, classes: sk.matthews_corrcoef(gold, predicted),
    "pearson": lambda gold, predicted, classes: stats.pearsonr(gold, predicted).statistic if len(gold) > 1 else np.nan,
    "spearman": lambda gold, predicted, classes: stats.spearmanr(gold, predicted).statistic if len(gold) > 1 else np.nan,
    # A ranking task passes 0 as gold and the 0-based rank of each group's positive as predicted.
    "mrr": lambda gold, predicted, classes: float(np.mean(1.0 / (1.0 + np.asarray(predicted, dtype=np.float64)))),
}


def compute(names: Sequence[str], gold: np.ndarray, predicted: np.ndarray, classes: Sequence[int] = ()) -> dict[str, float]:
    """Each named metric on a 0-100 scale; a correlation of constant predictions (or of one example) counts as 0."""
    results = {}
    for name in names:
        with warnings.catch_warnings():
            # A collapsed model predicts a constant; that is a score of 0, not a warning per batch.
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            value = float(METRICS[name](np.asarray(gold), np.asarray(predicted), classes))
        results[name] = 100.0 * (0.0 if np.isnan(value) else value)
    return results


def task_score(metric_values: Mapping[str, float]) -> float:
    """A task's single score: the mean of all its metric values."""
    return float(np.mean(list(metric_values.values())))


def summarize(per_task: Mapping[str, Mapping[str, float]]) -> dict:
    """The metrics.json layout: every metric plus a `score` per task, and the average score."""
    tasks = {name: {**values, "score": task_score(values)} for name, values in per_task.items()}
    average = float(np.mean([values["score"] for values in tasks.values()])) if tasks else float("nan")
    return {"tasks": tasks, "average": average}
