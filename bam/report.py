"""`bam report`: medians, spreads, significance tests and plots for finished sweeps.

read (each sweep's finished runs, or a bare results.csv; dev predictions) -> compare (the target
condition, `bam` by default, against every other: Mann-Whitney U over seeds
per task and on the average, Wilcoxon signed-rank over same-seed differences,
paired bootstrap over dev examples per seed) ->
write `report.md`, the table it read (`results.csv`) and one PNG per task
under the analysis folder.

Several sweeps that differ in one setting (say `--set precision=bf16`) are
compared by naming each condition after its sweep folder: `glue-mini/single`
against `glue-mini-bf16/single`.
"""

from __future__ import annotations

import csv
import functools
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bam import metrics
from bam.conditions import conditions_in, dev_prediction_files
from bam.config import Recipe, build
from bam.errors import BamError, first_line
from bam.files import check_writable, read_json, replaced_atomically, write_csv, write_text
from bam.statistics import Bootstrap, MannWhitney, SignedRank, mann_whitney, paired_bootstrap, signed_rank, smallest_p, smallest_signed_rank_p, spread
from bam.sweep import collect, plan
from bam.tasks import TASK_NAME, Task, resolve
from bam.teacher_store import Predictions, read_predictions


@dataclass(frozen=True)
class Comparison:
    """The target condition against another on one task (or `average`)."""

    task: str
    target: str
    other: str
    median_difference: float
    greater: MannWhitney
    two_sided: MannWhitney
    bootstraps: tuple[Bootstrap, ...]  # one per seed both conditions ran, when predictions exist
    seed_differences: tuple[float, ...] = ()  # target minus other, per seed both ran (same seed: same data order)

    @functools.cached_property  # the sentence and the table both read it
    def paired(self) -> SignedRank:
        """Wilcoxon signed-rank, one-sided, over the same-seed differences: a second view beside Mann-Whitney."""
        return signed_rank(self.seed_differences, "greater")

    def same_seed(self) -> str:
        """The same-seed differences in brief: median [min, max] (count)."""
        values = self.seed_differences
        return f"{np.median(values):+.2f} [{min(values):+.2f}, {max(values):+.2f}] ({len(values)})" if values else "–"

    def sentence(self) -> str:
        verb = "beats" if self.greater.p < 0.05 and self.median_difference > 0 else "does not significantly beat"
        line = (
            f"{self.target} {verb} {self.other} on {self.task}: median {self.median_difference:+.2f}, "
            f"p = {self.greater.p:.3g} (one-sided), n = {self.greater.n_a} vs {self.greater.n_b}"
        )
        if self.paired.n:
            line += f"; signed-rank p = {self.paired.p:.3g} over {self.paired.n} same-seed pairs"
            if smallest_signed_rank_p(self.paired.n) >= 0.05:
                line += " (too few for p < 0.05)"
        if self.bootstraps:
            significant = sum(boot.p < 0.05 for boot in self.bootstraps)
            line += f"; paired bootstrap p < 0.05 in {significant} of {len(self.bootstraps)} seeds"
        if smallest_p(self.greater.n_a, self.greater.n_b) >= 0.05:
            line += f" (warning: with {self.greater.n_a} vs {self.greater.n_b} runs no p below 0.05 is possible)"
        return line


KEY_COLUMNS = ["condition", "seed", "task", "score"]


def load_results(sweep: Path) -> pd.DataFrame:
    path = sweep / "results.csv"
    if not path.is_file():
        raise BamError(f"{sweep}: no results.csv (run `bam sweep` into this folder first)")
    # Read twice: the key columns as the text they are (a task may be called NA), the others as pandas types them.
    # Blank lines are kept (and dropped below) so that a row's index + 2 is its line in the file.
    _check_complete_rows(path)
    text = _read_csv(path, dtype=str, keep_default_na=False)
    typed = _read_csv(path)
    missing = set(KEY_COLUMNS) - set(text.columns)
    if missing:
        raise BamError(f"{path}: missing column {sorted(missing)[0]!r}")
    text = text[KEY_COLUMNS].apply(lambda column: column.str.strip())
    filled = (text != "").any(axis=1) | typed.drop(columns=KEY_COLUMNS).notna().any(axis=1)
    text, typed = text[filled], typed[filled]

    def refuse(bad: pd.Series, column: str, what: str) -> None:
        if bad.any():
            row = bad.idxmax()
            raise BamError(f"{path}: line {row + 2}: {column} {text[column][row] if column in text else typed[column][row]!r} is {what}")

    refuse(text["condition"] == "", "condition", "empty")
    refuse(~text["task"].str.fullmatch(TASK_NAME.pattern), "task", "not a task name")
    seeds, scores = pd.to_numeric(text["seed"], errors="coerce"), pd.to_numeric(text["score"], errors="coerce")
    refuse(~seeds.between(0, 2**32 - 1) | (seeds % 1 != 0), "seed", "not a whole number from 0 to 2**32 - 1")
    refuse(~np.isfinite(scores), "score", "not a finite number")
    refuse(text.duplicated(["condition", "seed", "task"]), "task", "listed twice for this condition and seed")
    if "wall_seconds" in typed.columns:  # the compute table adds them up
        seconds = pd.to_numeric(typed["wall_seconds"], errors="coerce")
        refuse(typed["wall_seconds"].notna() & ~(seconds >= 0), "wall_seconds", "not a number of seconds")
    return typed.assign(condition=text["condition"], task=text["task"], seed=seeds.astype(int), score=scores)


def _check_complete_rows(path: Path) -> None:
    """Refuse a table cut short: a row with fewer fields than the header (pandas would fill them in as empty), or no final newline."""
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BamError(f"{path}: not a readable CSV table ({error})") from None
    try:
        rows = list(csv.reader(io.StringIO(content)))
    except csv.Error as error:  # a field past csv's size limit, a stray NUL
        raise BamError(f"{path}: not a readable CSV table ({error})") from None
    for number, row in enumerate(rows[1:], start=2):
        if row and any(field.strip() for field in row) and len(row) < len(rows[0]):
            raise BamError(f"{path}: line {number}: {len(row)} fields where the header has {len(rows[0])} (a truncated row?)")
    if content and not content.endswith("\n"):
        raise BamError(f"{path}: line {len(rows)}: the file ends in the middle of a line (truncated?)")


def missing_runs(sweep: Path) -> list[str]:
    """The runs a sweep folder should hold but does not: every seed and condition it has run, for every task and needed run.

    Empty for a bare results table, which has no sweep description to plan from.
    """
    recipe = _sweep_recipe(sweep)
    if not recipe:
        return []
    tasks = [task.name for task in resolve(recipe)]
    # Every seed with a folder (one whose every run failed has no finished run), and every condition with a finished run.
    seeds = sorted(int(folder.name[4:]) for folder in sweep.glob("seed*") if folder.name[4:].isdigit())
    runs = plan(tasks, seeds, conditions_in(sweep))
    conditions = list(dict.fromkeys(run.condition for run in runs if run.is_done(sweep)))
    return [run.name for run in plan(tasks, seeds, conditions) if not run.is_done(sweep)]


def _read_csv(path: Path, **options) -> pd.DataFrame:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # a row with more fields than the header
            return pd.read_csv(path, skip_blank_lines=False, index_col=False, **options)
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise BamError(f"{path}: not a readable CSV table ({first_line(error)})") from None


def medians(table: pd.DataFrame) -> pd.DataFrame:
    """Median, IQR and n of the score per task (rows, `average` last) and condition (columns)."""
    rows = []
    for (task, condition), scores in table.groupby(["task", "condition"], sort=False)["score"]:
        summary = spread(scores)
        rows.append({"task": task, "condition": condition, "median": summary.median, "iqr": summary.iqr, "n": summary.n})
    return pd.DataFrame(rows)


def dev_predictions(sweep: Path, condition: str, seed: int, task: str, splits: tuple[str, ...] = ()) -> Predictions | None:
    """The predictions of one run on its first dev split (the first of `splits` it has), or None where the sweep kept none."""
    found = dev_prediction_files(sweep, condition, seed, task)
    preferred = [split for split in splits if split in found] or sorted(found)
    return read_predictions(found[preferred[0]]) if preferred else None


def _dev_splits(task: Task | None) -> tuple[str, ...]:
    """A task's dev split names in the order its spec declares them (local files first, then the hub)."""
    return () if task is None else tuple(dict.fromkeys([*task.spec.local.dev, *task.spec.hub.dev]))


def _task_metric(task: Task):
    def score(gold: np.ndarray, predicted: np.ndarray) -> float:
        return metrics.task_score(task.score_metric_inputs(gold, predicted))

    return score


# Where each condition of a report's table ran: its sweep folder and its name there (None: no predictions to read).
Sources = dict[str, tuple[Path, str] | None]


def compare(
    table: pd.DataFrame, tasks: dict[str, Task | None], sources: Sources, target: str, baseline: str | None = None, samples: int = 1000
) -> list[Comparison]:
    """The target condition against `baseline` (default: every other condition), per task and on the average."""
    comparisons = []
    others = [baseline] if baseline else [condition for condition in table["condition"].unique() if condition != target]
    for task in [*tasks, "average"]:
        rows = table[table["task"] == task]
        mine = rows[rows["condition"] == target].set_index("seed")["score"]
        for other in others:
            theirs = rows[rows["condition"] == other].set_index("seed")["score"]
            if mine.empty or theirs.empty:
                continue
            bootstraps, common = [], sorted(set(mine.index) & set(theirs.index))
            if sources.get(target) and sources.get(other) and task != "average":
                for seed in common:
                    splits = _dev_splits(tasks[task])
                    a, b = dev_predictions(*sources[target], seed, task, splits), dev_predictions(*sources[other], seed, task, splits)
                    if a is not None and b is not None:
                        if not (torch.equal(a.ids, b.ids) and torch.equal(a.labels, b.labels)):
                            raise BamError(f"seed {seed}, task {task}: {target} and {other} predicted different dev examples")
                        # Resampled are the metrics' items: examples, or a ranking task's groups (whose candidates stay together).
                        gold, predicted_a = tasks[task].metric_inputs(a.labels, a.outputs, a.groups)
                        predicted_b = tasks[task].metric_inputs(b.labels, b.outputs, b.groups)[1]
                        bootstraps.append(paired_bootstrap(gold, predicted_a, predicted_b, _task_metric(tasks[task]), samples, seed))
            comparisons.append(
                Comparison(
                    task, target, other, float(np.median(mine) - np.median(theirs)),
                    mann_whitney(mine.to_numpy(), theirs.to_numpy(), "greater"),
                    mann_whitney(mine.to_numpy(), theirs.to_numpy(), "two-sided"),
                    tuple(bootstraps), tuple(float(mine[seed] - theirs[seed]) for seed in common),
                )  # fmt: skip
            )
    return comparisons


def plot(table: pd.DataFrame, task: str, path: Path) -> None:
    """Scores by condition for one task: a box per condition with every seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table[table["task"] == task]
    conditions = list(dict.fromkeys(rows["condition"]))
    figure, axes = plt.subplots(figsize=(1.6 + 1.2 * len(conditions), 3.2))
    groups = [rows[rows["condition"] == condition]["score"].to_numpy() for condition in conditions]
    axes.boxplot(groups, widths=0.5, showfliers=False)
    long_names = max(map(len, conditions)) > 12  # conditions named after their sweep folder
    axes.set_xticks(range(1, len(conditions) + 1), conditions, rotation=20 if long_names else 0, ha="right" if long_names else "center")
    jitter = np.random.default_rng(0)
    for position, scores in enumerate(groups, start=1):
        axes.scatter(position + jitter.uniform(-0.12, 0.12, len(scores)), scores, s=14, color="black", zorder=3)
    axes.set_title(f"{task}: dev score by condition")
    axes.set_ylabel("score (0-100)")
    figure.tight_layout()
    with replaced_atomically(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)


def write_markdown(
    path: Path, name: str, summary: pd.DataFrame, comparisons: list[Comparison], table: pd.DataFrame, samples: int, missing: list[str] = ()
) -> None:  # fmt: skip
    conditions = list(dict.fromkeys(table["condition"]))
    lines = [f"# Sweep report: {name}", ""]
    if missing:  # first, so that nobody reads the medians without knowing what they leave out
        lines += [f"**Missing runs:** {len(missing)} run(s) of the seeds and conditions below have no finished folder and are not counted: {', '.join(missing)}.", ""]
    lines += ["## Dev scores: median (IQR) [n] over seeds", ""]
    lines.append("| task | " + " | ".join(conditions) + " |")
    lines.append("|---|" + "---|" * len(conditions))
    for task in dict.fromkeys(summary["task"]):
        cells = []
        for condition in conditions:
            found = summary[(summary["task"] == task) & (summary["condition"] == condition)]
            cells.append("–" if found.empty else "{median:.2f} ({iqr:.2f}) [{n}]".format(**found.iloc[0].to_dict()))
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    if "wall_seconds" in table.columns:
        lines += ["", "## Compute", "", "| condition | wall time (hours, all seeds) |", "|---|---|"]
        per_task_rows = table[table["task"] != "average"].drop_duplicates(["condition", "seed", "wall_seconds"])
        for condition, seconds in per_task_rows.groupby("condition", sort=False)["wall_seconds"].sum().items():
            lines.append(f"| {condition} | {seconds / 3600:.2f} |")
    runs = table[table["task"] != "average"]  # average rows of per-task conditions join their runs' values
    mixed = (("code", "versions of the training code"), ("threads", "CPU thread counts (results depend on it)"), ("processes", "process counts"))
    for column, what in mixed:
        if column in runs.columns and runs[column].nunique() > 1:
            values = ", ".join(sorted(runs[column].astype(str).unique()))
            lines += ["", f"**Warning:** the runs came from {runs[column].nunique()} different {what} ({values})."]
    lines += ["", "## Tests", "", f"Mann-Whitney U over seeds (U counts pairs where the first condition scores higher); same-seed differences (runs with one seed share data order, and initialisation where the models match) and their one-sided Wilcoxon signed-rank p (zero differences dropped; with n pairs no p below 1/2^n is possible); paired bootstrap over dev examples ({samples} resamples, first dev split) per seed run by both conditions.", ""]
    lines.append(
        "| task | comparison | median diff | same-seed diff: median [min, max] (seeds) | signed-rank p (one-sided) "
        "| U | p (one-sided) | p (two-sided) | n | bootstrap p per seed |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for item in comparisons:
        boots = ", ".join(f"{boot.p:.3f}" for boot in item.bootstraps) or "–"
        lines.append(
            f"| {item.task} | {item.target} > {item.other} | {item.median_difference:+.2f} | {item.same_seed()} | "
            f"{f'{item.paired.p:.3g}' if item.paired.n else '–'} | {item.greater.u:g} | "
            f"{item.greater.p:.3g} | {item.two_sided.p:.3g} | {item.greater.n_a} vs {item.greater.n_b} | {boots} |"
        )
    lines += ["", "## In words", ""] + [f"- {item.sentence()}" for item in comparisons]
    write_text(path, "\n".join(lines) + "\n")


def _sweep_recipe(sweep: Path) -> Recipe | None:
    """The recipe the sweep ran, from sweep.json; None for a bare results table (no bootstrap then)."""
    path = sweep / "sweep.json"
    if not path.is_file():
        return None
    description = read_json(path)
    try:
        return build(Recipe, description["recipe"])
    except (KeyError, TypeError) as error:
        raise BamError(f"{path}: not a sweep description ({error})") from None
    except BamError as error:  # a recipe key this version of bam does not know
        raise BamError(f"{path}: {error}") from None


def sweep_names(sweeps: list[Path]) -> list[str]:
    """The sweeps' folder names: they name the report and, with several sweeps, the conditions."""
    return [sweep.resolve().name for sweep in sweeps]


def default_folder(sweeps: list[Path]) -> Path:
    return Path("analysis") / "-vs-".join(sweep_names(sweeps))


def load_sweeps(sweeps: list[Path]) -> tuple[pd.DataFrame, dict[str, Task | None], Sources]:
    """One results table for all `sweeps`, the tasks' specs and where each condition's runs are.

    With one sweep, conditions keep their names; with several, each is named
    `<sweep folder>/<condition>`.
    """
    names = sweep_names(sweeps)
    repeated = [name for name in names if names.count(name) > 1]
    if repeated:
        raise BamError(f"two sweep folders are named {repeated[0]!r}: the report names conditions after their folder")
    tables, tasks, sources = [], {}, {}
    for sweep, name in zip(sweeps, names):
        recipe = _sweep_recipe(sweep)
        if recipe:  # the finished runs themselves: results.csv may predate runs finished since
            specs = {task.name: task for task in resolve(recipe)}
            table = collect(sweep, list(specs))
        else:  # a bare results table
            table = load_results(sweep)
            specs = {task: None for task in table["task"] if task != "average"}
        known = [task for task in dict.fromkeys(table["task"]) if task != "average"]
        tasks.update({task: tasks.get(task) or specs[task] for task in known})
        conditions = list(dict.fromkeys(table["condition"]))
        labels = conditions if len(sweeps) == 1 else [f"{name}/{condition}" for condition in conditions]
        table["condition"] = table["condition"].map(dict(zip(conditions, labels)))
        # Without the recipe, tasks cannot be scored again: no paired bootstrap then.
        sources.update({label: (sweep, condition) if recipe else None for label, condition in zip(labels, conditions)})
        tables.append(table)
    return pd.concat(tables, ignore_index=True), tasks, sources


def report(
    sweeps: Path | list[Path], out: Path, target: str = "bam", baseline: str | None = None, samples: int = 1000
) -> tuple[pd.DataFrame, list[Comparison]]:
    """Write report.md and the plots for `sweeps` (one folder or several) into `out`; returns the medians and comparisons."""
    sweeps = [sweeps] if isinstance(sweeps, Path) else list(sweeps)
    table, tasks, sources = load_sweeps(sweeps)
    for condition in (target, baseline):
        if condition and condition not in sources:
            raise BamError(f"no runs of condition {condition!r} in {', '.join(map(str, sweeps))} (there are: {', '.join(sources)})")
    check_writable(out)  # before the bootstraps, which take a while
    summary = medians(table)
    comparisons = compare(table, tasks, sources, target, baseline, samples)
    out.mkdir(exist_ok=True)
    for task in [*tasks, "average"]:
        if (table["task"] == task).any():
            plot(table, task, out / f"{task}.png")
    name = " vs ".join(sweep_names(sweeps))
    write_csv(table, out / "results.csv")  # the runs behind the report, one row per run and task
    missing = [f"{sweep_name}/{run}" if len(sweeps) > 1 else run for sweep, sweep_name in zip(sweeps, sweep_names(sweeps)) for run in missing_runs(sweep)]
    write_markdown(out / "report.md", name, summary, comparisons, table, samples, missing)
    return summary, comparisons
