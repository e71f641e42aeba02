"""`bam run`: teachers, student and the summary in one command; a second run reuses what finished with the same settings."""

import json

import pytest


from conftest import GLUE_FIXTURE, write_recipe
from test_cli import bam as bam_command


def modified(folder):
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("pipeline")
    recipe = write_recipe(folder, tiny_model)
    store, out = folder / "teachers", folder / "run"
    result = bam_command("run", recipe, "--data-dir", GLUE_FIXTURE, "--teachers", store, "--out", out)
    assert result.exit_code == 0, result.output
    return recipe, store, out, result.stderr


def test_the_summary_sets_each_teacher_against_the_student(first_run):
    _, store, out, printed = first_run
    student = json.loads((out / "metrics.json").read_text())["tasks"]
    for task in ("rte", "stsb", "cola"):
        teacher = json.loads((store / task / "manifest.json").read_text())["dev_metrics"]["score"]
        row = next(line for line in printed.splitlines() if line.split("│")[1:2] and line.split("│")[1].strip() == task)
        cells = [cell.strip() for cell in row.split("│")[1:-1]]
        assert cells == [task, f"{teacher:.2f}", f"{student[task]['score']:.2f}", f"{student[task]['score'] - teacher:+.2f}"]
    assert "average" in printed


def test_a_second_run_reuses_everything(first_run):
    recipe, store, out, _ = first_run
    before = modified(store) | modified(out)
    result = bam_command("run", recipe, "--data-dir", GLUE_FIXTURE, "--teachers", store, "--out", out)
    assert result.exit_code == 0, result.output
    assert "reusing rte, stsb, cola" in result.stderr and f"student: reusing {out}" in result.stderr
    assert modified(store) | modified(out) == before


def test_a_changed_teacher_setting_retrains_the_teachers_and_the_student(first_run):
    recipe, store, out, _ = first_run
    result = bam_command("run", recipe, "--data-dir", GLUE_FIXTURE, "--teachers", store, "--out", out, "--tasks", "rte", "--set", "teacher.epochs=1")
    assert result.exit_code == 0, result.output
    assert "teachers: training rte" in result.stderr and "student: distilling" in result.stderr
    manifest = json.loads((store / "rte" / "manifest.json").read_text())
    assert manifest["recipe"]["teacher"]["epochs"] == 1.0
    assert json.loads((out / "config.json").read_text())["tasks"] == ["rte"]


def test_a_student_setting_reuses_the_teachers_and_retrains_the_student(first_run, tmp_path):
    recipe, store, _, _ = first_run
    out = tmp_path / "other-run"
    result = bam_command("run", recipe, "--data-dir", GLUE_FIXTURE, "--teachers", store, "--out", out, "--tasks", "stsb,cola", "--set", "student.epochs=1")
    assert result.exit_code == 0, result.output
    assert "teachers: reusing stsb, cola" in result.stderr and "teachers: training" not in result.stderr
    assert json.loads((out / "config.json").read_text())["student"]["epochs"] == 1.0
