"""The `bam` command: each subcommand reads its inputs (a recipe, or sweep folders), calls one stage function, and shows progress.

Everything rich (progress bars, tables) lives here, not in the stages. Input
errors (`BamError`) print one line and exit with status 2, and so do wrong
arguments (click's usage errors, shown as one line with the command's --help).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import sys
import time
import typing
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bam.config import Anneal, load_recipe
from bam.errors import BamError

console = Console(stderr=True)


def reports_errors(command):
    """Turn a BamError into one line on stderr and exit status 2, with no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BamError as error:
            click.echo(f"bam: error: {error}", err=True)
            sys.exit(2)

    return wrapper


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    multiple=True,
    help=(
        "Local folder in GLUE's TSV layout (<dir>/RTE/train.tsv ...); repeat it to search several in order "
        "(a task is read from the first that has its folder). Default: $BAM_DATA_DIR (folders joined by ':'), else the Hugging Face hub."
    ),
)


def shared_options(command):
    """The options every training command takes."""
    options = [
        click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path)),
        click.option("--tasks", help="Comma-separated subset of the recipe's tasks, e.g. rte,mrpc."),
        click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Random seed (overrides the recipe's `seed`); same seed, same metrics."),
        data_dir_option,
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe value, e.g. --set student.learning_rate=3e-5 (repeatable)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _recipe_and_tasks(path: Path, overrides: tuple[str, ...], seed: int | None, tasks: str | None, extra: tuple[str, ...] = ()):
    """The recipe with every command-line setting applied (so config.json records them) and its tasks."""
    from bam.tasks import resolve

    settings = [*overrides, *extra, *([f"seed={seed}"] if seed is not None else [])]
    recipe = load_recipe(path, settings)
    chosen = resolve(recipe, tasks)
    return dataclasses.replace(recipe, tasks=tuple(task.name for task in chosen)), chosen


@contextlib.contextmanager
def progress_bars():
    """A rich progress display; yields a factory of per-run step callbacks."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[losses]}  λ {task.fields[gold_weight]:.2f}  {task.fields[rate]:.1f} ex/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:

        def start(description: str):
            bars = []  # created at the first step, so a run refused at start-up shows no empty bar

            def update(report):
                if not bars:
                    bars.append(progress.add_task(description, total=report.total_steps, losses="", gold_weight=1.0, rate=0.0))
                # Each task's running loss (its mean over its last steps), so a task that stops learning shows.
                losses = "  ".join(f"{name} {loss:.3f}" for name, loss in report.task_losses.items())
                progress.update(bars[0], completed=report.step, losses=losses, gold_weight=report.gold_weight, rate=report.examples_per_second)
                # Logs of background runs get a plain line every 5% instead of a live bar.
                if not console.is_terminal and report.step % max(1, report.total_steps // 20) == 0:
                    console.log(
                        f"{description}: step {report.step}/{report.total_steps}  loss {losses}  "
                        f"λ {report.gold_weight:.2f}  {report.examples_per_second:.1f} ex/s"
                    )

            return update

        yield start


def summary_table(title: str, results: dict, seconds: float) -> Table:
    """Every metric and the score per task, then the average."""
    table = Table(title=f"{title} ({seconds / 60:.1f} min)")
    table.add_column("task")
    table.add_column("metrics")
    table.add_column("score", justify="right")
    for task, values in results["tasks"].items():
        described = "  ".join(f"{name} {value:.2f}" for name, value in values.items() if name != "score")
        table.add_row(task, described, f"{values['score']:.2f}")
    table.add_row("[bold]average", "", f"[bold]{results['average']:.2f}")
    return table


@contextlib.contextmanager
def one_writer(output: Path, *parts: str):
    """Refuse a second `bam` process writing the same output while this one runs.

    Two runs into one folder would overwrite each other's checkpoints and
    results. The lock files sit beside the output: `.NAME.lock`, or one
    `.NAME.PART.lock` per part (a teacher store is locked task by task, so
    teachers of different tasks can train into one store at once). Under
    `accelerate launch` or `torchrun` only the first process takes them; the
    others write nothing.
    """
    from bam.files import check_writable, exclusive

    with contextlib.ExitStack() as locks:
        if os.environ.get("RANK", "0") == "0":
            check_writable(output)
            for part in parts or [""]:
                name = "." + ".".join(filter(None, [output.name, part, "lock"]))
                locks.enter_context(exclusive(output.parent / name, str(output / part) if part else str(output)))
        yield


class OneLineUsageErrors(click.Group):
    """A group whose usage errors (an unknown option, a bad choice, a missing argument) are one line, like bam's own errors."""

    def main(self, *args, **kwargs):
        try:
            # Without standalone mode click leaves the errors to us; it returns --help's and --version's exit code,
            # or the command's return value (bam's commands return nothing: success).
            code = super().main(*args, **{**kwargs, "standalone_mode": False})
        except click.UsageError as error:
            if isinstance(error, click.exceptions.NoArgsIsHelpError):  # plain `bam`: the help is the answer, not an error
                click.echo(error.format_message(), err=True)
                sys.exit(error.exit_code)
            command = error.ctx.command_path if error.ctx is not None else "bam"
            click.echo(f"bam: error: {error.format_message().rstrip('.')} (see '{command} --help')", err=True)
            sys.exit(error.exit_code)
        except click.ClickException as error:  # a file argument that does not exist, and the like
            click.echo(f"bam: error: {error.format_message()}", err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=OneLineUsageErrors)
@click.version_option(package_name="bam")
def main():
    """bam: Born-Again Multi-Task networks.

    Train single-task teachers (train-teachers), optionally average several
    into one (ensemble-teachers), then distil them into one multi-task student
    with teacher annealing (distill), or both at once (run); fine-tune each task
    of a multi-task model alone, as MT-DNN does (finetune), or a new task from
    few examples (adapt); run them over many
    seeds and conditions (sweep), test the differences (report), answer new
    text (predict) and export a trained model for stock transformers (export).
    """
    from bam.training import quiet_libraries

    quiet_libraries()
    _show_notices()


class _ConsoleNotices(logging.Handler):
    """The stages' notices (`logging.getLogger("bam")`: rows skipped for having no gold label), one line each on the console."""

    def emit(self, record: logging.LogRecord) -> None:
        console.print(f"[dim]note:[/] {escape(record.getMessage())}", soft_wrap=True, highlight=False)


def _show_notices() -> None:
    notices = logging.getLogger("bam")
    notices.setLevel(logging.INFO)
    if not any(isinstance(handler, _ConsoleNotices) for handler in notices.handlers):  # main() runs again per command in tests
        notices.addHandler(_ConsoleNotices())


@main.command("train-teachers")
@shared_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("teachers"), show_default=True, help="Teacher store to write into.")
@reports_errors
def train_teachers_command(recipe, tasks, seed, data_dir, overrides, out):
    """Fine-tune one model per task of RECIPE and cache its predictions in the teacher store."""
    from bam.data import data_directories
    from bam.teachers import train_teachers

    loaded, chosen = _recipe_and_tasks(recipe, overrides, seed, tasks)
    folders = data_directories(data_dir)
    started = time.perf_counter()
    with one_writer(out, *(task.name for task in chosen)), progress_bars() as start:
        results = train_teachers(loaded, chosen, data_dir=folders, store=out, progress=lambda name: start(f"teacher {name}"))
    console.print(summary_table(f"Teachers (dev), store {out}", results, time.perf_counter() - started))


@main.command("finetune")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--tasks", help="Comma-separated subset of the run's tasks, e.g. rte,mrpc. Default: all of them.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Random seed (default: the run's).")
@data_dir_option
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a setting of the run's recipe, e.g. --set teacher.epochs=2 (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Teacher store to write the fine-tuned tasks into. Default: RUN-finetuned beside RUN.")
@reports_errors
def finetune_command(run, tasks, seed, data_dir, overrides, out):
    """MT-DNN's last stage: fine-tune each task alone from the multi-task model of RUN.

    Each task starts from a copy of RUN's shared encoder and its own trained head,
    and trains with the recipe's single-task (`teacher`) settings; the results are
    written as a teacher store, so they are scored, reported and can teach.
    """
    from bam.data import data_directories
    from bam.finetune import finetune, run_recipe
    from bam.tasks import resolve

    recipe = run_recipe(run, [*overrides, *([f"seed={seed}"] if seed is not None else [])])
    chosen = resolve(recipe, tasks)
    out = out or run.parent / f"{run.name}-finetuned"
    started = time.perf_counter()
    with one_writer(out, *(task.name for task in chosen)), progress_bars() as start:
        results = finetune(run, recipe, chosen, data_dir=data_directories(data_dir), store=out, progress=lambda name: start(f"finetune {name}"))
    console.print(summary_table(f"Fine-tuned from {run} (dev), store {out}", results, time.perf_counter() - started))


@main.command("adapt")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--task", "task_name", required=True, help="The new task (one of the recipe's), e.g. scitail.")
@click.option("--start", "start_points", multiple=True, default=("pretrained",), show_default=True,
              help="Where each cell's encoder comes from: 'pretrained' (the recipe's model) or a run directory (its shared encoder); repeatable.")
@click.option("--fractions", default="0.001,0.01,0.1,1", show_default=True, help="Comma-separated shares of the training rows (of the groups, for a ranking task), each in (0, 1].")
@click.option("--draws", type=int, default=5, show_default=True, help="Random subsets per fraction (the draw number seeds the subset).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Training seed of every cell (overrides the recipe's `seed`).")
@data_dir_option
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe value (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Adaptation folder: every cell, results.csv and the report.")
@reports_errors
def adapt_command(recipe, task_name, start_points, fractions, draws, seed, data_dir, overrides, out):
    """MT-DNN's few-data domain adaptation: fine-tune a fresh head for one task from each start on nested random subsets.

    Cells already finished in OUT are skipped; the report (also `bam report OUT`)
    gives each start's mean, spread and Mann-Whitney test against the first start
    per fraction, and a plot of dev score against the fraction.
    """
    from bam.adapt import adapt, write_report
    from bam.data import data_directories

    loaded, chosen = _recipe_and_tasks(recipe, overrides, seed, task_name)
    try:
        shares = [float(part) for part in fractions.split(",") if part.strip()]
    except ValueError:
        raise BamError(f"--fractions: {fractions!r} is not a comma-separated list of numbers") from None
    with one_writer(out), progress_bars() as start:
        adapt(
            loaded, chosen[0], start_points, fractions=shares, draws=draws, data_dir=data_directories(data_dir), out=out,
            progress=lambda cell: start(f"{cell.start.name} {cell.fraction:g} draw {cell.draw}"),
            on_cell=lambda cell, skipped: console.log(f"{'skipped' if skipped else 'done':>8}  {cell.start.name} {cell.fraction:g} draw {cell.draw}"),
        )  # fmt: skip
    _print_adaptation(write_report(out, out))


def _print_adaptation(rows) -> None:
    table = Table(title="Dev score by start and fraction (mean ± sd over draws)")
    names = list(dict.fromkeys(rows["start"]))
    for column in ("fraction", "rows", *names):
        table.add_column(column, justify="right")
    for fraction, cells in rows.groupby("fraction", sort=True):
        by_start = {row.start: f"{row.mean:.2f}" + (f" ± {row.std:.2f}" if row.draws > 1 else "") for row in cells.itertuples()}
        table.add_row(f"{fraction:g}", str(cells["train_rows"].iloc[0]), *(by_start.get(name, "–") for name in names))
    console.print(table)


@main.command("distill")
@shared_options
@click.option(
    "--anneal",
    type=click.Choice(typing.get_args(Anneal)),
    help="Teacher annealing: linear (lambda = step/total, the paper), none (gold labels only, no teachers needed), constant (fixed blend). Default: the recipe's student.anneal.",
)
@click.option("--teacher-weight", type=float, help="With --anneal constant: the teacher's fixed weight 1 - lambda.")
@click.option("--teachers", "teacher_store", type=click.Path(file_okay=False, path_type=Path), default=Path("teachers"), show_default=True, help="Teacher store to read.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Run directory. Default: runs/<recipe>[-<tasks>]-<anneal>-seed<N>, plus -set<hash> with --set overrides.")
@reports_errors
def distill_command(recipe, tasks, seed, data_dir, overrides, anneal, teacher_weight, teacher_store, out):
    """Train one multi-task student on all tasks of RECIPE, distilled from the teacher store.

    \b
    The loss weighting is the recipe's student.loss_weighting (--set student.loss_weighting=dwa):
    equal, fixed, uncertainty, dwa, dtp, gradnorm, mgda, pcgrad or famo, with its settings in
    student.loss_weighting_options. gradnorm, mgda, pcgrad and famo need every task's loss in
    every step: with them the student uses the all-tasks sampler (one batch of every task per step).
    """
    from bam.data import data_directories
    from bam.student import distill

    extra = (*([f'student.anneal="{anneal}"'] if anneal else []), *([f"student.teacher_weight={teacher_weight}"] if teacher_weight is not None else []))
    loaded, chosen = _recipe_and_tasks(recipe, overrides, seed, tasks, extra)
    if teacher_weight is not None and loaded.student.anneal != "constant":
        raise BamError(f"--teacher-weight applies only with --anneal constant (this run anneals {loaded.student.anneal!r})")
    folders = data_directories(data_dir)
    out = out or default_run_folder(recipe, loaded, chosen if tasks else [], overrides)
    started = time.perf_counter()
    with one_writer(out), progress_bars() as start:
        results = distill(loaded, chosen, data_dir=folders, teacher_store=teacher_store, out=out, progress=start("student"))
    console.print(summary_table(f"Student (dev), run {out}", results, time.perf_counter() - started))


@main.command("run")
@shared_options
@click.option("--teachers", "teacher_store", type=click.Path(file_okay=False, path_type=Path), default=Path("teachers"), show_default=True, help="Teacher store to fill and distil from.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="The student's run directory. Default: as bam distill's.")
@reports_errors
def run_command(recipe, tasks, seed, data_dir, overrides, teacher_store, out):
    """The BAM pipeline on RECIPE: its teachers, its student, and a table of teacher against student per task.

    Resumable, and what has finished with the same settings is reused: run it again after a kill.
    """
    from bam.data import data_directories
    from bam.pipeline import run_pipeline

    loaded, chosen = _recipe_and_tasks(recipe, overrides, seed, tasks)
    folders = data_directories(data_dir)
    out = out or default_run_folder(recipe, loaded, chosen if tasks else [], overrides)
    started = time.perf_counter()
    with one_writer(teacher_store, *(task.name for task in chosen)), one_writer(out), progress_bars() as start:
        summary = run_pipeline(
            loaded, chosen, data_dir=folders, store=teacher_store, out=out,
            progress=lambda name: start(name if name == "student" else f"teacher {name}"), on_stage=lambda message: console.print(message, soft_wrap=True, highlight=False),
        )  # fmt: skip
    table = Table(title=f"BAM on {recipe.name}: dev scores, teachers {teacher_store} and student {out} ({(time.perf_counter() - started) / 60:.1f} min)")
    for column in ("task", "teacher", "student", "student - teacher"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for name, teacher in summary.teacher_scores.items():
        student = summary.student_scores[name]
        table.add_row(name, f"{teacher:.2f}", f"{student:.2f}", f"{student - teacher:+.2f}")
    teacher_average = sum(summary.teacher_scores.values()) / len(summary.teacher_scores)
    student_average = sum(summary.student_scores.values()) / len(summary.student_scores)
    table.add_row("[bold]average", f"[bold]{teacher_average:.2f}", f"[bold]{student_average:.2f}", f"[bold]{student_average - teacher_average:+.2f}")
    console.print(table)


def default_run_folder(recipe: Path, loaded, subset: list, overrides: tuple[str, ...]) -> Path:
    """runs/<recipe>[-<tasks>]-<anneal>[<teacher weight>]-seed<N>[-set<hash>]: runs with other command-line settings (data and teachers aside) never share a folder."""
    tasks = "-" + "+".join(task.name for task in subset) if subset else ""
    weight = f"{loaded.student.teacher_weight:g}" if loaded.student.anneal == "constant" else ""
    settings = "-set" + hashlib.sha256("\n".join(sorted(overrides)).encode()).hexdigest()[:6] if overrides else ""
    return Path("runs") / f"{recipe.stem}{tasks}-{loaded.student.anneal}{weight}-seed{loaded.seed}{settings}"


@main.command("predict")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("input_file", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--task", "task_name", required=True, help="The task whose head answers (the model's task name, e.g. rte).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Output file: .csv or .jsonl (JSON lines). Default: CSV on stdout.")
@click.option("--text-columns", help="Comma-separated: the one or two text columns (header names or 0-based positions; JSON keys). Default: the task's.")
@click.option("--id-column", help="Column that identifies each row in the output. Default: the row number, from 0.")
@click.option("--label-column", help="Gold label column, for metrics. Default: the task's (with --text-columns, only if the task names it).")
@click.option("--group-column", help="A ranking task's group column (rows with equal values are one question's candidates). Default: the task's.")
@click.option("--header/--no-header", default=None, help="Whether a TSV/CSV file's first line names its columns. Default: yes, or as the task's files are.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Examples per batch (batches are sorted by length).")
@click.option(
    "--format", "input_format", type=click.Choice(["tsv", "csv", "jsonl", "task"]),
    help="How to read INPUT: tsv (quotes literal), csv (quoted), jsonl, or task (as the task's own files). Default: task if INPUT's name ends like the task's training file, else by its suffix.",
)  # fmt: skip
@click.option("--precision", type=click.Choice(["fp32", "bf16", "auto"]), default="fp32", show_default=True, help="fp32, or bf16 autocast ('auto': bf16 where it is fast).")
@reports_errors
def predict_command(model, input_file, task_name, out, text_columns, id_column, label_column, group_column, header, batch_size, input_format, precision):
    """Answer every row of INPUT (TSV, CSV or JSON lines) with MODEL's head for --task.

    MODEL is a run directory, a teacher-store task folder or an exported model.
    When INPUT has the task's label column, the task's metrics are printed too.
    """
    from bam.inference import load
    from bam.predict import predict_file

    loaded = load(model)
    columns = [column.strip() for column in text_columns.split(",")] if text_columns else []
    progress = Progress(
        TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]:.0f} ex/s"), TimeElapsedColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )  # fmt: skip
    started = time.perf_counter()
    with progress:
        bar = progress.add_task("predict", total=None, rate=0.0)
        done = [0]

        def advance(examples: int) -> None:
            done[0] += examples
            progress.update(bar, completed=done[0], rate=done[0] / max(time.perf_counter() - started, 1e-9))

        scores = predict_file(
            loaded, input_file, task_name, out=out, text_columns=columns, id_column=id_column, label_column=label_column, group_column=group_column, header=header,
            batch_size=batch_size,
            input_format=input_format, precision=precision, on_start=lambda total: progress.update(bar, total=total), on_batch=advance,
        )  # fmt: skip
    seconds = time.perf_counter() - started
    console.print(f"predicted {input_file} with {model} ({task_name}) in {seconds:.1f} s" + (f", written to {out}" if out else ""), soft_wrap=True)
    if scores is not None:
        from bam.metrics import task_score

        described = "  ".join(f"{name} {value:.2f}" for name, value in scores.items())
        console.print(f"{task_name} metrics on {input_file}: {described}  score {task_score(scores):.2f}", soft_wrap=True)

@main.command("ensemble-teachers")
@click.argument("stores", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Teacher store to write the ensemble into (not one of the STORES).")
@click.option("--tasks", help="Comma-separated tasks to average, e.g. rte,mrpc. Default: every task all the STORES hold.")
@reports_errors
def ensemble_teachers_command(stores, out, tasks):
    """Average the teachers in STORES (the same tasks and data, e.g. other seeds) into one teacher store.

    Per task: the mean of the teachers' probability distributions (classification)
    or values (regression), on the training set and every dev split. The manifest
    lists the members; `bam distill --teachers OUT` reads it like any store.
    """
    from bam.ensemble import ensemble_tasks, ensemble_teachers

    names = ensemble_tasks(stores, [name.strip() for name in tasks.split(",") if name.strip()] if tasks is not None else None)
    started = time.perf_counter()
    with one_writer(out, *names):
        results = ensemble_teachers(stores, out, names)
    console.print(summary_table(f"Teacher ensemble of {len(stores)} stores (dev), store {out}", results, time.perf_counter() - started))


@main.command("sweep")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True, help="How many seeds per condition.")
@click.option("--first-seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seeds are first-seed, first-seed+1, ...")
@click.option(
    "--conditions",
    default="single,multi,bam",
    show_default=True,
    help="Comma-separated: single (teachers), multi (gold labels only), bam (Single->Multi), single-single, multi-multi, mtdnn (each seed's multi fine-tuned per task), bam-ensemble (bam taught by the ensemble of every seed's teachers).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Sweep folder. Default: sweeps/<recipe>.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Runs in parallel on this machine; the cores are shared among them. (With Slurm every ready run is submitted.)")
@click.option("--slurm-partition", help="Submit each run as a Slurm job (through submitit) to this partition instead of running here.")
@click.option("--slurm-gpus", type=int, default=1, show_default=True, help="GPUs per Slurm job.")
@click.option("--slurm-minutes", type=int, default=24 * 60, show_default=True, help="Time limit per Slurm job.")
@data_dir_option
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe value for every run (repeatable).")
@reports_errors
def sweep_command(recipe, seeds, first_seed, conditions, out, workers, slurm_partition, slurm_gpus, slurm_minutes, data_dir, overrides):
    """Run every condition for every seed into one sweep folder; re-running resumes it.

    Finished runs are skipped, unfinished ones redone. Results land in
    <out>/results.csv, one row per run and task.
    """
    from bam.data import data_directories
    from bam.sweep import run_sweep

    out = out or Path("sweeps") / recipe.stem
    executor = None
    if slurm_partition:
        try:
            import submitit
        except ImportError:
            raise BamError('--slurm-partition needs submitit: pip install -e ".[slurm]"') from None

        executor = submitit.AutoExecutor(folder=out / "slurm")
        executor.update_parameters(slurm_partition=slurm_partition, gpus_per_node=slurm_gpus, timeout_min=slurm_minutes)

    def report(event: str, run) -> None:
        console.log(f"{event:>8}  {run.name}")

    started = time.perf_counter()
    table = run_sweep(
        recipe, out=out, seeds=range(first_seed, first_seed + seeds), conditions=[name.strip() for name in conditions.split(",")],
        data_dir=data_directories(data_dir), overrides=overrides, workers=workers, executor=executor, on_event=report,
    )  # fmt: skip
    medians = table.pivot_table(index="task", columns="condition", values="score", aggfunc="median", sort=False)
    summary = Table(title=f"Median dev score over seeds, {out} ({(time.perf_counter() - started) / 60:.1f} min)")
    summary.add_column("task")
    for condition in medians.columns:
        summary.add_column(condition, justify="right", overflow="fold")
    for task, row in medians.iterrows():
        summary.add_row(task, *(f"{value:.2f}" for value in row))
    console.print(summary)


@main.command("report")
@click.argument("sweeps", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--target", default="bam", show_default=True, help="The condition under test (with several sweeps: SWEEP_FOLDER/CONDITION).")
@click.option("--baseline", help="Compare the target with this condition only (default: with every other condition).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report folder. Default: analysis/<sweep folder names, joined by -vs->.")
@click.option("--samples", type=click.IntRange(min=100), default=1000, show_default=True, help="Bootstrap resamples per comparison.")
@reports_errors
def report_command(sweeps, target, baseline, out, samples):
    """Medians, Mann-Whitney U, signed-rank and paired bootstrap tests, and plots for one sweep folder or several.

    Several sweeps (the same conditions run with one setting changed) are
    compared by naming conditions after their folder, e.g.
    bam report sweeps/glue-mini-bf16 sweeps/glue-mini --target glue-mini-bf16/single --baseline glue-mini/single
    """
    from bam.report import default_folder, missing_runs, report

    out = out or default_folder(list(sweeps))
    if len(sweeps) == 1 and (sweeps[0] / "adapt.json").is_file():  # an adaptation folder (bam adapt), not a sweep
        from bam.adapt import write_report

        _print_adaptation(write_report(sweeps[0], out))
        console.print(f"report: {out / 'report.md'}")
        return
    summary, comparisons = report(list(sweeps), out, target=target, baseline=baseline, samples=samples)
    for sweep in sweeps:
        if missing := missing_runs(sweep):
            console.print(f"[bold red]warning:[/] {sweep}: {len(missing)} run(s) missing, not counted: {', '.join(missing)}")
    table = Table(title=f"Median dev score (IQR) over seeds: {', '.join(map(str, sweeps))}")
    table.add_column("task")
    conditions = list(dict.fromkeys(summary["condition"]))
    for condition in conditions:
        table.add_column(condition, justify="right", overflow="fold")  # folded, not cut: folder/condition names are long
    for task, rows in summary.groupby("task", sort=False):
        cells = {row.condition: f"{row.median:.2f} ({row.iqr:.2f})" for row in rows.itertuples()}
        table.add_row(task, *(cells.get(condition, "–") for condition in conditions))
    console.print(table)
    for comparison in comparisons:
        console.print(f"- {comparison.sentence()}")
    console.print(f"report: {out / 'report.md'}")


@main.command("plot-training")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Image to write (.png, .svg, .pdf). Default: RUN/training.png.")
@reports_errors
def plot_training_command(run, out):
    """Draw each task's training loss and loss weight over the steps of RUN (a run directory or a teacher's folder)."""
    from bam.train_log import plot_training, read_train_log

    out = out or run / "training.png"
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise BamError(f"--out {out}: the name must end in .png, .svg or .pdf")
    plot_training(read_train_log(run / "train_log.jsonl"), out)
    console.print(f"training curves of {run}: {out}", soft_wrap=True)


@main.command("export")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--task", "task_name", metavar="NAME", help="Export this task as a stock transformers classifier folder (needs its head to be sequence-classification).")
@click.option("--all", "all_tasks", is_flag=True, help="Export every task: the shared encoder once plus every head, in the layout bam.load reads.")
@reports_errors
def export_command(model, out, task_name, all_tasks):
    """Export the bam model MODEL (a run directory, a teacher-store task folder or a model folder) into the new folder OUT.

    With --task NAME, OUT loads with AutoModelForSequenceClassification.from_pretrained(OUT) and
    pipeline("text-classification", model=OUT), and answers as bam does.
    """
    from bam.export import export_all, export_task

    if (task_name is None) == (not all_tasks):
        raise BamError("bam export: give exactly one of --task NAME or --all")
    with one_writer(out):
        written = export_task(model, task_name, out) if task_name else export_all(model, out)
    what = f"task {task_name!r} as a transformers classifier" if task_name else "every task"
    console.print(f"exported {what} to {written}")


if __name__ == "__main__":
    main()
