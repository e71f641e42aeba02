"""The training log, `train_log.jsonl`: one writer and one reader.

Every run directory and every teacher that `bam train-teachers` trained holds
one (a student's predictions stored as a teacher store do not: its log is in
its run directory). The first line names the format; then one line per
optimizer step:

    {"step": 12, "tasks": {"rte": {"loss": 0.69, "gold_weight": 0.01, "loss_weight": 1.0}}}

`loss` is the task's mean training loss in that step (against the blended
target; with several processes, over the main process's share of the batch), `gold_weight` the lambda of its target, and `loss_weight` the weight
the loss weighting gave it. A step lists only the tasks it trained.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bam.errors import BamError
from bam.files import replaced_atomically

FORMAT = "bam-train-log/1"


def write_train_log(path: Path, records: list[dict]) -> None:
    with replaced_atomically(Path(path)) as temporary:
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps({"format": FORMAT}) + "\n")
            for record in records:
                handle.write(json.dumps(record) + "\n")


def read_train_log(path: Path) -> list[dict]:
    """The step records, after checking the format line and each record's shape."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise BamError(f"{path}: unreadable training log ({error})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise BamError(f"{path}:{number}: not a JSON line") from None
        if number == 1:
            if record != {"format": FORMAT}:
                raise BamError(f"{path}: not a {FORMAT} file (first line {line[:60]!r})")
            continue
        well_formed = isinstance(record, dict) and type(record.get("step")) is int and isinstance(record.get("tasks"), dict)
        if not well_formed or not all(isinstance(entry, dict) and {"loss", "gold_weight", "loss_weight"} <= entry.keys() for entry in record["tasks"].values()):
            raise BamError(f"{path}:{number}: a step record needs 'step' and 'tasks' with loss, gold_weight and loss_weight")
        for task, entry in record["tasks"].items():
            for key in ("loss", "gold_weight", "loss_weight"):
                value = entry[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise BamError(f"{path}:{number}: task {task!r}'s {key} is {value!r}, not a finite number")
        records.append(record)
    if not lines:
        raise BamError(f"{path}: empty training log")
    return records


def plot_training(records: list[dict], path: Path, window: int = 20) -> None:
    """Each task's training loss (mean over its last `window` steps) and loss weight against the step, in two panels, to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(dict.fromkeys(name for record in records for name in record["tasks"]))
    if not tasks:
        raise BamError(f"{path}: the training log records no step of any task, nothing to draw")
    figure, (losses, weights) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    for task in tasks:
        steps = np.array([record["step"] for record in records if task in record["tasks"]])
        values = np.array([record["tasks"][task]["loss"] for record in records if task in record["tasks"]])
        smoothed = np.convolve(values, np.ones(window), "valid") / window if len(values) >= window else values
        losses.plot(steps[len(steps) - len(smoothed) :], smoothed, label=task)
        weights.plot(steps, [record["tasks"][task]["loss_weight"] for record in records if task in record["tasks"]], label=task)
    losses.set_ylabel(f"training loss (mean of {window} steps)")
    weights.set_ylabel("loss weight")
    weights.set_xlabel("step")
    losses.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    with replaced_atomically(Path(path)) as temporary:
        figure.savefig(temporary, format=Path(path).suffix.lstrip(".") or "png", dpi=100)
    plt.close(figure)
