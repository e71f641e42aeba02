"""The classification models of the qnli-v1-ranking sweep, scored as rankers: does ranking's gain come from its loss or its metric?

Each `qnli_v1_classification` teacher's stored dev outputs give every candidate a
probability of `entailment`; ranking each question's candidates by it gives the
classifier a group accuracy and MRR on exactly the ranking task's dev groups
(the rows of the one dev group that `invalid_groups = "drop"` leaves out are not
scored). Row ids are the dev file's row numbers in both tasks, so the groups are
read from the ranking task's data.

    BAM_DATA_DIR=../shared/data/nli HF_HUB_OFFLINE=1 python analysis/qnli-v1-ranking/classifier_as_ranker.py \
      sweeps/qnli-v1-ranking > analysis/qnli-v1-ranking/classifier_as_ranker.csv
"""

import sys
from pathlib import Path

import torch

from bam.config import load_recipe
from bam.data import data_directories, load_task
from bam.tasks import resolve
from bam.teacher_store import read_predictions

sweep = Path(sys.argv[1])
recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "qnli-v1-ranking.toml")
ranking = resolve(recipe, "qnli_v1_ranking")[0]
dev = load_task(ranking, data_directories()).dev["dev"]
group_of = dict(zip(dev["id"][:], dev["group"][:]))
print("seed,ranking_accuracy,ranking_mrr,classifier_accuracy,classifier_as_ranker_accuracy,classifier_as_ranker_mrr")
for seed_folder in sorted(sweep.glob("seed*")):
    classifier = seed_folder / "single" / "qnli_v1_classification" / "dev.safetensors"
    ranker = seed_folder / "single" / "qnli_v1_ranking" / "dev.safetensors"
    if not (classifier.is_file() and ranker.is_file()):
        continue
    rows = read_predictions(classifier)
    kept = torch.tensor([int(row_id) in group_of for row_id in rows.ids.tolist()])
    entailment = torch.log_softmax(rows.outputs[kept], dim=-1)[:, 0].unsqueeze(-1)  # label order: entailment, not_entailment
    positive = (rows.labels[kept] == 0).long()  # the ranking task's label 1 is `entailment`
    groups = torch.tensor([group_of[int(row_id)] for row_id in rows.ids[kept].tolist()])
    as_ranker = ranking.score(positive, entailment, groups)
    own = ranking.score(read_predictions(ranker).labels, read_predictions(ranker).outputs, read_predictions(ranker).groups)
    accuracy = float((rows.outputs.argmax(dim=-1) == rows.labels).float().mean()) * 100
    print(f"{seed_folder.name[4:]},{own['accuracy']:.2f},{own['mrr']:.2f},{accuracy:.2f},{as_ranker['accuracy']:.2f},{as_ranker['mrr']:.2f}")
