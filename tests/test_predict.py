"""`bam predict` end to end: files in every supported format, metrics equal to the run's, and every bad input as one line."""

import csv
import io
import json

import pytest
import torch

import bam

from conftest import GLUE_FIXTURE, write_recipe
from test_cli import bam as bam_command


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model):
    """A student run directory, trained without teachers on the fixture tasks (fp32, like prediction)."""
    folder = tmp_path_factory.mktemp("predict")
    recipe = write_recipe(folder, tiny_model)
    run = folder / "run"
    result = bam_command("distill", recipe, "--anneal", "none", "--data-dir", GLUE_FIXTURE, "--out", run, "--set", "precision='fp32'")
    assert result.exit_code == 0, result.output
    return run


def run_metrics(run, task):
    return json.loads((run / "metrics.json").read_text())["tasks"][task]


def printed_metrics(output: str, task: str) -> dict[str, float]:
    """The metrics line `bam predict` prints: '<task> metrics on <file>: name value  name value  score value'."""
    line = next(line for line in output.splitlines() if line.startswith(f"{task} metrics on"))
    words = line.split(": ", 1)[1].split()
    return {name: float(value) for name, value in zip(words[::2], words[1::2])}


@pytest.mark.parametrize("task, folder", [("rte", "RTE"), ("stsb", "STS-B"), ("cola", "CoLA")])
def test_a_dev_file_with_labels_gives_the_runs_metrics(run, task, folder):
    result = bam_command("predict", run, GLUE_FIXTURE / folder / "dev.tsv", "--task", task)
    assert result.exit_code == 0, result.output
    printed = printed_metrics(result.stderr, task)
    for name, value in run_metrics(run, task).items():
        assert printed[name] == pytest.approx(value, abs=0.006)  # printed to 2 decimals


def test_a_dev_file_without_labels_is_answered_row_by_row(run, tmp_path):
    lines = (GLUE_FIXTURE / "RTE" / "dev.tsv").read_text().splitlines()
    unlabelled = tmp_path / "rte.tsv"
    unlabelled.write_text("\n".join("\t".join(line.split("\t")[:3]) for line in lines) + "\n")  # index, sentence1, sentence2
    out = tmp_path / "answers.csv"
    result = bam_command("predict", run, unlabelled, "--task", "rte", "--out", out, "--id-column", "index")
    assert result.exit_code == 0, result.output
    assert "metrics" not in result.stderr
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["id", "label", "probability_entailment", "probability_not_entailment"]
    pairs = [tuple(line.split("\t")[1:3]) for line in lines[1:]]
    expected = bam.load(run).predict(pairs, "rte")
    assert [row["id"] for row in rows] == [line.split("\t")[0] for line in lines[1:]]
    for row, answer in zip(rows, expected, strict=True):
        assert row["label"] == answer.label
        assert float(row["probability_entailment"]) == pytest.approx(answer.probabilities["entailment"], abs=1e-6)


def test_json_lines_in_and_out_with_named_columns(run, tmp_path):
    source = tmp_path / "mine.jsonl"
    records = [{"key": f"q{number}", "first": first, "second": second} for number, (first, second) in
               enumerate([("the cat sleeps in the house", "the cat sleeps"), ("a dog runs", "the owl hides in the barn")])]  # fmt: skip
    source.write_text("".join(json.dumps(record) + "\n" for record in records) + "\n")  # a blank last line is skipped
    out = tmp_path / "answers.jsonl"
    result = bam_command("predict", run, source, "--task", "rte", "--text-columns", "first,second", "--id-column", "key", "--out", out)
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [answer["id"] for answer in answers] == ["q0", "q1"]
    assert set(answers[0]) == {"id", "label", "probabilities"}
    expected = bam.load(run).predict([(record["first"], record["second"]) for record in records], "rte")
    assert [answer["label"] for answer in answers] == [answer.label for answer in expected]


def test_csv_with_quoted_commas_and_regression_values_on_stdout(run, tmp_path):
    source = tmp_path / "pairs.csv"
    source.write_text('a,b\n"the cat, the dog",the cat\nthe fox runs,"the fox, it runs"\n')
    result = bam_command("predict", run, source, "--task", "stsb", "--text-columns", "a,b")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    expected = bam.load(run).predict([("the cat, the dog", "the cat"), ("the fox runs", "the fox, it runs")], "stsb")
    assert [row["id"] for row in rows] == ["0", "1"]
    assert [float(row["value"]) for row in rows] == pytest.approx([answer.value for answer in expected], abs=1e-6)


def test_positions_for_a_file_without_a_header(run, tmp_path):
    source = tmp_path / "sentences.tsv"
    source.write_text("x\tthe cat sleeps\ny\tthe dog runs in the garden\n")
    result = bam_command("predict", run, source, "--task", "cola", "--text-columns", "1", "--no-header", "--id-column", "0")
    assert result.exit_code == 0, result.output
    assert [row["id"] for row in csv.DictReader(io.StringIO(result.stdout))] == ["x", "y"]
    result = bam_command("predict", run, source, "--task", "cola", "--text-columns", "1", "--no-header", "--id-column", "key")
    assert result.exit_code == 2 and "column 'key' is named, but the file is read without a header" in result.stderr


def fixture_copy(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "name, text, options, message",
    [
        ("in.xlsx", "a\tb\n", [], r"in.xlsx: not a supported input format \(the name must end in .tsv, .csv, .jsonl"),
        ("in.tsv", "index\tsentence1\tlabel\n0\tthe cat\tentailment\n", [], r"in.tsv: no column named 'sentence2' in the header \(index, sentence1, label\)"),
        ("in.tsv", "", [], "in.tsv: empty file"),
        ("in.tsv", "sentence1\tsentence2\tsentence2\nthe cat\tthe dog\tthe owl\n", [], r"in.tsv: the header names column 'sentence2' 2 times"),
        ("in.tsv", "sentence1\tsentence2\n", [], "in.tsv: no rows to predict"),
        ("in.tsv", "sentence1\tsentence2\tlabel\nthe cat\tthe dog\tentailment\nthe cat\tthe dog\tmaybe\n", [], r"in.tsv:3: label 'maybe' is not one of"),
        ("in.tsv", "sentence1\tsentence2\tlabel\nthe cat\tthe dog\n", [], r"in.tsv:2: row has 2 fields, column 'label' \(position 2\) is missing"),
        ("in.jsonl", '{"sentence1": "a", "sentence2": "b"}\n[1, 2]\n', [], r"in.jsonl:2: not a JSON object"),
        ("in.jsonl", '{"sentence1": "a", "sentence2": "b"}\n{"sentence1": "a",\n', [], r"in.jsonl:2: not a JSON object \("),
        ("in.jsonl", '{"sentence1": "a", "sentence2": ["b"]}\n', [], r"in.jsonl:1: field 'sentence2' must be a string or a number, not list"),
        ("in.jsonl", '{"sentence1": "a"}\n', [], r"in.jsonl:1: no text column 'sentence2'"),
        ("in.jsonl", '{"a": "x", "b": "y"}\n', ["--text-columns", "0,1"], "JSON lines have keys, not positions"),
        ("in.tsv", "sentence1\tsentence2\nthe cat\tthe dog\n", ["--text-columns", "a,b,c"], "--text-columns: give one or two columns"),
        ("in.tsv", "sentence1\tsentence2\nthe cat\tthe dog\n", ["--task", "rtee"], r"no head for task 'rtee' \(did you mean \"rte\"\?\)"),
        ("in.tsv", "sentence1\tsentence2\nthe cat\tthe dog\n", ["--out", "answers.txt"], r"--out .*answers.txt: the name must end in .csv, .jsonl"),
        ("in.tsv", "sentence1\tsentence2\nthe cat\tthe dog\n", ["--id-column", "key"], r"in.tsv: no column named 'key'"),
        ("in.tsv", "s\tlabel\nthe cat\t\n", ["--text-columns", "s", "--label-column", "4"], r"in.tsv:2: row has 2 fields, column 4 \(position 4\) is missing"),
        ("in.jsonl", '{"sentence1": "a", "sentence2": "b"}\n{"sentence1": "a", "sentence2": "b", "label": "entailment"}\n', [], r"in.jsonl:2: a label column 'label', unlike the first row"),
        ("in.jsonl", '{"a": "x", "b": "y", "k": 1}\n', ["--text-columns", "a,b", "--id-column", "2"], r"name the id column by key \(--id-column\)"),
        ("in.tsv", "the cat\tthe dog\n", ["--text-columns", "0,1"], r"--text-columns gives positions: say whether the file's first line is a header \(--header or --no-header\)"),
        ("in.tsv", "sentence1,sentence2\nthe cat,the dog\n", [], r"no column named 'sentence1' in the header \(sentence1,sentence2\)"),
        ("in.tsv", "sentence1\tsentence2\nthe cat\tthe dog\n", ["--id-column", ""], r"--id-column: an empty column name; give a header name or a 0-based position"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(run, tmp_path, name, text, options, message):
    source = fixture_copy(tmp_path, name, text)
    out = tmp_path / "answers.csv"
    arguments = ["--task", "rte", "--out", out, *options] if "--task" not in options else ["--out", out, *options]
    result = bam_command("predict", run, source, *arguments)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bam: error: "), result.stderr
    assert __import__("re").search(message, lines[0]), lines[0]
    assert not out.exists() and not (tmp_path / "answers.txt").exists()


@pytest.mark.parametrize("name", ["in.tsv", "in.csv", "in.jsonl"])
def test_bytes_that_are_not_utf8_are_named_by_line_as_in_training(run, tmp_path, name):
    rows = {"in.tsv": [b"sentence1\tsentence2", b"the cat\tthe dog", b"the \xff owl\tthe fox"],
            "in.csv": [b"sentence1,sentence2", b'"the cat, again",the dog', b"the \xff owl,the fox"],
            "in.jsonl": [b'{"sentence1": "the cat", "sentence2": "the dog"}', b'{"sentence1": "the cat", "sentence2": "the dog"}', b'{"sentence1": "the \xff owl", "sentence2": "the fox"}']}[name]
    source = tmp_path / name
    source.write_bytes(b"\n".join(rows) + b"\n")
    result = bam_command("predict", run, source, "--task", "rte", "--out", tmp_path / "answers.csv")
    assert result.exit_code == 2, result.output
    position = rows[2].index(b"\xff")
    assert result.stderr.strip().splitlines() == [f"bam: error: {source}:3: not UTF-8 text (byte 0xff at character {position} of the line)"]
    assert not (tmp_path / "answers.csv").exists()


def test_a_missing_input_file_is_one_line(run, tmp_path):
    result = bam_command("predict", run, tmp_path / "absent.tsv", "--task", "rte")
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [f"bam: error: {tmp_path / 'absent.tsv'}: input file not found"], result.output


def test_a_model_folder_with_unexpected_head_weights_is_one_line(run, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    copy = tmp_path / "run"
    shutil.copytree(run / "model", copy / "model")
    weights = load_file(copy / "model" / "heads.safetensors")
    save_file({**weights, "sst2.linear.weight": torch.zeros(2, 32)}, copy / "model" / "heads.safetensors")
    source = fixture_copy(tmp_path, "in.tsv", "sentence1\tsentence2\nthe cat\tthe dog\n")
    result = bam_command("predict", copy, source, "--task", "rte")
    assert result.exit_code == 2
    assert "head weights do not match heads.json (unexpected 'sst2.linear.weight'" in result.stderr


def test_row_numbers_count_blank_lines_as_training_does(run, tmp_path):
    source = fixture_copy(tmp_path, "in.tsv", "sentence1\tsentence2\nthe cat\tthe dog\n\nthe owl\tthe fox\n")
    result = bam_command("predict", run, source, "--task", "rte")
    assert result.exit_code == 0, result.output
    assert [row["id"] for row in csv.DictReader(io.StringIO(result.stdout))] == ["0", "2"]


def test_a_comma_separated_file_named_like_a_tab_separated_task_file_gets_a_hint(run, tmp_path):
    from bam.config import LocalFiles, TaskSpec
    from bam.errors import BamError
    from bam.predict import Columns, read_rows
    from bam.tasks import Task

    task = Task("tianchi", TaskSpec(labels=("a", "b"), local=LocalFiles(header=False, text_columns=(1,), label_column=2, train="train.csv")))
    source = fixture_copy(tmp_path, "test.csv", "0,the cat\n")
    with pytest.raises(BamError, match=r"test.csv:1: row has 1 fields, column 1 \(position 1\) is missing \(read as the task's files are, fields split by '\\t'; --format csv"):
        read_rows(source, task, Columns((1,), None, 0, False))
    assert read_rows(source, task, Columns((1,), None, 0, False), "csv").texts == ["the cat"]


def test_one_scored_regression_row_and_unscored_rows_do_not_break_the_metrics(run, tmp_path):
    source = fixture_copy(tmp_path, "in.tsv", "sentence1\tsentence2\tscore\nthe cat\tthe dog\t2.5\n")
    result = bam_command("predict", run, source, "--task", "stsb")
    assert result.exit_code == 0, result.output
    assert printed_metrics(result.stderr, "stsb") == {"pearson": 0.0, "spearman": 0.0, "score": 0.0}  # no correlation of one pair


def test_the_tasks_own_id_column_is_used_with_its_type():
    from bam.config import LocalFiles, TaskSpec
    from bam.predict import choose_columns
    from bam.tasks import Task

    task = Task("t", TaskSpec(labels=("a", "b"), local=LocalFiles(header=False, text_columns=(1,), label_column=2, id_column=-1)))
    assert choose_columns(task, [], None, None).id == -1  # a position counted from the end, not a header name '-1'
    assert choose_columns(task, [], "0", None).id == 0
