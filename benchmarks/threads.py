"""One run with every core, or one single-threaded run per core? Student training throughput, side by side in one run.

    BAM_DATA_DIR=../shared/data/glue:../shared/data/nli HF_HUB_OFFLINE=1 \\
      python benchmarks/threads.py recipes/glue-nli-mini.toml --json threads.json

A sweep can give each run all the cores (`--workers 1`: one run with N
threads) or one core each (`--workers N`: N single-threaded runs at once).
Which finishes a sweep sooner depends on how well one run's matrix products
use a second thread against how much two runs slow each other down (memory
bandwidth, shared cache). This trains the recipe's student (gold labels only,
its batch size, its task mix) for `--warmup` + `--steps` steps:

- once with `--cores` threads, alone on the machine;
- `--cores` times at once, each process with one thread pinned to its own core.

Each measurement runs in fresh processes that load and tokenize first, and
only the steps after the warm-up are timed. The figure to read is the ratio
of the summed examples/s of the single-threaded runs to the examples/s of the
one multi-threaded run: above 1, a sweep is faster with one run per core.
Run it on quiet cores (pause a running sweep with `kill -STOP`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import bam  # noqa: F401  first: keeps oneDNN off AMX on VMs that forbid it (bam/hardware.py)


def train_steps(recipe_path: str, core: int | None, threads: int, warmup: int, steps: int, start_at: float) -> dict:
    """Train the recipe's student for warmup + steps steps; examples/s over the timed steps."""
    import torch

    from bam.config import load_recipe
    from bam.data import data_directories, load_tokenized
    from bam.model import MultiTaskModel, load_encoder, load_tokenizer
    from bam.tasks import resolve
    from bam.training import fit, quiet_libraries, seed_everything

    if core is not None:
        os.sched_setaffinity(0, {core})
    torch.set_num_threads(threads)
    quiet_libraries()
    recipe = load_recipe(Path(recipe_path))
    tasks = resolve(recipe)
    tokenizer = load_tokenizer(recipe.model, recipe.max_length)
    prepared = [load_tokenized(task, data_directories(), tokenizer, recipe.max_length)[0] for task in tasks]
    total_examples = sum(len(data.train) for data in prepared)
    config = dataclasses.replace(recipe.student, anneal="none", epochs=(warmup + steps) * recipe.student.batch_size / total_examples)
    seed_everything(recipe.seed)
    model = MultiTaskModel(load_encoder(recipe.model), tasks, recipe.pooling)
    while time.time() < start_at:  # the side-by-side runs start training together, after each has loaded
        time.sleep(0.05)
    reports = []
    fit(
        model, tasks, {data.task.name: data.train for data in prepared}, tokenizer, config, precision=recipe.precision, seed=recipe.seed,
        progress=lambda report: reports.append((time.perf_counter(), report.examples)), max_tokens_per_pass=recipe.max_tokens_per_pass,
    )  # fmt: skip
    (started, first), (ended, last) = reports[warmup - 1], reports[-1]
    return {"core": core, "threads": threads, "steps": len(reports) - warmup, "examples_per_second": (last - first) / (ended - started),
            "timed_seconds": ended - started}  # fmt: skip


def measure(recipe: str, processes: int, threads: int, warmup: int, steps: int, pin: bool, load_seconds: float) -> list[dict]:
    """`processes` fresh processes training at once, each with `threads` threads (pinned to its own core if `pin`)."""
    start_at = time.time() + load_seconds
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(train_steps, recipe, index if pin else None, threads, warmup, steps, start_at) for index in range(processes)]
        return [future.result() for future in futures]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", help="the recipe whose student is trained")
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--load-seconds", type=float, default=90, help="time given to every process to load before training starts together")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    arguments = parser.parse_args()
    cores = arguments.cores
    print(f"measuring 1 run x {cores} threads ...", file=sys.stderr, flush=True)
    together = measure(arguments.recipe, 1, cores, arguments.warmup, arguments.steps, False, arguments.load_seconds)[0]
    print(f"measuring {cores} runs x 1 thread, side by side ...", file=sys.stderr, flush=True)
    apart = measure(arguments.recipe, cores, 1, arguments.warmup, arguments.steps, True, arguments.load_seconds)
    summed = sum(run["examples_per_second"] for run in apart)
    figures = {
        "recipe": arguments.recipe, "cores": cores, "steps": arguments.steps, "warmup": arguments.warmup,
        "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?"),
        "one_run_all_threads": together, "one_run_per_core": apart,
        "one_run_per_core_summed_examples_per_second": summed,
        "ratio_per_core_over_all_threads": summed / together["examples_per_second"],
    }  # fmt: skip
    print(f"1 run x {cores} threads: {together['examples_per_second']:.1f} examples/s")
    for run in apart:
        print(f"1 run x 1 thread on core {run['core']}: {run['examples_per_second']:.1f} examples/s")
    print(f"{cores} runs x 1 thread, summed: {summed:.1f} examples/s; ratio to 1 run x {cores} threads: {figures['ratio_per_core_over_all_threads']:.2f}")
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
