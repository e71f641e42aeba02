"""What an answer module or task type costs per training step, against the linear head, side by side in one run.

    BAM_DATA_DIR=../shared/data/nli HF_HUB_OFFLINE=1 python benchmarks/heads.py recipes/qnli-v1-ranking.toml \\
      --variant linear:qnli_v1_classification \\
      --variant 'san:qnli_v1_classification:custom_tasks.qnli_v1_classification.head="san"' \\
      --variant ranking:qnli_v1_ranking:teacher.batch_size=16 --json heads.json

Each `--variant NAME:TASK[:SETTING...]` trains one task of the recipe alone (its
teacher settings, changed by the `--set`-style SETTINGs, separated by `;`), in
the same process: `--rounds` rounds of `--steps` timed steps per variant, the
variants alternating round by round so that a slower or busier moment of the
machine falls on all. Each round starts from a freshly built model and is
preceded by `--warmup` untimed steps. The figure to read is each variant's
median seconds per step divided by the first variant's. Above, the ranking
task's batches of 16 groups hold 32 rows, as the classifier's batches of 32:
the same rows per step, scored two ways (its recipe trains ranking with 32
groups, 64 rows, per step; here the rows are matched to time the loss alone). Run it on quiet cores (pause a running
sweep with `kill -STOP`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import bam  # noqa: F401  first: keeps oneDNN off AMX on VMs that forbid it (bam/hardware.py)

def seconds_per_step(recipe, task, data, tokenizer, warmup: int, steps: int) -> float:
    """Median seconds per timed step of one freshly built model of `task`."""
    from bam.model import MultiTaskModel, load_encoder
    from bam.training import fit, seed_everything

    config = dataclasses.replace(recipe.teacher, epochs=(warmup + steps) * recipe.teacher.batch_size / len(data.train))
    seed_everything(recipe.seed)
    model = MultiTaskModel(load_encoder(recipe.model), [task], recipe.pooling)
    stamps = []
    fit(
        model, [task], {task.name: data.train}, tokenizer, config, precision=recipe.precision, seed=recipe.seed,
        progress=lambda report: stamps.append(time.perf_counter()), max_tokens_per_pass=recipe.max_tokens_per_pass,
    )  # fmt: skip
    timed = stamps[warmup - 1 :]
    return statistics.median(later - earlier for earlier, later in zip(timed, timed[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--variant", action="append", required=True, help="NAME:TASK[:SETTING;SETTING...]; the first is the baseline")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    arguments = parser.parse_args()

    import torch

    from bam.config import load_recipe
    from bam.data import data_directories, load_tokenized
    from bam.model import load_tokenizer
    from bam.tasks import resolve
    from bam.training import quiet_libraries

    quiet_libraries()
    variants = {}
    for given in arguments.variant:
        name, task_name, *settings = given.split(":", 2)
        recipe = load_recipe(arguments.recipe, settings[0].split(";") if settings else [])
        task = resolve(recipe, task_name)[0]
        data = load_tokenized(task, data_directories(), load_tokenizer(recipe.model, recipe.max_length), recipe.max_length)[0]
        variants[name] = (recipe, task, data)
    tokenizer = load_tokenizer(variants[next(iter(variants))][0].model, variants[next(iter(variants))][0].max_length)
    measured = {name: [] for name in variants}
    for _ in range(arguments.rounds):
        for name, (recipe, task, data) in variants.items():
            measured[name].append(seconds_per_step(recipe, task, data, tokenizer, arguments.warmup, arguments.steps))
    medians = {name: statistics.median(values) for name, values in measured.items()}
    baseline = medians[next(iter(medians))]
    results = {
        "recipe": arguments.recipe, "variants": arguments.variant, "threads": torch.get_num_threads(),
        "batch_sizes": {name: recipe.teacher.batch_size for name, (recipe, _, _) in variants.items()},
        "rounds": arguments.rounds, "steps_per_round": arguments.steps,
        "seconds_per_step": measured, "median_seconds_per_step": medians,
        "relative_to_first": {name: value / baseline for name, value in medians.items()},
    }  # fmt: skip
    for name, value in medians.items():
        print(f"{name:>14}: {value:.3f} s/step  ({value / baseline:.2f}x {next(iter(medians))})")
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
