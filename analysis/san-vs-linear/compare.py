"""SAN against the linear head, task by task, from the sweep's results.csv.

`bam report` compares conditions; here the two heads are two tasks of one
condition (`rte` against `rte_san`, `mrpc` against `mrpc_san`), so this script
pairs them by seed and applies the same tests (bam.statistics): medians and
IQRs, Mann-Whitney of SAN against linear, and the Wilcoxon signed-rank test of
the same-seed differences, one-sided (SAN > linear, the paper's claim) and
two-sided.

    python analysis/san-vs-linear/compare.py analysis/san-vs-linear/results.csv
"""

import sys

import pandas as pd

from bam.statistics import mann_whitney, signed_rank, spread

results = pd.read_csv(sys.argv[1])
single = results[results.condition == "single"]
for task in ("rte", "mrpc"):
    linear = single[single.task == task].set_index("seed").score
    san = single[single.task == f"{task}_san"].set_index("seed").score
    seeds = sorted(set(linear.index) & set(san.index))
    linear, san = linear.loc[seeds], san.loc[seeds]
    differences = (san - linear).tolist()
    print(f"## {task.upper()} ({len(seeds)} seeds: {', '.join(map(str, seeds))})")
    for name, scores in (("linear", linear), ("SAN", san)):
        summary = spread(scores.tolist())
        print(f"{name:>7}: median {summary.median:.2f} (IQR {summary.iqr:.2f}); runs {', '.join(f'{value:.2f}' for value in scores)}")
    print(f"SAN - linear per seed: {', '.join(f'{value:+.2f}' for value in differences)}; median {spread(differences).median:+.2f}")
    for alternative in ("greater", "two-sided"):
        test, paired = mann_whitney(san.tolist(), linear.tolist(), alternative), signed_rank(differences, alternative)
        print(f"{alternative:>9}: Mann-Whitney U = {test.u:g}, p = {test.p:.3f}; signed-rank W = {paired.w:g}, p = {paired.p:.3f} ({paired.n} non-zero pairs)")
    print()
