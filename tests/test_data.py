import shutil

import numpy as np
import pytest

from bam.config import Recipe
from bam.data import column, fingerprint, length_grouped_batches, load_task, read_delimited
from bam.errors import BamError
from bam.tasks import resolve

from conftest import GLUE_FIXTURE


def task(name):
    return resolve(Recipe(model="m", tasks=(name,)))[0]


def test_reads_a_pair_task_with_a_header():
    data = load_task(task("rte"), GLUE_FIXTURE)
    assert len(data.train) == 40 and set(data.dev) == {"dev"} and len(data.dev["dev"]) == 12
    row = data.train[0]
    assert row["id"] == 0 and row["text_b"] == "the fish runs" and row["label"] == 0  # "entailment" is label 0


def test_reads_cola_without_a_header_and_by_column_position():
    data = load_task(task("cola"), GLUE_FIXTURE)
    assert len(data.train) == 40 and data.train[0]["text_b"] is None
    assert data.train[0]["label"] == 0 and data.train[1]["label"] == 1


def test_regression_labels_are_scaled_to_unit_range():
    labels = column(load_task(task("stsb"), GLUE_FIXTURE).train, "label")
    assert labels[0] == pytest.approx(1.0) and labels[1] == pytest.approx(3.8 / 5)


def test_fingerprint_is_stable_and_changes_with_one_label(tmp_path):
    first = fingerprint(load_task(task("rte"), GLUE_FIXTURE).train)
    assert first == fingerprint(load_task(task("rte"), GLUE_FIXTURE).train)
    shutil.copytree(GLUE_FIXTURE / "RTE", tmp_path / "RTE")
    path = tmp_path / "RTE" / "train.tsv"
    path.write_text(path.read_text().replace("\tnot_entailment\n", "\tentailment\n", 1))
    assert fingerprint(load_task(task("rte"), tmp_path).train) != first


def broken(tmp_path, text, name="rte"):
    folder = tmp_path / "RTE"
    folder.mkdir(exist_ok=True)
    (folder / "train.tsv").write_text(text)
    return lambda: read_delimited(folder / "train.tsv", task(name).spec)


HEADER = "index\tsentence1\tsentence2\tlabel\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"train.tsv: empty file"),
        (HEADER, r"train.tsv: no examples"),
        (HEADER + "0\tonly one sentence\n", r"train.tsv:2: row has 2 fields, column 'sentence2' \(position 2\) is missing"),
        (HEADER + "0\ta\tb\tentailment\n1\ta\tb\tmaybe\n", r"train.tsv:3: label 'maybe' is not one of entailment, not_entailment"),
        ("index\tsentence1\tsentence2\tgold\n0\ta\tb\tentailment\n", r"no column named 'label' in the header"),
    ],
)
def test_bad_files_name_file_row_and_field(tmp_path, text, message):
    with pytest.raises(BamError, match=message):
        broken(tmp_path, text)()


def test_non_numeric_regression_label_is_named(tmp_path):
    folder = tmp_path / "STS-B"
    folder.mkdir()
    header = (GLUE_FIXTURE / "STS-B" / "train.tsv").read_text().splitlines()[0]
    (folder / "train.tsv").write_text(header + "\n0\tg\tf\ty\to\ts\ts\ta b\tc d\tfive\n")
    with pytest.raises(BamError, match=r"train.tsv:2: regression label 'five' is not a number"):
        read_delimited(folder / "train.tsv", task("stsb").spec)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(BamError, match=r"RTE/train.tsv: data file not found"):
        load_task(task("rte"), tmp_path)


def test_quotes_are_literal_text(tmp_path):
    data = broken(tmp_path, HEADER + '0\t"a quoted\tb\tentailment\n')()
    assert data[0]["text_a"] == '"a quoted'


def test_length_grouped_batches_cover_every_example_once_with_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 128, size=1000)
    batches = length_grouped_batches(lengths, 16, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([lengths[batch].max() - lengths[batch].min() for batch in batches])
    assert spread < 10  # random batches of 16 would spread by about 110
    again = length_grouped_batches(lengths, 16, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


def test_hub_path_maps_label_indices_and_named_splits(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict(
            {"premise": ["p one", "p two"], "hypothesis": ["h one", "h two"], "label": [2, 0], "idx": [0, 1]}
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load_task(task("mnli"), None)
    assert calls == [
        ("nyu-mll/glue", "mnli", "train"),
        ("nyu-mll/glue", "mnli", "validation_matched"),
        ("nyu-mll/glue", "mnli", "validation_mismatched"),
    ]
    assert set(data.dev) == {"matched", "mismatched"}
    assert data.train[0] == {"id": 0, "text_a": "p one", "text_b": "h one", "label": 2}


def test_hub_label_outside_the_label_set_is_named(monkeypatch):
    import datasets

    monkeypatch.setattr(
        datasets, "load_dataset",
        lambda path, name, split: datasets.Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "label": [-1]}),
    )  # fmt: skip
    with pytest.raises(BamError, match=r"nyu-mll/glue/rte:train\[0\]: label -1 is not an index"):
        load_task(task("rte"), None)


def test_ids_are_file_rows_even_after_a_blank_line(tmp_path):
    data = broken(tmp_path, HEADER + "0\ta\tb\tentailment\n\n2\tc\td\tnot_entailment\n")()
    assert column(data, "id").tolist() == [0, 2]


def test_hub_field_that_does_not_exist_is_named(monkeypatch):
    import datasets

    monkeypatch.setattr(
        datasets, "load_dataset",
        lambda path, name, split: datasets.Dataset.from_dict({"text": ["a"], "label": [0]}),
    )  # fmt: skip
    with pytest.raises(BamError, match=r"has no field 'sentence1'"):
        load_task(task("rte"), None)


def test_a_task_without_text_columns_is_refused(tmp_path):
    from bam.config import LocalFiles, TaskSpec

    spec = TaskSpec(labels=("a", "b"), local=LocalFiles(folder="X", label_column="tag"))
    with pytest.raises(BamError, match="`local.text_columns` must name one or two columns"):
        read_delimited(tmp_path / "train.tsv", spec)
