"""`bam adapt` (MT-DNN's few-data domain adaptation) on the tiny encoder: nested subsets, starts, resume, report, bad input."""

import json

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
    # The two draws of 1% hold different rows; all of 100% is one subset, so both draws train the same model.
    ids = [json.loads((folder / "out" / "pretrained" / "fraction-0.01" / f"draw{draw}" / "rte" / "manifest.json").read_text())["files"]["train"] for draw in (0, 1)]
    assert ids[0]["sha256"] != ids[1]["sha256"]
    full = table[(table["fraction"] == 1.0) & (table["start"] == "pretrained")]["score"]
    assert full.nunique() == 1


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
