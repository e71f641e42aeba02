"""recipes/clue-tianchi.toml end to end on invented files in the exact CLUE/Tianchi release formats, with a Chinese tiny encoder."""

import csv
import io
import json

import pandas as pd
import pytest

from bam.config import load_recipe
from bam.data import load_task
from bam.errors import BamError
from bam.tasks import resolve

from conftest import REPOSITORY, TNEWS_LABELS
from test_cli import bam

RECIPE = REPOSITORY / "recipes" / "clue-tianchi.toml"


def small(model) -> list[str]:
    """The recipe's tasks and files, on the tiny encoder, in a few seconds."""
    settings = [f"model={json.dumps(str(model))}", "max_length=48", "eval_batch_size=32", "checkpoint_every=0"]
    for section in ("teacher", "student"):
        settings += [f"{section}.epochs=1", f"{section}.batch_size=16", f"{section}.learning_rate=1e-3"]
    return [option for setting in settings for option in ("--set", setting)]


def test_the_recipe_reads_the_released_files_as_they_are(clue_data, tiny_chinese_model):
    recipe = load_recipe(RECIPE, [f"model={json.dumps(str(tiny_chinese_model))}"])
    data = {task.name: load_task(task, clue_data) for task in resolve(recipe)}
    assert [len(data["ocnli"].train), len(data["ocnli"].dev["dev"])] == [60, 18]  # the '-' rows are skipped
    assert [len(data["ocemotion"].train), len(data["ocemotion"].dev["dev"])] == [75, 9]  # 10% of 84 held out
    assert [len(data["tnews"].train), len(data["tnews"].dev["dev"])] == [135, 15]  # one title of each of 15 codes held out
    assert sorted(data["tnews"].dev["dev"]["label"][:]) == list(range(15))
    # ids are the files' own (Tianchi's first column), so the held-out rows are known by them
    assert sorted(data["tnews"].train["id"][:] + data["tnews"].dev["dev"]["id"][:]) == list(range(150))
    quoted = [text for text in data["tnews"].train["text_a"][:] + data["tnews"].dev["dev"]["text_a"][:] if text.startswith('他说"')]
    assert len(quoted) == 21 and not any(text.endswith("\r") for text in data["tnews"].train["text_a"][:])


@pytest.fixture(scope="module")
def student(tmp_path_factory, clue_data, tiny_chinese_model):
    folder = tmp_path_factory.mktemp("clue-run")
    teachers = bam("train-teachers", RECIPE, *small(tiny_chinese_model), "--data-dir", clue_data, "--out", folder / "teachers")
    assert teachers.exit_code == 0, teachers.output
    assert "skipped 3 row(s) without a gold label (skip_labels: '-')" in teachers.stderr
    run = bam("distill", RECIPE, *small(tiny_chinese_model), "--anneal", "linear", "--data-dir", clue_data, "--teachers", folder / "teachers", "--out", folder / "run")
    assert run.exit_code == 0, run.output
    return folder / "run"


def test_teachers_and_an_annealed_student_score_macro_f1_averaged_over_the_tasks(student):
    metrics = json.loads((student / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"ocnli", "ocemotion", "tnews"}
    assert all(set(values) == {"macro_f1", "score"} for values in metrics["tasks"].values())
    assert metrics["average"] == pytest.approx(sum(values["macro_f1"] for values in metrics["tasks"].values()) / 3)
    assert json.loads((student / "config.json").read_text())["custom_tasks"]["tnews"]["local"]["dev_fraction"] == 0.1


def test_unlabelled_test_files_are_predicted_with_their_own_ids(student, clue_data):
    result = bam("predict", student, clue_data / "TNEWS" / "TNEWS_a.csv", "--task", "tnews")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["id"] for row in rows] == ["0", "1", "2", "3", "4"] and all(row["label"] in TNEWS_LABELS for row in rows)
    assert len(rows[0]) == 2 + 15 and "metrics" not in result.stderr  # id, label, one probability per code
    result = bam("predict", student, clue_data / "OCNLI" / "dev.json", "--task", "ocnli")
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader(io.StringIO(result.stdout)))) == 20  # every row answered, the 2 '-' rows unscored
    printed = next(line for line in result.stderr.splitlines() if line.startswith("ocnli metrics on"))
    assert float(printed.split()[-1]) == pytest.approx(json.loads((student / "metrics.json").read_text())["tasks"]["ocnli"]["macro_f1"], abs=0.006)


def test_a_sweep_reports_macro_f1(tmp_path, clue_data, tiny_chinese_model):
    result = bam("sweep", RECIPE, *small(tiny_chinese_model), "--seeds", "1", "--conditions", "single,multi,bam", "--data-dir", clue_data, "--out", tmp_path / "sweep")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert set(table["condition"]) == {"single", "multi", "bam"} and "macro_f1" in table.columns
    tasks = table[table["task"] != "average"]
    assert tasks["macro_f1"].notna().all() and (tasks["score"] == tasks["macro_f1"]).all()


def test_without_a_data_folder_ocnli_and_tnews_come_from_the_hubs_clue_dataset(monkeypatch, tiny_chinese_model):
    import datasets

    calls = []

    def stand_in(path, name, split):  # the hub's clue/ocnli and clue/tnews: label indices in the recipe's order, -1 for none
        calls.append((path, name, split))
        if name == "ocnli":
            return datasets.Dataset.from_dict({"sentence1": ["前提一", "前提二", "前提三"], "sentence2": ["假设一", "假设二", "假设三"], "label": [1, -1, 2], "idx": [0, 1, 2]})
        return datasets.Dataset.from_dict({"sentence": ["标题一", "标题二"], "label": [0, 14], "idx": [0, 1]})

    monkeypatch.setattr(datasets, "load_dataset", stand_in)
    recipe = load_recipe(RECIPE, [f"model={json.dumps(str(tiny_chinese_model))}"])
    ocnli, ocemotion, tnews = resolve(recipe)
    data = load_task(ocnli, None)
    assert calls == [("clue/clue", "ocnli", "train"), ("clue/clue", "ocnli", "validation")]
    assert [ocnli.spec.labels[label] for label in data.train["label"][:]] == ["entailment", "contradiction"]
    assert data.train["id"][:] == [0, 2]  # the unlabelled row is skipped, the others keep their rows
    assert [tnews.spec.labels[label] for label in load_task(tnews, None).train["label"][:]] == ["100", "116"]
    with pytest.raises(BamError, match="task 'ocemotion' has no hub source"):
        load_task(ocemotion, None)
