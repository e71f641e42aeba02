"""What an answer module costs per training step: MT-DNN's SAN head against the linear head, side by side in one run.

    BAM_DATA_DIR=../shared/data/glue HF_HUB_OFFLINE=1 \\
      python benchmarks/heads.py recipes/glue-mini.toml --task rte --json heads.json

Trains one pair task of the recipe alone (its teacher settings: batch size,
learning rate) with each head in turn, in the same process, on the same
batches: `--rounds` rounds of `--steps` timed steps per head, the heads
alternating round by round so that a slower or busier moment of the machine
falls on both. Each round starts from a freshly built model and is preceded by
`--warmup` untimed steps. The figure to read is each head's median seconds per
step divided by the linear head's. Run it on quiet cores (pause a running
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

HEADS = ("linear", "san")  # san with MT-DNN's defaults: K = 5 steps


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
    parser.add_argument("--task", default="rte", help="a sentence-pair classification task of the recipe")
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
    recipe = load_recipe(arguments.recipe)
    tokenizer = load_tokenizer(recipe.model, recipe.max_length)
    measured = {name: [] for name in HEADS}
    for _ in range(arguments.rounds):
        for name in HEADS:
            headed = load_recipe(arguments.recipe, [f'custom_tasks.{arguments.task}.head="{name}"'])
            task = resolve(headed, arguments.task)[0]
            data = load_tokenized(task, data_directories(), tokenizer, recipe.max_length)[0]
            measured[name].append(seconds_per_step(headed, task, data, tokenizer, arguments.warmup, arguments.steps))
    medians = {name: statistics.median(values) for name, values in measured.items()}
    results = {
        "recipe": arguments.recipe, "task": arguments.task, "batch_size": recipe.teacher.batch_size, "threads": torch.get_num_threads(),
        "rounds": arguments.rounds, "steps_per_round": arguments.steps,
        "seconds_per_step": measured, "median_seconds_per_step": medians,
        "relative_to_linear": {name: value / medians["linear"] for name, value in medians.items()},
    }  # fmt: skip
    for name, value in medians.items():
        print(f"{name:>8}: {value:.3f} s/step  ({value / medians['linear']:.2f}x linear)")
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
