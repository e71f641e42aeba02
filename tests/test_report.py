"""The report on a small synthetic results table whose medians and p-values are known."""

import shutil

import pandas as pd
from pathlib import Path

import pytest
from click.testing import CliRunner
from scipy import stats

from bam.cli import main
from bam.errors import BamError
from bam.report import load_results, report

from conftest import FIXTURES, REPOSITORY


@pytest.fixture
def sweep(tmp_path):
    folder = tmp_path / "toy-sweep"
    shutil.copytree(FIXTURES / "sweep", folder)
    return folder


def test_medians_iqr_and_counts(sweep, tmp_path):
    summary, _ = report(sweep, tmp_path / "out")
    by = summary.set_index(["task", "condition"])
    assert by.loc[("rte", "bam"), "median"] == 62 and by.loc[("rte", "bam"), "iqr"] == 2 and by.loc[("rte", "bam"), "n"] == 5
    assert by.loc[("rte", "multi"), "median"] == 57
    assert by.loc[("rte", "single"), "median"] == 59  # of 58, 62, 59, 65, 50


def test_p_values_of_bam_against_the_others(sweep, tmp_path):
    _, comparisons = report(sweep, tmp_path / "out")
    found = {(item.task, item.other): item for item in comparisons}
    versus_multi = found[("rte", "multi")]
    # Every bam seed above every multi seed: U = 25, exact one-sided p = 1 / C(10, 5) = 1/252.
    assert versus_multi.greater.u == 25 and versus_multi.greater.p == pytest.approx(1 / 252)
    assert versus_multi.median_difference == 5
    versus_single = found[("rte", "single")]
    # A tie (62 and 62): the exact permutation distribution over the C(10, 5) = 252 splits.
    expected = stats.mannwhitneyu([60, 61, 62, 63, 64], [58, 62, 59, 65, 50], alternative="greater", method=stats.PermutationMethod())
    assert versus_single.greater.u == 17.5 == expected.statistic  # 3 + 3 + 3.5 + 4 + 4, the tie counting half
    assert versus_single.greater.p == pytest.approx(expected.pvalue)
    # Same-seed differences: bam - multi is +5 on all 5 seeds, W = 15, p = 1/2**5. Against single: 2, -1, 3, -2, 14;
    # |d| ranks 2.5, 1, 4, 2.5, 5 (the twos tie): W = 11.5, and the flips whose negative ranks sum to at most 3.5
    # are {}, {1}, {2.5}, {2.5'}, {1, 2.5}, {1, 2.5'}: p = 6/32.
    assert (versus_multi.paired.w, versus_multi.paired.p) == (15, pytest.approx(1 / 32))
    assert (versus_single.paired.w, versus_single.paired.p) == (11.5, pytest.approx(6 / 32))
    assert "bam beats multi on rte: median +5.00, p = 0.00397 (one-sided), n = 5 vs 5" in versus_multi.sentence()
    assert "signed-rank p = 0.0312 over 5 same-seed pairs" in versus_multi.sentence()
    assert versus_single.sentence().startswith("bam does not significantly beat single on rte")


def test_report_files_and_small_sample_warning(sweep, tmp_path):
    results = sweep / "results.csv"
    kept = [line for line in results.read_text().splitlines() if not line.split(",")[1] in {"3", "4"}]
    results.write_text("\n".join(kept) + "\n")
    result = CliRunner().invoke(main, ["report", str(sweep), "--baseline", "multi", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| rte | 59.00 (2.00) [3] | 56.00 (1.00) [3] | 61.00 (1.00) [3] |" in text  # seeds 0-2 only
    assert "with 3 vs 3 runs no p below 0.05 is possible" in text
    assert "signed-rank p = 0.125 over 3 same-seed pairs (too few for p < 0.05)" in text  # bam - multi: +5 on 3 seeds
    assert sorted(path.name for path in (tmp_path / "out").glob("*.png")) == ["average.png", "rte.png"]
    copied = pd.read_csv(tmp_path / "out" / "results.csv")  # the report folder keeps the runs it summarised
    assert sorted(copied["seed"].unique()) == [0, 1, 2] and list(copied.columns[:4]) == ["condition", "seed", "task", "score"]
    assert copied[(copied.condition == "multi") & (copied.task == "rte")]["score"].median() == 56
    assert "bam > single" not in text  # --baseline keeps to one comparison


def test_two_sweeps_compare_conditions_named_after_their_folders(sweep, tmp_path, monkeypatch):
    # The same sweep run again with one setting changed: here every multi score is 3 points higher.
    changed = tmp_path / "toy-changed"
    shutil.copytree(sweep, changed)
    lines = (changed / "results.csv").read_text().splitlines()
    raised = [line if not line.startswith("multi,") else ",".join(_plus_three(line.split(","))) for line in lines]
    (changed / "results.csv").write_text("\n".join(raised) + "\n")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    result = CliRunner().invoke(
        main, ["report", str(changed), str(sweep), "--target", "toy-changed/multi", "--baseline", "toy-sweep/multi"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "work" / "analysis" / "toy-changed-vs-toy-sweep" / "report.md").is_file()  # the default folder
    _, comparisons = report([changed, sweep], tmp_path / "out", target="toy-changed/multi", baseline="toy-sweep/multi")
    on_rte = next(item for item in comparisons if item.task == "rte")
    assert on_rte.median_difference == 3
    assert on_rte.seed_differences == (3.0,) * 5  # seed by seed, the same +3
    expected = stats.mannwhitneyu(*_multi_rte_scores(changed, sweep), alternative="greater", method=stats.PermutationMethod())
    assert on_rte.greater.p == pytest.approx(expected.pvalue)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "# Sweep report: toy-changed vs toy-sweep" in text and "| toy-changed/multi | toy-sweep/bam |" not in text
    assert "| rte | toy-changed/multi > toy-sweep/multi | +3.00 | +3.00 [+3.00, +3.00] (5) |" in text


def _plus_three(fields: list[str]) -> list[str]:
    fields[3] = str(float(fields[3]) + 3)
    return fields


def _multi_rte_scores(*sweeps):
    for folder in sweeps:
        table = pd.read_csv(folder / "results.csv")
        yield table[(table.condition == "multi") & (table.task == "rte")]["score"].to_numpy()


def test_sweep_folders_with_one_name_or_a_missing_condition_are_refused_in_one_line(sweep, tmp_path):
    result = CliRunner().invoke(main, ["report", str(sweep), str(sweep.parent / "toy-sweep"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "two sweep folders are named 'toy-sweep'" in result.output
    other = tmp_path / "other"
    shutil.copytree(sweep, other)
    result = CliRunner().invoke(main, ["report", str(sweep), str(other), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "no runs of condition 'bam'" in result.output and "toy-sweep/bam" in result.output


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        (3, "x", "line 4: score 'x' is not a finite number"),
        (3, "inf", "line 4: score 'inf' is not a finite number"),
        (1, "1.5", "line 4: seed '1.5' is not a whole number"),
        (1, "1e40", "line 4: seed '1e40' is not a whole number from 0 to 2**32 - 1"),
        (0, "", "line 4: condition '' is empty"),
        (2, "mnli/m", "line 4: task 'mnli/m' is not a task name"),
        (2, "rte", "line 4: task 'rte' is listed twice for this condition and seed"),  # the average row made a second rte row
    ],
)
def test_a_results_table_with_a_bad_cell_is_refused_naming_the_line(sweep, tmp_path, column, value, message):
    lines = (sweep / "results.csv").read_text().splitlines()
    fields = lines[2].split(",")
    fields[column] = value
    lines[2] = ",".join(fields)
    lines.insert(1, "")  # a blank line still counts as a line of the file
    (sweep / "results.csv").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["report", str(sweep), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def _is_adaptation_report(folder: Path) -> bool:
    """A `bam adapt` report: its results.csv has a row per (start, fraction, draw), not per (condition, seed, task)."""
    return (folder / "results.csv").read_text().split(",", 1)[0] == "start"


@pytest.mark.parametrize("folder", sorted(path.parent.name for path in (REPOSITORY / "analysis").glob("*/results.csv") if not _is_adaptation_report(path.parent)))
def test_every_committed_report_folder_reads_back(folder):
    """A report folder stands on its own: its results.csv (conditions `sweep/name` where it compared sweeps) loads again."""
    table = load_results(REPOSITORY / "analysis" / folder)
    assert len(table) > 0 and table["score"].notna().all() and table["seed"].dtype.kind == "i"


@pytest.mark.parametrize("folder", sorted(path.parent.name for path in (REPOSITORY / "analysis").glob("*/results.csv") if _is_adaptation_report(path.parent)))
def test_every_committed_adaptation_report_reads_back(folder):
    """An adaptation report's results.csv summarises again: every start and fraction with a mean score."""
    import pandas as pd

    from bam.adapt import summary

    rows = summary(pd.read_csv(REPOSITORY / "analysis" / folder / "results.csv"))
    assert len(rows) > 0 and rows["mean"].notna().all() and rows["draws"].min() >= 1


def test_odd_but_valid_tables_read(sweep):
    path = sweep / "results.csv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace(",average,", ",NA,")  # a task may be called NA: cells are names, not missing values
    lines[3] = lines[3].rsplit(",", 1)[0] + ",NaN"  # a missing wall time, as pandas writes it
    lines.insert(3, "   ")  # a line of spaces is a blank line
    # A report over sweep folders names conditions after them, dots and all; its results.csv must read back.
    path.write_text("\n".join(line.replace("bam,", "lr1.5e-4 run/bam,") for line in lines) + "\n")
    table = load_results(sweep)
    assert "NA" in set(table["task"]) and len(table) == len(lines) - 2
    assert "lr1.5e-4 run/bam" in set(table["condition"]) and table["wall_seconds"].isna().sum() == 1
    path.write_text("condition,seed,task,score\nbam,0,rte,50,9\n")  # one field too many: pandas would make an index of it
    with pytest.raises(BamError, match="not a readable CSV table|line 2"):
        load_results(sweep)


def test_report_without_results_is_one_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no results.csv" in result.output


def test_runs_from_different_training_code_are_flagged(sweep, tmp_path):
    results = sweep / "results.csv"
    lines = results.read_text().splitlines()
    lines = [lines[0] + ",code"] + [line + (",aaaa" if line.split(",")[1] == "0" else ",bbbb") for line in lines[1:]]
    results.write_text("\n".join(lines) + "\n")
    report(sweep, tmp_path / "out")
    assert "came from 2 different versions of the training code (aaaa, bbbb)" in (tmp_path / "out" / "report.md").read_text()


def test_the_bootstrap_reads_the_split_the_task_declares_first(tmp_path):
    import torch

    from bam.report import dev_predictions
    from bam.teacher_store import Predictions, write_predictions

    run = tmp_path / "seed0" / "multi" / "predictions"
    run.mkdir(parents=True)
    for value, split in enumerate(("dev_extra", "validation", "train")):
        write_predictions(run / f"toy.{split}.safetensors", Predictions(torch.arange(2), torch.full((2, 1), float(value)), torch.zeros(2)))
    declared = dev_predictions(tmp_path, "multi", 0, "toy", ("validation", "dev_extra"))
    assert declared.outputs[0, 0].item() == 1.0
    assert dev_predictions(tmp_path, "multi", 0, "toy").outputs[0, 0].item() == 0.0  # no spec: alphabetical, train never


@pytest.mark.parametrize("cut", [3, 7])
def test_a_results_table_cut_short_is_refused_naming_the_line(sweep, cut):
    path = sweep / "results.csv"
    text = path.read_text()
    last_line = len(text.rstrip("\n").splitlines())
    path.write_text(text.rstrip("\n")[:-cut])  # the last row loses its end, as a killed copy or a full disk leaves it
    with pytest.raises(BamError, match=rf"results.csv: line {last_line}: .*(fields where the header has|ends in the middle of a line)"):
        load_results(sweep)
