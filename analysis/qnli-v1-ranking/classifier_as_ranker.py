"""The classification models of the qnli-v1-ranking sweep, scored as rankers: does ranking's gain come from its loss or its metric?

Each `qnli_v1_classification` teacher's stored dev outputs give every candidate a
probability of `entailment`; ranking each question's candidates by it gives the
classifier a group accuracy and MRR on exactly the ranking task's dev groups
(the rows of the one dev group that `invalid_groups = "drop"` leaves out are not
scored). Row ids are the dev file's row numbers in both tasks, so the groups are
read from the ranking task's data.

    BAM_DATA_DIR=../shared/data/nli HF_HUB_OFFLINE=1 python analysis/qnli-v1-ranking/classifier_as_ranker.py \
      sweeps/qnli-v1-ranking analysis/qnli-v1-ranking/classifier_as_ranker.csv

It writes one row per seed and prints the medians with one-sided Mann-Whitney
tests (bam.statistics) of the ranking model against the classifier, both as
the paper compares them (each by its own accuracy) and on the same metric.
"""

import sys
from pathlib import Path

import pandas as pd
import torch

from bam.config import load_recipe
from bam.data import data_directories, load_task
from bam.statistics import mann_whitney
from bam.tasks import resolve
from bam.teacher_store import read_predictions

sweep = Path(sys.argv[1])
recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "qnli-v1-ranking.toml")
ranking = resolve(recipe, "qnli_v1_ranking")[0]
dev = load_task(ranking, data_directories()).dev["dev"]
group_of = dict(zip(dev["id"][:], dev["group"][:]))
rows = []
for seed_folder in sorted(sweep.glob("seed*"), key=lambda folder: int(folder.name[4:])):
    classifier = seed_folder / "single" / "qnli_v1_classification" / "dev.safetensors"
    ranker = seed_folder / "single" / "qnli_v1_ranking" / "dev.safetensors"
    if not (classifier.is_file() and ranker.is_file()):
        continue
    stored = read_predictions(classifier)
    kept = torch.tensor([int(row_id) in group_of for row_id in stored.ids.tolist()])
    entailment = torch.log_softmax(stored.outputs[kept], dim=-1)[:, 0].unsqueeze(-1)  # label order: entailment, not_entailment
    positive = (stored.labels[kept] == 0).long()  # the ranking task's label 1 is `entailment`
    groups = torch.tensor([group_of[int(row_id)] for row_id in stored.ids[kept].tolist()])
    as_ranker = ranking.score(positive, entailment, groups)
    ranked = read_predictions(ranker)
    own = ranking.score(ranked.labels, ranked.outputs, ranked.groups)
    rows.append({
        "seed": int(seed_folder.name[4:]), "ranking_accuracy": own["accuracy"], "ranking_mrr": own["mrr"],
        "classifier_accuracy": float((stored.outputs.argmax(dim=-1) == stored.labels).float().mean()) * 100,
        "classifier_as_ranker_accuracy": as_ranker["accuracy"], "classifier_as_ranker_mrr": as_ranker["mrr"],
    })  # fmt: skip
table = pd.DataFrame(rows)
table.to_csv(sys.argv[2], index=False, float_format="%.4f")
print(table.median(numeric_only=True).drop("seed").round(2).to_string())
for other in ("classifier_accuracy", "classifier_as_ranker_accuracy"):
    greater, different = (mann_whitney(table["ranking_accuracy"], table[other], alternative) for alternative in ("greater", "two-sided"))
    print(f"ranking_accuracy against {other}: Mann-Whitney p = {greater.p:.4f} one-sided (ranking greater), {different.p:.4f} two-sided ({len(table)} seeds each)")
