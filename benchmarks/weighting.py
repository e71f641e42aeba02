"""What each loss weighting costs: seconds per training step and peak memory against `equal`, side by side in one run.

    BAM_DATA_DIR=../shared/data/glue HF_HUB_OFFLINE=1 \\
      python benchmarks/weighting.py recipes/glue-mini.toml --batch-size 16 --json weighting.json

Trains the recipe's student (gold labels only) with each method in turn, every
method on the all-tasks sampler, so that each step trains the same batches (one
of every task) and the differences are the methods' own work: the gradient
methods' per-task backward passes and gradient copies, FAMO's second forward
pass. Each measurement is a fresh process (so its peak resident memory is its
own), loading and tokenizing first; `--rounds` rounds of every method, methods
alternating, `--warmup` untimed steps then `--steps` timed ones. The figures to
read: each method's median seconds per step divided by `equal`'s, and its peak
memory minus `equal`'s. Run it on quiet cores (pause a running sweep with
`kill -STOP`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import bam  # noqa: F401  first: keeps oneDNN off AMX on VMs that forbid it (bam/hardware.py)

METHODS = ("equal", "fixed", "uncertainty", "dwa", "dtp", "gradnorm", "mgda", "pcgrad", "famo")


def measure(recipe_path: str, method: str, batch_size: int, warmup: int, steps: int) -> dict:
    """Train warmup + steps steps with `method`; median seconds per timed step and this process's peak resident memory."""
    from bam.config import load_recipe
    from bam.data import data_directories, load_tokenized
    from bam.model import MultiTaskModel, load_encoder, load_tokenizer
    from bam.tasks import resolve
    from bam.training import fit, quiet_libraries, seed_everything

    quiet_libraries()
    settings = [f'student.loss_weighting="{method}"', 'student.step_sampler="all-tasks"', f"student.batch_size={batch_size}"]
    recipe = load_recipe(Path(recipe_path), settings)
    tasks = resolve(recipe)
    tokenizer = load_tokenizer(recipe.model, recipe.max_length)
    prepared = [load_tokenized(task, data_directories(), tokenizer, recipe.max_length)[0] for task in tasks]
    # all-tasks: a step holds one batch of every task, so (warmup + steps) steps take this many epochs.
    epochs = (warmup + steps) * batch_size * len(tasks) / sum(len(data.train) for data in prepared)
    config = dataclasses.replace(recipe.student, anneal="none", epochs=epochs)
    seed_everything(recipe.seed)
    model = MultiTaskModel(load_encoder(recipe.model), tasks, recipe.pooling)
    stamps = []
    fit(
        model, tasks, {data.task.name: data.train for data in prepared}, tokenizer, config, precision=recipe.precision, seed=recipe.seed,
        progress=lambda report: stamps.append(time.perf_counter()), max_tokens_per_pass=recipe.max_tokens_per_pass,
    )  # fmt: skip
    timed = stamps[warmup - 1 :]
    return {
        "seconds_per_step": statistics.median(later - earlier for earlier, later in zip(timed, timed[1:])),
        "peak_resident_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux reports KiB
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated; the first is the baseline")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per task in each step")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    arguments = parser.parse_args()

    import torch

    methods = arguments.methods.split(",")
    measured = {method: [] for method in methods}
    context = multiprocessing.get_context("spawn")
    for _ in range(arguments.rounds):
        for method in methods:
            with ProcessPoolExecutor(1, mp_context=context) as pool:  # a fresh process: its peak memory is this method's alone
                measured[method].append(pool.submit(measure, arguments.recipe, method, arguments.batch_size, arguments.warmup, arguments.steps).result())
    seconds = {method: statistics.median(run["seconds_per_step"] for run in runs) for method, runs in measured.items()}
    memory = {method: max(run["peak_resident_mb"] for run in runs) for method, runs in measured.items()}
    baseline = methods[0]
    results = {
        "recipe": arguments.recipe, "batch_size_per_task": arguments.batch_size, "threads": torch.get_num_threads(),
        "rounds": arguments.rounds, "steps_per_round": arguments.steps, "measurements": measured,
        "median_seconds_per_step": seconds, "relative_time": {method: value / seconds[baseline] for method, value in seconds.items()},
        "peak_resident_mb": memory, "extra_memory_mb": {method: value - memory[baseline] for method, value in memory.items()},
    }  # fmt: skip
    for method in methods:
        print(f"{method:>12}: {seconds[method]:.3f} s/step ({seconds[method] / seconds[baseline]:.2f}x {baseline}), peak {memory[method]:.0f} MB ({memory[method] - memory[baseline]:+.0f})")
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
