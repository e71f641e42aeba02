"""`bam adapt`: few-data domain adaptation, MT-DNN's experiment (Liu et al. 2019, section 4.4).

A new task is fine-tuned with a fresh head from several starting encoders (the
recipe's pretrained one, or the shared encoder of a trained multi-task run) on
nested random subsets of its training rows: for each draw, one seeded
permutation of the rows, whose first ceil(fraction x rows) rows train each
fraction (so 1% holds the 0.1% subset). The subset's seed is the draw number;
the training seed, separate from it, is the recipe's seed plus the draw, so the
draws at 100% (one subset, the whole set) differ by their training randomness.

For each cell (start, fraction, draw): subset -> build (the start's encoder and a
new head) -> train (the recipe's single-task `teacher` settings) -> evaluate
(dev) -> record (a teacher-store folder with predictions but no model, and a row
of results.csv, rewritten from every finished cell as each finishes). A finished
cell is skipped on a rerun; the starting weights are part of each cell's
checkpoint key, and adapt.json records each start's weights, so a start of the
same name from other weights is refused rather than mixed in. `bam report` on the folder (or the end of
this command) writes the comparison: per fraction, each start's mean, spread
and Mann-Whitney test against the first start, and a plot against the fraction.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bam.config import Recipe, to_dict
from bam.data import DataDirectories, TaskData, column, describe_directories, fingerprint, group_numbers, load_tokenized, tokenizer_identity
from bam.errors import BamError
from bam.files import as_read_back, check_writable, read_format, read_json, write_csv, write_json
from bam.finetune import weights_fingerprint
from bam.metrics import task_score
from bam.model import load_tokenizer, saved_model_folder
from bam.tasks import Task
from bam.teachers import train_teacher
from bam.training import ProgressCallback

ADAPT_FORMAT = "bam-adapt/1"
PRETRAINED = "pretrained"  # the start that is the recipe's own encoder


@dataclass(frozen=True)
class Start:
    """Where a cell's encoder comes from: its name in results, the model to load, what identifies its weights."""

    name: str
    model: str
    weights: str | None  # a trained run's weight fingerprint (None: the recipe's model, named in the recipe)


@dataclass(frozen=True)
class Cell:
    start: Start
    fraction: float
    draw: int

    def folder(self, out: Path) -> Path:
        return out / self.start.name / f"fraction-{self.fraction:g}" / f"draw{self.draw}"


def starts(recipe: Recipe, given: Sequence[str], tokenizer) -> list[Start]:
    """`pretrained` (the recipe's model) or run directories, by name; names must differ.

    A run's encoder is fed the recipe's tokenization and pooled as the recipe
    says, so its tokenizer and its pooling must be the recipe's.
    """
    chosen = []
    for entry in given:
        if entry == PRETRAINED:
            chosen.append(Start(PRETRAINED, recipe.model, None))
            continue
        folder = saved_model_folder(Path(entry))
        if tokenizer_identity(load_tokenizer(str(folder / "encoder"))) != tokenizer_identity(tokenizer):
            raise BamError(f"--start {entry}: its encoder's tokenizer is not the recipe's model's ({recipe.model})")
        pooling = read_json(folder / "heads.json").get("pooling")
        if pooling != recipe.pooling:
            raise BamError(f"--start {entry}: its model pools with {pooling!r}, the recipe with {recipe.pooling!r}")
        chosen.append(Start(Path(entry).name, str(folder / "encoder"), weights_fingerprint(folder)))
    names = [start.name for start in chosen]
    if len(set(names)) != len(names):
        raise BamError(f"--start: two starts are named {next(name for name in names if names.count(name) > 1)!r} (a run folder's name names its start)")
    if not chosen:
        raise BamError("--start: give at least one start (pretrained, or a run directory)")
    return chosen


def nested_subset(rows: int, fraction: float, draw: int) -> np.ndarray:
    """The row indices of one draw's subset: the first ceil(fraction x rows) of a permutation seeded by the draw, in file order."""
    if not 0 < fraction <= 1:
        raise BamError(f"--fractions: {fraction:g} is not in (0, 1]")
    permutation = np.random.default_rng(draw).permutation(rows)
    return np.sort(permutation[: max(1, math.ceil(fraction * rows - 1e-9))])


def training_subset(train, fraction: float, draw: int):
    """One draw's subset of the training rows; of a ranking task's, whole groups (drawn as `nested_subset` draws rows), numbered again."""
    if "group" not in train.column_names:
        return train.select(nested_subset(len(train), fraction, draw))
    groups = column(train, "group")
    subset = train.select(np.flatnonzero(np.isin(groups, nested_subset(int(groups.max()) + 1, fraction, draw))))
    return subset.remove_columns("group").add_column("group", group_numbers(subset["group"][:]))


def adapt(
    recipe: Recipe,
    task: Task,
    start_points: Sequence[str],
    *,
    fractions: Sequence[float],
    draws: int,
    data_dir: DataDirectories,
    out: Path,
    progress: Callable[[Cell], ProgressCallback | None] = lambda cell: None,
    on_cell: Callable[[Cell, bool], None] = lambda cell, skipped: None,
) -> pd.DataFrame:
    """Train (or resume) every cell and return the results table, also written to `out/results.csv`."""
    # build: everything that can be refused, before any training
    if not fractions:
        raise BamError("--fractions: no fraction given")
    for fraction in fractions:
        nested_subset(1, fraction, 0)  # checks the fraction
    if draws < 1:
        raise BamError(f"--draws: {draws} must be at least 1")
    tokenizer = load_tokenizer(recipe.model, recipe.max_length)  # every start is fed the recipe's tokenization
    chosen = starts(recipe, start_points, tokenizer)
    data, _ = load_tokenized(task, data_dir, tokenizer, recipe.max_length)  # bad data is refused before the folder is described
    check_writable(out)
    out.mkdir(exist_ok=True)
    _check_or_write_description(out, recipe, task, data_dir, chosen)
    cells = [Cell(start, fraction, draw) for start in chosen for fraction in sorted(set(fractions)) for draw in range(draws)]

    # train each cell that has no record yet, rewriting the table of every finished cell as each finishes
    for cell in cells:
        done = (cell.folder(out) / task.name / "manifest.json").is_file()
        if not done:
            _train_cell(cell, recipe, data, tokenizer, out, progress(cell))
            write_csv(results(out, task), out / "results.csv")
        on_cell(cell, done)
    table = results(out, task)
    write_csv(table, out / "results.csv")
    return table


def _train_cell(cell: Cell, recipe: Recipe, data: TaskData, tokenizer, out: Path, progress: ProgressCallback | None) -> None:
    train = training_subset(data.train, cell.fraction, cell.draw)
    settings = dataclasses.replace(recipe, model=cell.start.model, seed=recipe.seed + cell.draw)
    train_teacher(
        settings, TaskData(data.task, train, data.dev), fingerprint(train), tokenizer, store=cell.folder(out), progress=progress,
        start_fingerprint=cell.start.weights, save_model=False,
    )  # fmt: skip


def results(out: Path, task: Task) -> pd.DataFrame:
    """One row per finished cell of the folder, whichever command trained it: start, fraction, draw, training rows,
    score and every dev metric, wall time; in the order the starts were first recorded, then by fraction and draw."""
    order = {name: index for index, name in enumerate(read_json(out / "adapt.json")["starts"])}
    rows = []
    for manifest_path in out.glob(f"*/fraction-*/draw*/{task.name}/manifest.json"):
        draw_folder = manifest_path.parent.parent
        start, fraction, draw = draw_folder.parent.parent.name, float(draw_folder.parent.name.removeprefix("fraction-")), int(draw_folder.name.removeprefix("draw"))
        manifest = read_json(manifest_path)
        dev_metrics = {name: value for name, value in manifest["dev_metrics"].items() if name != "score"}
        rows.append({
            "start": start, "fraction": fraction, "draw": draw, "train_rows": manifest["files"]["train"]["examples"],
            "score": task_score(dev_metrics), **dev_metrics, "wall_seconds": manifest["wall_seconds"],
        })  # fmt: skip
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["order"] = table["start"].map(order)
    return table.sort_values(["order", "fraction", "draw"]).drop(columns="order").reset_index(drop=True)


def _check_or_write_description(out: Path, recipe: Recipe, task: Task, data_dir: DataDirectories, chosen: Sequence[Start]) -> None:
    """adapt.json: what the folder's cells were trained with; another recipe, task or start of the same name is refused, not mixed in."""
    starts_now = {start.name: {"model": start.model, "weights": start.weights} for start in chosen}
    description = {"format": ADAPT_FORMAT, "task": task.name, "recipe": to_dict(recipe), "data_dir": describe_directories(data_dir), "starts": starts_now}
    path = out / "adapt.json"
    if path.is_file():
        recorded = read_format(path, ADAPT_FORMAT)
        as_json = as_read_back(description)
        for key in ("task", "recipe"):
            if recorded.get(key) != as_json[key]:
                raise BamError(f"{path}: this folder's cells were trained with another {key}; use another --out")
        for name, start in starts_now.items():
            if name in recorded["starts"] and recorded["starts"][name] != start:
                raise BamError(f"{path}: the cells of start {name!r} came from other weights ({recorded['starts'][name]['model']}); use another --out")
        description["starts"] = {**recorded["starts"], **starts_now}
    write_json(path, description)


# ---------------------------------------------------------------------------
# The report: per fraction, each start against the first (`bam report ADAPT_FOLDER`).


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per start and fraction: training rows, draws, mean, standard deviation, min and max of the dev score,
    and the one-sided Mann-Whitney p that the start scores higher than the first start (NaN for the first)."""
    from bam.statistics import mann_whitney

    first = table["start"].iloc[0]
    rows = []
    for (start, fraction), cell in table.groupby(["start", "fraction"], sort=False):
        scores = cell["score"].to_numpy()
        reference = table[(table["start"] == first) & (table["fraction"] == fraction)]["score"].to_numpy()
        p = mann_whitney(scores, reference).p if start != first and len(reference) else float("nan")
        rows.append({
            "start": start, "fraction": fraction, "train_rows": int(cell["train_rows"].median()), "draws": len(scores),
            "mean": float(scores.mean()), "std": float(scores.std(ddof=1)) if len(scores) > 1 else float("nan"),
            "min": float(scores.min()), "max": float(scores.max()), f"p_greater_than_{first}": p,
        })  # fmt: skip
    return pd.DataFrame(rows).sort_values("fraction", kind="stable").reset_index(drop=True)  # starts keep their order


def plot(table: pd.DataFrame, task: str, path: Path) -> None:
    """Dev score against the fraction of training rows (log scale): each start's mean as a line, every draw as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bam.files import replaced_atomically

    figure, axes = plt.subplots(figsize=(5.2, 3.4))
    for start, rows in table.groupby("start", sort=False):
        means = rows.groupby("fraction")["score"].mean()
        line = axes.plot(means.index, means.to_numpy(), marker="o", label=start)[0]
        axes.scatter(rows["fraction"], rows["score"], s=10, color=line.get_color(), alpha=0.5)
    axes.set_xscale("log")
    axes.set_xlabel("fraction of the training rows")
    axes.set_ylabel("dev score (0-100)")
    axes.set_title(f"{task}: adaptation from each start")
    axes.legend()
    figure.tight_layout()
    with replaced_atomically(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)


def write_report(folder: Path, out: Path) -> pd.DataFrame:
    """report.md, results.csv and fractions.png for an adaptation folder; returns the summary."""
    description = read_format(folder / "adapt.json", ADAPT_FORMAT)
    table = pd.read_csv(folder / "results.csv") if (folder / "results.csv").is_file() else pd.DataFrame()
    if table.empty:
        raise BamError(f"{folder}: no finished cells to report (results.csv is missing or empty)")
    check_writable(out)
    out.mkdir(exist_ok=True)
    rows = summary(table)
    task = description["task"]
    plot(table, task, out / "fractions.png")
    write_csv(table, out / "results.csv")
    first = table["start"].iloc[0]
    lines = [
        f"# Few-data adaptation: {task}", "",
        f"Fine-tuned with a fresh head from each start on nested random subsets of the training rows "
        f"(folder `{folder}`, recipe model `{description['recipe']['model']}`). Mean and spread over the draws; "
        f"p: one-sided Mann-Whitney U that the start scores higher than `{first}` at the same fraction.", "",
        "![score against fraction](fractions.png)", "",
        *markdown_table(rows), "",
    ]  # fmt: skip
    from bam.files import write_text

    write_text(out / "report.md", "\n".join(lines))
    return rows


def markdown_table(table: pd.DataFrame) -> list[str]:
    """A table's lines in Markdown, numbers to 4 significant digits."""
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    return [
        "| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns),
        *("| " + " | ".join(cell(value) for value in row) + " |" for row in table.itertuples(index=False)),
    ]
