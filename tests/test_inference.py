"""bam.load and Model.predict: every saved form loads, answers match the run's own dev predictions, bad calls are one line."""

import json
import math
import shutil

import pytest
import torch

import bam
from bam.errors import BamError
from bam.teacher_store import read_predictions

from conftest import GLUE_FIXTURE, write_recipe
from test_cli import bam as bam_command


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    """A teacher store and a student run directory trained on the fixture tasks with the tiny encoder."""
    folder = tmp_path_factory.mktemp("inference")
    recipe = write_recipe(folder, tiny_model)
    store, run = folder / "teachers", folder / "run"
    assert bam_command("train-teachers", recipe, "--data-dir", GLUE_FIXTURE, "--out", store).exit_code == 0
    result = bam_command("distill", recipe, "--teachers", store, "--data-dir", GLUE_FIXTURE, "--out", run, "--set", "precision='fp32'")
    assert result.exit_code == 0, result.output
    return store, run


def fixture_rows(folder: str, text_columns: list[int], header: bool = True) -> list:
    """The texts of a fixture dev file, in file order."""
    lines = (GLUE_FIXTURE / folder / "dev.tsv").read_text().splitlines()[1 if header else 0 :]
    rows = [line.split("\t") for line in lines if line]
    return [row[text_columns[0]] if len(text_columns) == 1 else (row[text_columns[0]], row[text_columns[1]]) for row in rows]


def test_a_run_directory_answers_as_its_saved_dev_predictions(trained):
    _, run = trained
    model = bam.load(run)
    assert sorted(model.tasks) == ["cola", "rte", "stsb"]
    pairs = fixture_rows("RTE", [1, 2])
    saved = read_predictions(run / "predictions" / "rte.dev.safetensors")
    outputs = model.outputs(pairs, "rte")
    assert torch.allclose(outputs, saved.outputs, atol=1e-5)  # same rows, same order, same head
    answers = model.predict(pairs, "rte")
    probabilities = torch.softmax(saved.outputs.double(), dim=-1)
    for answer, row in zip(answers, probabilities):
        assert answer.label == ["entailment", "not_entailment"][int(row.argmax())]
        assert list(answer.probabilities) == ["entailment", "not_entailment"]
        assert answer.probabilities["entailment"] == pytest.approx(float(row[0]), abs=1e-5)
        assert math.fsum(answer.probabilities.values()) == pytest.approx(1.0)


def test_regression_answers_are_on_the_original_scale(trained):
    _, run = trained
    model = bam.load(run)
    pairs = fixture_rows("STS-B", [7, 8])
    saved = read_predictions(run / "predictions" / "stsb.dev.safetensors")
    values = [answer.value for answer in model.predict(pairs, "stsb")]
    expected = (saved.outputs.squeeze(-1).double() * 5.0).tolist()  # label_range [0, 5]
    assert values == pytest.approx(expected, abs=1e-4)
    assert all(answer.label is None and answer.probabilities is None for answer in model.predict(pairs[:2], "stsb"))


def test_a_teacher_store_task_folder_loads_its_one_head(trained):
    store, _ = trained
    model = bam.load(store / "cola")
    assert list(model.tasks) == ["cola"]
    sentences = fixture_rows("CoLA", [3], header=False)
    saved = read_predictions(store / "cola" / "dev.safetensors")
    assert torch.allclose(model.outputs(sentences, "cola"), saved.outputs, atol=1e-5)


def test_order_of_answers_follows_the_texts_not_the_length_sorted_batches(trained):
    _, run = trained
    model = bam.load(run)
    pairs = fixture_rows("RTE", [1, 2])
    forward = model.outputs(pairs, "rte", batch_size=3)
    backward = model.outputs(pairs[::-1], "rte", batch_size=3)
    assert torch.allclose(forward, backward.flip(0), atol=1e-5)
    one_by_one = torch.cat([model.outputs([pair], "rte") for pair in pairs[:4]])
    assert torch.allclose(forward[:4], one_by_one, atol=1e-5)


@pytest.mark.parametrize(
    "texts, task, message",
    [
        (["the cat sleeps"], "rtee", r'no head for task .rtee. \(did you mean "rte"\?\)'),
        (["the cat sleeps"], "rte", "task 'rte' takes pairs of texts, got single texts"),
        ([("the cat", "sleeps")], "cola", "task 'cola' takes single texts, got pairs"),
        (["the cat", ("a", "b")], "cola", "mix single sentences and pairs"),
        ([("a", "b", "c")], "rte", "text 0: expected a string or a \\(first, second\\) pair"),
        ([3], "cola", "text 0: expected a string"),
        ("the cat sleeps", "cola", "a list of strings"),
    ],
)
def test_bad_calls_are_one_line(trained, texts, task, message):
    _, run = trained
    with pytest.raises(BamError, match=message):
        bam.load(run).predict(texts, task)


def test_no_texts_no_answers(trained):
    _, run = trained
    assert bam.load(run).predict([], "cola") == []


def test_folders_that_are_not_models_are_one_line(trained, tmp_path):
    store, run = trained
    with pytest.raises(BamError, match="no such model folder"):
        bam.load(tmp_path / "nowhere")
    with pytest.raises(BamError, match="not a bam model"):
        bam.load(store)  # the store, not one of its task folders
    (tmp_path / "weights.bin").write_text("?")
    with pytest.raises(BamError, match="is a file"):
        bam.load(tmp_path / "weights.bin")
    copy = tmp_path / "run"
    shutil.copytree(run / "model", copy / "model")
    (copy / "model" / "heads.json").write_text(json.dumps({"format": "bam-model/0"}))
    with pytest.raises(BamError, match="heads.json: format 'bam-model/0'"):
        bam.load(copy)
