"""Stage 3, `bam sweep`: every condition for every seed, resumable, in parallel or on Slurm.

The conditions and the folder layout are data in `bam.conditions`. A sweep
folder holds `sweep.json` (the resolved recipe and data source, which a
resumed sweep must match), `sweep.lock` (held while a `bam sweep` works in the
folder), one folder per run, `results.csv` and, for runs that failed, their
tracebacks under `errors/`.

Every run is written atomically (bam.files), so a run is finished exactly when
its folder exists; re-running the same command skips finished runs and redoes
the rest. plan -> execute (in dependency order) -> collect the results table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

from bam.conditions import CONDITIONS, condition_order, conditions_in, finished_marker, run_folder, teacher_store, trained_encoder
from bam.config import Recipe, build, load_recipe, parse_override, to_dict, with_weighting_samplers
from bam.data import DataDirectories, as_directories, describe_directories
from bam.ensemble import check_built_from
from bam.errors import BamError, first_line
from bam.files import as_read_back, check_writable, exclusive, read_json, write_csv, write_json


@dataclass(frozen=True)
class Run:
    """One unit of work: a condition at a seed (None for a run across seeds) and a task, for the per-task conditions."""

    condition: str
    seed: int | None
    task: str | None = None

    @property
    def name(self) -> str:
        """The run's folder inside the sweep folder, e.g. seed0/single/rte."""
        return run_folder(Path(), self.condition, self.seed, self.task).as_posix()

    def folder(self, sweep: Path) -> Path:
        return run_folder(sweep, self.condition, self.seed, self.task)

    def is_done(self, sweep: Path) -> bool:
        return (self.folder(sweep) / finished_marker(self.condition)).is_file()

    def needs(self, tasks: Sequence[str], seeds: Sequence[int]) -> list[Run]:
        """The runs whose outputs this one reads, for its tasks: the same seed's runs of the conditions it needs,
        a run across seeds (an ensemble) for a run that needs one, and every one of the sweep's `seeds` for a run across seeds."""
        needed = []
        for name in CONDITIONS[self.condition].needs():
            condition = CONDITIONS[name]
            of_tasks = ([self.task] if self.task else tasks) if condition.per_task else [None]
            of_seeds = [None] if condition.across_seeds else seeds if CONDITIONS[self.condition].across_seeds else [self.seed]
            needed.extend(Run(name, seed, task) for seed in of_seeds for task in of_tasks)
        return needed


def plan(tasks: Sequence[str], seeds: Sequence[int], conditions: Sequence[str]) -> list[Run]:
    """Every run of the sweep, including the runs the asked-for ones need, each after what it needs.

    Seed by seed (a sweep cut short leaves whole seeds), except that a run across
    seeds comes after every seed's runs it averages, and the runs that need it after it.
    """
    unknown = [condition for condition in conditions if condition not in CONDITIONS]
    if unknown:
        raise BamError(f"unknown condition {unknown[0]!r}; choose from {', '.join(CONDITIONS)}, or a student's with +METHOD (a loss weighting: multi+uncertainty)")
    needed, queue = set(), list(conditions)
    while queue:  # what the asked-for conditions need, and what that needs in turn
        condition = queue.pop()
        if condition not in needed:
            needed.add(condition)
            queue.extend(CONDITIONS[condition].needs())
    ordered = sorted(needed, key=condition_order)  # CONDITIONS lists each after what it needs
    runs = []
    for phase in sorted({_phase(name) for name in ordered}):
        names = [name for name in ordered if _phase(name) == phase]
        runs.extend(Run(name, None, task) for name in names if CONDITIONS[name].across_seeds for task in _tasks_of(name, tasks))
        runs.extend(Run(name, seed, task) for seed in seeds for name in names if not CONDITIONS[name].across_seeds for task in _tasks_of(name, tasks))
    return runs


def _tasks_of(condition: str, tasks: Sequence[str]) -> list[str | None]:
    return list(tasks) if CONDITIONS[condition].per_task else [None]


def _phase(condition: str) -> int:
    """How many runs across seeds lie on the longest chain of needs up to `condition` (itself included)."""
    upstream = max((_phase(name) for name in CONDITIONS[condition].needs()), default=0)
    return upstream + 1 if CONDITIONS[condition].across_seeds else upstream


def execute(sweep: str, recipe: dict, run: Run, data_dirs: list[str], threads: int | None, seeds: Sequence[int]) -> float:
    """Carry out one run (in a worker process or a Slurm job); returns its wall time in seconds.

    `threads` None means every core this process may use (a Slurm job's own allocation);
    `seeds` are the sweep's, whose teachers an ensemble averages.
    """
    import torch

    from bam.config import build
    from bam.ensemble import ensemble_teachers
    from bam.finetune import finetune
    from bam.student import distill
    from bam.tasks import resolve
    from bam.teachers import train_teachers
    from bam.training import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    started = time.perf_counter()
    condition, sweep, data = CONDITIONS[run.condition], Path(sweep), [Path(data_dir) for data_dir in data_dirs]
    if condition.stage == "ensemble":  # no training and no recipe: the members' own recorded recipes describe the task
        ensemble_teachers(list(ensemble_members(sweep, run, seeds).values()), teacher_store(sweep, run.condition, run.seed), [run.task])
        return time.perf_counter() - started
    settings = build(Recipe, recipe)
    tasks = resolve(settings, run.task)
    # What the run records as its recipe: its own seed, its own task where it trains one, its own schedule and start.
    settings = dataclasses.replace(settings, seed=run.seed, tasks=tuple(task.name for task in tasks))
    if condition.stage == "finetune":  # from the whole saved model of the condition it starts from, head included
        start = run_folder(sweep, condition.starting_model, run.seed)
        finetune(start, settings, tasks, data_dir=data, store=teacher_store(sweep, run.condition, run.seed))
        return time.perf_counter() - started
    if condition.starting_model is not None:
        settings = dataclasses.replace(settings, model=str(trained_encoder(sweep, condition.starting_model, run.seed, run.task)))
    if condition.stage == "teachers":
        train_teachers(settings, tasks, data_dir=data, store=teacher_store(sweep, run.condition, run.seed))
    else:
        settings = condition_recipe(settings, condition)
        teachers = teacher_store(sweep, condition.teacher, run.seed) if condition.teacher else sweep / "no-teachers"
        distill(settings, tasks, data_dir=data, teacher_store=teachers, out=run.folder(sweep), save_teacher_store=condition.teaches)
    return time.perf_counter() - started


def condition_recipe(settings: Recipe, condition) -> Recipe:
    """The recipe a student condition trains with: its annealing, and its loss weighting where its name gives one
    (with that method's default settings, unless the recipe's own method is the same), on the sampler that method needs."""
    student = dataclasses.replace(settings.student, anneal=condition.anneal)
    if condition.loss_weighting and condition.loss_weighting != student.loss_weighting:
        student = dataclasses.replace(student, loss_weighting=condition.loss_weighting, loss_weighting_options={})
    return with_weighting_samplers(dataclasses.replace(settings, student=student), f"condition {condition.name}")


def ensemble_members(sweep: Path, run: Run, seeds: Sequence[int]) -> dict[int, Path]:
    """The teacher stores an ensemble run averages, by seed: those of the runs it needs."""
    return {need.seed: teacher_store(sweep, need.condition, need.seed) for need in run.needs([run.task], seeds)}


class _Done:
    """A finished 'future' for runs executed in the calling process."""

    def __init__(self, call: Callable[[], float]):
        try:
            self._value, self._error = call(), None
        except Exception as error:  # reported with the run's name by the scheduler
            self._value, self._error = None, error

    def done(self) -> bool:
        return True

    def result(self):
        if self._error is not None:
            raise self._error
        return self._value


def run_sweep(
    recipe_path: Path,
    *,
    out: Path,
    seeds: Sequence[int],
    conditions: Sequence[str],
    data_dir: DataDirectories,
    overrides: Sequence[str] = (),
    workers: int = 1,
    threads: int | None = None,
    executor=None,
    on_event: Callable[[str, Run], None] = lambda event, run: None,
) -> pd.DataFrame:
    """Run (or resume) a sweep and return its results table, also written to `out/results.csv`.

    `executor` is anything with `submit(function, *arguments)` returning an object with
    `done()` and `result()` (a submitit executor, for Slurm: every run that can start is
    submitted at once); by default runs go to a process pool of `workers`, or stay in this
    process when `workers` is 1. Each run uses `threads` CPU threads (default: the cores
    shared among the workers; under an executor, the job's own cores). Results are
    identical for the same recipe, seed and thread count; runs record their thread count.
    """
    from bam.tasks import resolve

    if any(parse_override(assignment)[0] == ["seed"] for assignment in overrides):
        raise BamError("--set seed: a sweep gives each run its own seed (use --seeds and --first-seed)")
    recipe = load_recipe(recipe_path, overrides)
    tasks = [task.name for task in resolve(recipe)]
    runs = plan(tasks, seeds, conditions)  # before anything is written: an unknown condition leaves no folder behind
    for name in dict.fromkeys(run.condition for run in runs):  # a student's weighting its recipe cannot train, before any teacher trains
        if CONDITIONS[name].stage == "student":
            condition_recipe(recipe, CONDITIONS[name])
    if len(seeds) < 2 and any(CONDITIONS[run.condition].across_seeds for run in runs):
        asking = [condition for condition in conditions if _phase(condition) > 0]
        raise BamError(f"{', '.join(asking)}: the ensemble of every seed's teachers needs at least 2 seeds, this sweep has {len(seeds)} (an ensemble of one teacher is not an ensemble)")
    check_writable(out)
    out.mkdir(exist_ok=True)
    data = [str(folder.resolve()) for folder in as_directories(data_dir)]
    with exclusive(out / "sweep.lock", f"sweep folder {out}"):
        _check_or_write_description(out / "sweep.json", {"recipe": to_dict(recipe), "data_dir": describe_directories(data_dir)})
        for run in runs:  # a finished ensemble of other seeds' teachers would teach this command's students
            if CONDITIONS[run.condition].across_seeds and run.is_done(out):
                check_built_from(teacher_store(out, run.condition, run.seed), run.task, ensemble_members(out, run, seeds))
        pending = [run for run in runs if not run.is_done(out)]
        for run in runs:
            if run not in pending:
                on_event("skipped", run)
        capacity = workers if executor is None else len(runs)  # a cluster's scheduler queues every ready run itself
        if executor is None:
            threads = threads or max(1, len(os.sched_getaffinity(0)) // workers)
        pool = None
        if executor is None and workers > 1:
            pool = executor = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))

        def submit(run: Run):
            on_event("started", run)
            job = (str(out), to_dict(recipe), run, data, threads, list(seeds))
            return _Done(lambda: execute(*job)) if executor is None else executor.submit(execute, *job)

        try:
            failed = _schedule(pending, tasks, seeds, out, submit, capacity, on_event)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        table = collect(out, tasks)
        write_csv(table, out / "results.csv")
    if failed:
        run, error = failed[0]
        message = first_line(error)
        raise BamError(f"{len(failed)} run(s) failed; first: {run.name}: {message} (tracebacks in {out / 'errors'})")
    return table


def _schedule(pending: list[Run], tasks: Sequence[str], seeds: Sequence[int], out: Path, submit, capacity: int, on_event) -> list[tuple[Run, Exception]]:
    """Start every run once what it needs has finished, at most `capacity` at a time; returns the runs that failed."""
    failed: list[tuple[Run, Exception]] = []
    in_flight: dict[Run, object] = {}
    while pending or in_flight:
        failed_runs = {run for run, _ in failed}
        for run in list(pending):
            if any(need in failed_runs for need in run.needs(tasks, seeds)):
                pending.remove(run)
                failed.append((run, BamError("not run: a run it needs failed")))
                on_event("not run", run)
        startable = [run for run in pending if all(need.is_done(out) for need in run.needs(tasks, seeds))]
        if not startable and not in_flight:
            failed.extend((run, BamError("not run: a run it needs did not finish")) for run in pending)
            break
        for run in startable[: capacity - len(in_flight)]:
            pending.remove(run)
            in_flight[run] = submit(run)
        finished = [run for run, handle in in_flight.items() if handle.done()]
        for run in finished:
            try:
                in_flight.pop(run).result()
            except Exception as error:  # one failed run must not stop the others
                failed.append((run, error))
                _keep_traceback(out, run, error)
                on_event("failed", run)
            else:
                write_csv(collect(out, tasks), out / "results.csv")  # current while a long sweep runs
                on_event("finished", run)
        if in_flight and not finished:
            time.sleep(0.5)
    return failed


def _keep_traceback(out: Path, run: Run, error: Exception) -> None:
    """A failed run's full traceback, for debugging; the command line shows one line."""
    folder = out / "errors"
    folder.mkdir(exist_ok=True)
    (folder / f"{run.name.replace('/', '_')}.txt").write_text("".join(traceback.format_exception(error)))


def _check_or_write_description(path: Path, description: dict) -> None:
    """A sweep folder belongs to one recipe: resuming with other settings would mix results."""
    if not path.is_file():
        write_json(path, description)
        return
    stored = read_json(path)
    if not isinstance(stored, dict):
        raise BamError(f"{path}: not a sweep description")
    if isinstance(stored.get("recipe"), dict):
        # Read through today's Recipe: a setting added to bam since the folder was made takes its default,
        # which is what the older code did, so it does not count as a difference.
        with contextlib.suppress(BamError):
            stored = {**stored, "recipe": as_read_back(to_dict(build(Recipe, stored["recipe"])))}
    wanted, stored = _flatten(as_read_back(description)), _flatten(stored)
    there, now = (lambda key: stored.get(key, "(absent)")), (lambda key: wanted.get(key, "(absent)"))
    differing = sorted(key for key in wanted.keys() | stored.keys() if there(key) != now(key))
    if differing:
        key = differing[0]
        raise BamError(f"{path.parent}: this sweep folder was made with other settings ({key}: {there(key)!r} there, {now(key)!r} now); use another --out")


def _flatten(table: dict, prefix: str = "") -> dict:
    """Nested tables as one level of dotted keys, so that a difference can be named."""
    flat = {}
    for name, value in table.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


# What each row tells about its run besides scores, from a teacher's manifest or a run's run.json.
RUN_FACTS = ("wall_seconds", "code", "threads", "processes", "precision")


def _run_rows(sweep: Path, run: Run) -> list[dict]:
    folder = run.folder(sweep)

    def damaged(what: str) -> BamError:  # bam writes these folders whole; someone edited or half-deleted this one
        return BamError(f"{folder}: a damaged run folder ({what}); delete it and run the sweep again to redo the run")

    def read(name: str) -> dict:
        if not (folder / name).is_file():
            raise damaged(f"no {name}")
        about = read_json(folder / name)
        if not isinstance(about, dict):
            raise damaged(f"{name} is not a JSON object")
        return about

    def scores(values, where: str) -> dict:
        if not (isinstance(values, dict) and _is_number(values.get("score")) and all(map(_is_number, values.values()))):
            raise damaged(f"{where} is not a table of numbers with a score")
        return values

    base = {"condition": run.condition, "seed": run.seed}
    teachers = CONDITIONS[run.condition].writes_store
    about = read("manifest.json" if teachers else "run.json")
    facts = {key: about.get(key) for key in RUN_FACTS}  # runs written before `processes` was recorded lack it
    if teachers:
        return [{**base, "task": run.task, **scores(about.get("dev_metrics"), "manifest.json's dev_metrics"), **facts}]
    results = read("metrics.json")
    if not isinstance(results.get("tasks"), dict) or not _is_number(results.get("average")):
        raise damaged("metrics.json has no 'tasks' table or no 'average'")
    rows = [{**base, "task": task, **scores(values, f"metrics.json's {task}"), **facts} for task, values in results["tasks"].items()]
    if not CONDITIONS[run.condition].per_task:
        rows.append({**base, "task": "average", "score": results["average"], **facts})
    return rows


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def collect(sweep: Path, tasks: Sequence[str]) -> pd.DataFrame:
    """One row per finished run and task, plus a `task = average` row per condition and seed.

    Every finished run in the folder counts, including seeds and conditions the
    latest command did not ask for.
    """
    seeds = sorted(int(folder.name[4:]) for folder in sweep.glob("seed*") if folder.name[4:].isdigit())
    # A run across seeds (an ensemble) has no seed to give a row; the students it teaches have theirs.
    runs = [run for run in plan(tasks, seeds, conditions_in(sweep)) if not CONDITIONS[run.condition].across_seeds]
    rows = [row for run in runs if run.is_done(sweep) for row in _run_rows(sweep, run)]
    table = pd.DataFrame(rows, columns=["condition", "seed", "task", "score", "wall_seconds"] if not rows else None)
    # The per-task conditions get their average once every task of the seed has finished.
    per_task = [name for name in table["condition"].unique() if CONDITIONS[name].per_task]
    for (condition, seed), group in table[table["condition"].isin(per_task)].groupby(["condition", "seed"]):
        if set(group["task"]) == set(tasks):
            average = {
                "condition": condition, "seed": seed, "task": "average", "score": group["score"].mean(),
                "wall_seconds": group["wall_seconds"].sum(),
                **{key: ",".join(sorted(set(map(str, group[key])))) for key in RUN_FACTS if key != "wall_seconds"},
            }  # fmt: skip
            table = pd.concat([table, pd.DataFrame([average])], ignore_index=True)
    order = {condition: index for index, condition in enumerate(sorted(table["condition"].unique(), key=condition_order))}
    task_order = {task: index for index, task in enumerate([*tasks, "average"])}
    table = table.sort_values(["condition", "seed", "task"], key=lambda values: values.map({**order, **task_order}) if values.name != "seed" else values)
    leading = ["condition", "seed", "task", "score"]
    return table[leading + [name for name in table.columns if name not in leading]].reset_index(drop=True)
