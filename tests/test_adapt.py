"""`bam adapt` (MT-DNN's few-data domain adaptation) on the tiny encoder: nested subsets, starts, resume, report, bad input."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from bam.adapt import nested_subset
from bam.errors import BamError

from conftest import GLUE_FIXTURE, write_recipe
from test_cli import bam


def test_subsets_are_seeded_by_the_draw_nested_across_fractions_and_never_empty():
    small, large, everything = (nested_subset(1000, fraction, draw=3) for fraction in (0.001, 0.1, 1.0))
    assert (len(small), len(large), len(everything)) == (1, 100, 1000)
    assert set(small) <= set(large) <= set(everything) == set(range(1000))
    assert list(large) == sorted(large) and np.array_equal(large, nested_subset(1000, 0.1, draw=3))
    assert not np.array_equal(large, nested_subset(1000, 0.1, draw=4))
    assert len(nested_subset(40, 0.001, draw=0)) == 1  # a subset smaller than a batch still trains
    for fraction in (0.0, 1.5, -0.1):
        with pytest.raises(BamError, match=r"--fractions: .* is not in \(0, 1\]"):
            nested_subset(40, fraction, draw=0)


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("adapt")
    recipe = write_recipe(folder, tiny_model)
    run = bam("distill", recipe, "--anneal", "none", "--data-dir", GLUE_FIXTURE, "--out", folder / "multi", "--set", 'tasks=["stsb","cola"]')
    assert run.exit_code == 0, run.output
    command = ["adapt", recipe, "--task", "rte", "--start", "pretrained", "--start", folder / "multi", "--fractions", "0.01,1", "--draws", "2", "--data-dir", GLUE_FIXTURE, "--out", folder / "out"]
    result = bam(*command)
    assert result.exit_code == 0, result.output
    return folder, command, result


def test_every_cell_trains_from_its_start_on_its_subset(adapted):
    folder, _, _ = adapted
    table = pd.read_csv(folder / "out" / "results.csv")
    assert len(table) == 8 and set(table["start"]) == {"pretrained", "multi"}
    assert table.groupby("fraction")["train_rows"].unique().to_dict() == {0.01: [1], 1.0: [40]}
    cell = json.loads((folder / "out" / "multi" / "fraction-0.01" / "draw1" / "rte" / "manifest.json").read_text())
    assert cell["recipe"]["model"] == str(folder / "multi" / "model" / "encoder")
    assert not (folder / "out" / "multi" / "fraction-0.01" / "draw1" / "rte" / "model").exists()  # predictions only
    # The two draws of 1% hold different rows; 100% is one subset, whose draws differ by their training seed alone.
    def manifest(fraction, draw):
        return json.loads((folder / "out" / "pretrained" / f"fraction-{fraction}" / f"draw{draw}" / "rte" / "manifest.json").read_text())

    assert manifest("0.01", 0)["files"]["train"]["sha256"] != manifest("0.01", 1)["files"]["train"]["sha256"]
    assert [manifest("1", draw)["seed"] for draw in (0, 1)] == [0, 1]
    assert manifest("1", 0)["files"]["dev"]["sha256"] != manifest("1", 1)["files"]["dev"]["sha256"]


def test_a_second_run_skips_every_finished_cell_and_the_report_compares_starts(adapted, tmp_path):
    folder, command, first = adapted
    before = pd.read_csv(folder / "out" / "results.csv")
    again = bam(*command)
    assert again.exit_code == 0, again.output
    assert again.stderr.count("skipped") == 8
    pd.testing.assert_frame_equal(pd.read_csv(folder / "out" / "results.csv"), before)
    report = bam("report", folder / "out", "--out", tmp_path / "report")
    assert report.exit_code == 0, report.output
    text = (tmp_path / "report" / "report.md").read_text()
    assert "p_greater_than_pretrained" in text and (tmp_path / "report" / "fractions.png").stat().st_size > 0


def test_a_later_command_adds_its_cells_and_a_start_from_other_weights_is_refused(adapted, tmp_path):
    folder, command, _ = adapted
    recipe = command[1]
    result = bam("adapt", recipe, "--task", "rte", "--start", "pretrained", "--fractions", "0.5", "--draws", "2", "--data-dir", GLUE_FIXTURE, "--out", folder / "out")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(folder / "out" / "results.csv")
    assert len(table) == 10 and (table["start"] == "multi").sum() == 4  # the earlier command's cells are kept
    other = tmp_path / "multi"  # another run of the same name
    shutil.copytree(folder / "multi", other)
    heads = other / "model" / "heads.safetensors"
    heads.write_bytes(heads.read_bytes()[:-4] + bytes(4))
    result = bam(*[other if part == folder / "multi" else part for part in command])
    assert result.exit_code == 2 and "the cells of start 'multi' came from other weights" in result.stderr


def test_a_start_with_another_tokenizer_or_pooling_is_refused(adapted, tmp_path, tiny_chinese_model):
    import shutil

    folder, command, _ = adapted
    for change, message in (("tokenizer", "its encoder's tokenizer is not the recipe's model's"), ("pooling", "its model pools with 'mean', the recipe with 'first'")):
        run = tmp_path / change
        shutil.copytree(folder / "multi", run)
        if change == "tokenizer":
            shutil.copy(tiny_chinese_model / "tokenizer.json", run / "model" / "encoder" / "tokenizer.json")
        else:
            heads = json.loads((run / "model" / "heads.json").read_text())
            (run / "model" / "heads.json").write_text(json.dumps({**heads, "pooling": "mean"}))
        arguments = [run if part == folder / "multi" else tmp_path / f"out-{change}" if part == folder / "out" else part for part in command]
        result = bam(*arguments)
        assert result.exit_code == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize(
    "options, message",
    [
        (["--fractions", "0.5,0"], r"--fractions: 0 is not in \(0, 1\]"),
        (["--fractions", "half"], r"--fractions: 'half' is not a comma-separated list of numbers"),
        (["--draws", "0"], r"--draws: 0 must be at least 1"),
        (["--start", "pretrained", "--start", "pretrained"], r"--start: two starts are named 'pretrained'"),
        (["--task", "mnli"], r"--tasks: 'mnli' is not one of this recipe's tasks"),
    ],
)
def test_bad_adaptation_inputs_are_one_line(tmp_path, tiny_model, options, message):
    recipe = write_recipe(tmp_path, tiny_model)
    arguments = ["adapt", recipe, *(["--task", "rte"] if "--task" not in options else []), *options, "--data-dir", GLUE_FIXTURE, "--out", tmp_path / "out"]
    result = bam(*arguments)
    assert result.exit_code == 2, result.output
    assert __import__("re").search(message, result.stderr), result.stderr


@pytest.mark.parametrize("fractions", ["", ",", " "])
def test_no_fraction_is_one_line_and_writes_nothing(tiny_recipe, tmp_path, fractions):
    result = bam("adapt", tiny_recipe, "--task", "rte", "--start", "pretrained", "--fractions", fractions, "--data-dir", GLUE_FIXTURE, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "--fractions: no fraction given" in result.stderr
    assert not (tmp_path / "out").exists()


def test_bad_data_is_refused_before_the_folder_is_made(tmp_path, tiny_model):
    data = tmp_path / "data"
    shutil.copytree(GLUE_FIXTURE, data)
    train = data / "RTE" / "train.tsv"
    train.write_text(train.read_text() + "999\tthe owl sleeps\tthe owl\tmaybe\n")
    recipe = write_recipe(tmp_path, tiny_model)
    result = bam("adapt", recipe, "--task", "rte", "--fractions", "1", "--draws", "1", "--data-dir", data, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "RTE/train.tsv:" in result.stderr and "'maybe'" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()  # an adapt.json written first would refuse the corrected data as "another recipe"
