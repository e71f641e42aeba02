"""Seed sweeps on the tiny encoder: planning, results table, resume after a kill, parallel and submitit paths."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from click.testing import CliRunner

import bam.conditions
from bam.cli import main
from bam.conditions import Condition
from bam.errors import BamError
from bam.files import exclusive
from bam.hardware import resolve_precision
from bam.report import report
from bam.sweep import Run, plan, run_sweep

from conftest import GLUE_FIXTURE, write_recipe

TASKS = ["rte", "stsb"]


def test_plan_adds_what_the_conditions_need_in_order():
    runs = plan(TASKS, [0], ["bam", "multi-multi"])
    assert runs == [
        Run("single", 0, "rte"), Run("single", 0, "stsb"), Run("multi", 0), Run("bam", 0), Run("multi-multi", 0),
    ]  # fmt: skip
    assert Run("single-single", 3, "rte").needs(TASKS, [3]) == [Run("single", 3, "rte")]
    assert Run("bam", 1).needs(TASKS, [0, 1]) == [Run("single", 1, "rte"), Run("single", 1, "stsb")]
    with pytest.raises(BamError, match="unknown condition 'bma'"):
        plan(TASKS, [0], ["bma"])


def test_a_student_condition_with_a_loss_weighting_is_planned_after_its_base_needs():
    assert plan(TASKS, [0], ["bam+dwa", "multi"]) == [Run("single", 0, "rte"), Run("single", 0, "stsb"), Run("multi", 0), Run("bam+dwa", 0)]
    for unknown in ("single+dwa", "multi+dwaa", "multi+"):  # teachers are not students; a method must exist
        with pytest.raises(BamError, match=re.escape(f"unknown condition '{unknown}'") + ".*a student's with [+]METHOD"):
            plan(TASKS, [0], [unknown])


def test_weighted_conditions_train_record_and_report_their_method(recipe, tmp_path):
    out = tmp_path / "sweep"
    sweep(recipe, out, seeds=[0], conditions=["multi", "multi+dtp", "multi+mgda"])
    table = pd.read_csv(out / "results.csv")
    assert list(dict.fromkeys(table["condition"])) == ["multi", "multi+dtp", "multi+mgda"]
    recorded = {name: json.loads((out / "seed0" / name / "config.json").read_text())["student"] for name in ("multi+dtp", "multi+mgda")}
    assert recorded["multi+dtp"]["loss_weighting"] == "dtp" and recorded["multi+dtp"]["step_sampler"] == "proportional"
    assert recorded["multi+mgda"]["loss_weighting"] == "mgda" and recorded["multi+mgda"]["step_sampler"] == "all-tasks"
    # A weighting the recipe cannot train is refused before any run; a condition's own method starts from its defaults.
    with pytest.raises(BamError, match=r"condition multi\+gradnorm: student.loss_weighting = 'gradnorm' needs every task's loss in every step"):
        sweep(recipe, tmp_path / "other", seeds=[0], conditions=["multi+gradnorm"], overrides=['student.step_sampler="epoch-shuffle"'])
    assert not (tmp_path / "other").exists()
    result = CliRunner().invoke(main, ["plot-training", str(out / "seed0" / "multi+dtp")], catch_exceptions=False)
    assert result.exit_code == 0 and (out / "seed0" / "multi+dtp" / "training.png").stat().st_size > 10_000
    result = CliRunner().invoke(main, ["plot-training", str(out / "seed0" / "multi+dtp"), "--out", str(tmp_path / "curves.txt")])
    assert result.exit_code == 2 and "must end in .png, .svg or .pdf" in result.output


@pytest.fixture
def recipe(tmp_path, tiny_model):
    return write_recipe(tmp_path, tiny_model, "").parent / "tiny.toml"


def sweep(recipe, out, **options):
    options = {"seeds": [0, 1], "conditions": ["single", "multi", "bam"], "data_dir": GLUE_FIXTURE, "overrides": ['tasks=["rte","stsb"]'], **options}
    return run_sweep(recipe, out=out, **options)


def without_time(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns="wall_seconds")


def test_results_table_has_a_row_per_run_and_task_and_averages(recipe, tmp_path):
    table = sweep(recipe, tmp_path / "sweep", conditions=["single", "multi", "bam", "single-single", "multi-multi"])
    assert list(table.columns[:4]) == ["condition", "seed", "task", "score"]
    assert {"accuracy", "pearson", "spearman", "wall_seconds", "code", "threads", "processes", "precision"} <= set(table.columns)
    assert set(table["processes"].astype(str)) == {"1"}
    assert set(table["precision"]) == {resolve_precision("auto", "cpu")}
    counts = table.groupby("condition").size().to_dict()
    # per seed: 2 tasks + 1 average row, for each of 5 conditions, 2 seeds
    assert counts == {condition: 6 for condition in ("single", "multi", "bam", "single-single", "multi-multi")}
    single = table[(table.condition == "single") & (table.seed == 0)].set_index("task")["score"]
    assert single["average"] == pytest.approx((single["rte"] + single["stsb"]) / 2)
    assert pd.read_csv(tmp_path / "sweep" / "results.csv").shape == table.shape
    assert (tmp_path / "sweep" / "seed1" / "bam" / "predictions" / "rte.dev.safetensors").is_file()
    # The report finds every condition's dev predictions for the paired bootstrap, seed by seed.
    summary, comparisons = report(tmp_path / "sweep", tmp_path / "analysis", samples=100)
    for comparison in comparisons:
        assert len(comparison.bootstraps) == (0 if comparison.task == "average" else 2), comparison
    # The report reads the finished runs themselves, so a stale or missing results.csv changes nothing.
    (tmp_path / "sweep" / "results.csv").unlink()
    pd.testing.assert_frame_equal(report(tmp_path / "sweep", tmp_path / "analysis", samples=100)[0], summary)
    # Across two sweep folders the bootstrap reads each side's predictions from its own folder:
    # where one side's are missing, that seed has no bootstrap.
    shutil.copytree(tmp_path / "sweep", tmp_path / "again")
    shutil.rmtree(tmp_path / "again" / "seed1" / "bam" / "predictions")
    _, comparisons = report([tmp_path / "again", tmp_path / "sweep"], tmp_path / "analysis", target="again/bam", baseline="sweep/bam", samples=100)
    assert [len(item.bootstraps) for item in comparisons] == [1, 1, 0]
    assert all(item.median_difference == 0 for item in comparisons)
    # A finished run folder someone damaged is named, not a traceback.
    metrics = tmp_path / "again" / "seed1" / "multi" / "metrics.json"
    intact = metrics.read_text()
    metrics.write_text(intact.replace('"score": ', '"score": "x", "was": ', 1))
    with pytest.raises(BamError, match=r"again/seed1/multi: a damaged run folder \(metrics.json's rte is not a table of numbers with a score\)"):
        report(tmp_path / "again", tmp_path / "analysis", samples=100)
    metrics.write_text(intact)
    (tmp_path / "again" / "seed1" / "bam" / "run.json").unlink()
    with pytest.raises(BamError, match=r"again/seed1/bam: a damaged run folder \(no run.json\); delete it"):
        report(tmp_path / "again", tmp_path / "analysis", samples=100)


def test_a_sweep_folder_refuses_other_settings(recipe, tmp_path):
    sweep(recipe, tmp_path / "sweep", seeds=[0], conditions=["single"])
    with pytest.raises(BamError, match=r"made with other settings \(recipe.max_length: 32 there, 16 now\)"):
        sweep(recipe, tmp_path / "sweep", seeds=[0], conditions=["single"], overrides=['tasks=["rte","stsb"]', "max_length=16"])


def test_a_sweep_folder_from_an_older_bam_resumes_when_only_new_defaults_are_missing(recipe, tmp_path):
    sweep(recipe, tmp_path / "sweep", seeds=[0], conditions=["single"])
    described = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    del described["recipe"]["student"]["loss_weighting"], described["recipe"]["teacher"]["step_sampler"]  # settings added to bam later
    (tmp_path / "sweep" / "sweep.json").write_text(json.dumps(described))
    sweep(recipe, tmp_path / "sweep", seeds=[0], conditions=["single"])  # the same settings: resumed, nothing to train
    described["recipe"]["teacher"]["step_sampler"] = "all-tasks"  # a setting that was given, and differs
    (tmp_path / "sweep" / "sweep.json").write_text(json.dumps(described))
    with pytest.raises(BamError, match=r"recipe.teacher.step_sampler: 'all-tasks' there, 'proportional' now"):
        sweep(recipe, tmp_path / "sweep", seeds=[0], conditions=["single"])


def test_a_sweep_folder_in_use_is_refused_and_the_lock_ends_with_its_holder(recipe, tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    with exclusive(out / "sweep.lock", "held by this test"):
        with pytest.raises(BamError, match=rf"sweep folder {out} is in use by another bam process \(pid {os.getpid()}, lock"):
            sweep(recipe, out, seeds=[0], conditions=["single"])
    assert not list(out.glob("seed*")), "the refused sweep started a run"
    sweep(recipe, out, seeds=[0], conditions=["single"])  # the lock is gone with its holder (after a kill -9 too: see below)


def test_killed_sweep_resumes_to_the_same_table_with_every_run_done_once(recipe, tmp_path):
    reference = sweep(recipe, tmp_path / "reference")
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "bam.cli", "sweep", str(recipe), "--seeds", "2", "--out", str(out),
               "--data-dir", str(GLUE_FIXTURE), "--set", 'tasks=["rte","stsb"]']  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "seed0" / "single" / "stsb" / "manifest.json"
    deadline = time.time() + 240
    while not first.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first.exists(), "the sweep never finished its second run"
    finished_before = {path: path.stat().st_mtime_ns for path in out.glob("seed*/**/*.json")}
    resumed = sweep(recipe, out)
    pd.testing.assert_frame_equal(without_time(resumed), without_time(reference))
    for path, mtime in finished_before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was redone"
    assert not [path for path in out.rglob(".*") if path.name.endswith((".partial", ".retired"))]


def test_a_seed_override_is_refused_since_the_sweep_sets_seeds(recipe, tmp_path):
    with pytest.raises(BamError, match="--set seed: a sweep gives each run its own seed"):
        sweep(recipe, tmp_path / "sweep", overrides=['tasks=["rte"]', "seed=3"])
    with pytest.raises(BamError, match="unknown condition 'foo'"):
        sweep(recipe, tmp_path / "sweep", conditions=["foo"])
    assert not (tmp_path / "sweep").exists()


def test_workers_bound_the_runs_in_flight(recipe, tmp_path):
    events = []
    sweep(recipe, tmp_path / "sweep", conditions=["single"], workers=2, threads=1, on_event=lambda event, run: events.append(event))
    in_flight = [events[: index + 1].count("started") - events[: index + 1].count("finished") for index in range(len(events))]
    assert events.count("started") == 4 and max(in_flight) == 2  # 2 seeds x 2 teachers, never more than 2 at once


def test_parallel_workers_give_the_same_table(recipe, tmp_path):
    # Results depend on the thread count (summation order), so both sides use one thread per run.
    reference = sweep(recipe, tmp_path / "one", seeds=[0], conditions=["single", "bam"], threads=1)
    parallel = sweep(recipe, tmp_path / "two", seeds=[0], conditions=["single", "bam"], workers=2, threads=1)
    pd.testing.assert_frame_equal(without_time(parallel), without_time(reference))


def test_submitit_local_executor_runs_the_same_code_path(recipe, tmp_path):
    submitit = pytest.importorskip("submitit")
    reference = sweep(recipe, tmp_path / "here", seeds=[0], conditions=["multi"], threads=1)
    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(timeout_min=10)
    jobs = sweep(recipe, tmp_path / "jobs-sweep", seeds=[0], conditions=["multi"], executor=executor, threads=1)
    pd.testing.assert_frame_equal(without_time(jobs), without_time(reference))


def test_a_condition_that_starts_from_another_conditions_model_waits_for_it_and_loads_it(recipe, tmp_path, monkeypatch):
    """Conditions are data: a new one (here MT-DNN-like per-task fine-tuning of the multi model) needs no code."""
    fine_tune = Condition("fine-tune", "student", starting_model="multi", per_task=True)
    monkeypatch.setitem(bam.conditions.CONDITIONS, "fine-tune", fine_tune)
    assert Run("fine-tune", 0, "rte").needs(TASKS, [0]) == [Run("multi", 0)]
    assert plan(TASKS, [0], ["fine-tune"]) == [Run("multi", 0), Run("fine-tune", 0, "rte"), Run("fine-tune", 0, "stsb")]
    table = sweep(recipe, tmp_path / "sweep", seeds=[0], conditions=["fine-tune"])
    assert set(table["condition"]) == {"multi", "fine-tune"}
    config = json.loads((tmp_path / "sweep" / "seed0" / "fine-tune" / "rte" / "config.json").read_text())
    assert config["model"] == str(tmp_path / "sweep" / "seed0" / "multi" / "model" / "encoder") and config["tasks"] == ["rte"]


def test_the_report_names_the_runs_a_sweep_folder_is_missing(recipe, tmp_path):
    from bam.report import missing_runs

    sweep(recipe, tmp_path / "sweep", conditions=["single", "multi"])
    shutil.rmtree(tmp_path / "sweep" / "seed1" / "multi")  # deleted by hand, or lost with a disk; seed 1's teachers remain
    assert missing_runs(tmp_path / "sweep") == ["seed1/multi"]
    result = CliRunner().invoke(main, ["report", str(tmp_path / "sweep"), "--target", "multi", "--out", str(tmp_path / "analysis")])
    assert result.exit_code == 0, result.output
    assert "1 run(s) missing, not counted: seed1/multi" in " ".join(result.output.split())
    assert "**Missing runs:** 1 run(s)" in (tmp_path / "analysis" / "report.md").read_text()


def test_bam_ensemble_students_are_taught_by_the_ensemble_of_every_seeds_teachers(recipe, tmp_path):
    # One ensemble run per task for the whole sweep, after every seed's teachers of that task and before any student it teaches.
    assert plan(TASKS, [0, 1], ["bam-ensemble"]) == [
        Run("single", 0, "rte"), Run("single", 0, "stsb"), Run("single", 1, "rte"), Run("single", 1, "stsb"),
        Run("ensemble", None, "rte"), Run("ensemble", None, "stsb"), Run("bam-ensemble", 0), Run("bam-ensemble", 1),
    ]  # fmt: skip
    assert Run("ensemble", None, "rte").needs(TASKS, [0, 1]) == [Run("single", 0, "rte"), Run("single", 1, "rte")]
    assert Run("bam-ensemble", 1).needs(TASKS, [0, 1]) == [Run("ensemble", None, "rte"), Run("ensemble", None, "stsb")]
    out = tmp_path / "sweep"
    command = ["sweep", str(recipe), "--conditions", "bam-ensemble", "--seeds", "2", "--out", str(out), "--data-dir", str(GLUE_FIXTURE), "--set", 'tasks=["rte","stsb"]']
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "results.csv")
    # The ensemble has no seed, so no row of its own; each seed's student and teachers have theirs.
    assert table.groupby("condition").size().to_dict() == {"single": 6, "bam-ensemble": 6}
    for task in TASKS:
        manifest = json.loads((out / "ensemble" / task / "manifest.json").read_text())
        assert [(member["seed"], member["store"]) for member in manifest["members"]] == [(seed, str(out / f"seed{seed}" / "single")) for seed in (0, 1)]
    for seed in (0, 1):
        config = json.loads((out / f"seed{seed}" / "bam-ensemble" / "config.json").read_text())
        assert config["teacher_store"] == str(out / "ensemble") and config["student"]["anneal"] == "linear" and config["seed"] == seed
    result = CliRunner().invoke(main, ["report", str(out), "--target", "bam-ensemble", "--out", str(tmp_path / "analysis"), "--samples", "100"])
    assert result.exit_code == 0, result.output
    report_text = (tmp_path / "analysis" / "report.md").read_text()
    assert "| rte | bam-ensemble > single |" in report_text and "Missing runs" not in report_text
    _, comparisons = report(out, tmp_path / "analysis", target="bam-ensemble", samples=100)
    assert [len(item.bootstraps) for item in comparisons] == [2, 2, 0]  # the students' dev predictions found, seed by seed
    # The ensemble taught these students: a command with other seeds, or a member retrained since, is refused before any run starts.
    with pytest.raises(BamError, match=r"ensemble/rte: built from the teachers of seeds 0, 1, not of the seeds 0, 1, 2 asked for now; delete it"):
        sweep(recipe, out, seeds=[0, 1, 2], conditions=["bam-ensemble"])
    assert not (out / "seed2").exists()
    shutil.rmtree(out / "seed1" / "single" / "stsb")
    shutil.copytree(out / "seed0" / "single" / "stsb", out / "seed1" / "single" / "stsb")
    with pytest.raises(BamError, match=r"ensemble/stsb: seed 1's teacher \(.*seed1/single/stsb\) is no longer the one it was built from"):
        sweep(recipe, out, conditions=["bam-ensemble"])


def test_an_ensemble_of_one_seed_is_refused(recipe, tmp_path):
    command = ["sweep", str(recipe), "--conditions", "single,bam-ensemble", "--seeds", "1", "--out", str(tmp_path / "sweep"), "--data-dir", str(GLUE_FIXTURE)]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines()[-1] == (
        "bam: error: bam-ensemble: the ensemble of every seed's teachers needs at least 2 seeds, this sweep has 1 (an ensemble of one teacher is not an ensemble)"
    )
    assert not (tmp_path / "sweep").exists()
