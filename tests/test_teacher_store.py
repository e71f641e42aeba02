import json

import pytest
import torch

from bam.config import Recipe, TaskSpec
from bam.errors import BamError
from bam.tasks import Task, resolve
from bam.teacher_store import Predictions, read_manifest, read_predictions, read_teacher, write_teacher

RTE = resolve(Recipe(model="m", tasks=("rte",)))[0]
IDS = torch.arange(5)
OUTPUTS = torch.randn(5, 2)
LABELS = torch.tensor([0, 1, 1, 0, 1])


def store_with_rte(tmp_path):
    write_teacher(
        tmp_path, RTE,
        predictions={"train": Predictions(IDS, OUTPUTS, LABELS), "dev": Predictions(torch.arange(2), torch.zeros(2, 2), torch.tensor([0, 1]))},
        train_fingerprint="abc", details={"seed": 3},
        save_model=lambda folder: folder.mkdir(),
    )  # fmt: skip
    return tmp_path


def test_round_trip(tmp_path):
    store = store_with_rte(tmp_path)
    assert torch.equal(read_teacher(store, RTE, IDS, "abc"), OUTPUTS)
    manifest = read_manifest(store, "rte")
    assert manifest["labels"] == ["entailment", "not_entailment"] and manifest["seed"] == 3
    assert manifest["files"]["dev"]["examples"] == 2
    assert sorted(path.name for path in store.iterdir()) == ["rte"]  # no scratch folders left behind


def test_missing_store_and_missing_task_are_refused(tmp_path):
    with pytest.raises(BamError, match="does not exist"):
        read_teacher(tmp_path / "absent", RTE, IDS, "abc")
    with pytest.raises(BamError, match="has no finished teacher for task 'rte'"):
        read_teacher(tmp_path, RTE, IDS, "abc")


def test_half_written_teacher_is_not_taken_as_finished(tmp_path):
    def crash(folder):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_teacher(tmp_path, RTE, predictions={"train": Predictions(IDS, OUTPUTS, LABELS)}, train_fingerprint="abc", details={}, save_model=crash)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BamError, match="no finished teacher"):
        read_teacher(tmp_path, RTE, IDS, "abc")


def test_different_training_data_is_refused(tmp_path):
    with pytest.raises(BamError, match="made from different training data"):
        read_teacher(store_with_rte(tmp_path), RTE, IDS, "abd")


def test_different_example_ids_are_refused(tmp_path):
    with pytest.raises(BamError, match="example ids do not match"):
        read_teacher(store_with_rte(tmp_path), RTE, torch.tensor([0, 1, 2, 4, 3]), "abc")


def test_wrong_label_order_is_refused(tmp_path):
    swapped = Task("rte", TaskSpec(labels=("not_entailment", "entailment")))
    with pytest.raises(BamError, match="label order"):
        read_teacher(store_with_rte(tmp_path), swapped, IDS, "abc")


def test_corrupted_or_truncated_predictions_are_refused(tmp_path):
    store = store_with_rte(tmp_path)
    path = store / "rte" / "train.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-4] + bytes(4))
    with pytest.raises(BamError, match="checksum does not match"):
        read_teacher(store, RTE, IDS, "abc")
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BamError, match="checksum does not match"):
        read_teacher(store, RTE, IDS, "abc")


def test_foreign_manifest_is_refused(tmp_path):
    store = store_with_rte(tmp_path)
    manifest = store / "rte" / "manifest.json"
    manifest.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(BamError, match="format 'something-else'"):
        read_teacher(store, RTE, IDS, "abc")


def test_manifest_missing_an_entry_is_refused(tmp_path):
    store = store_with_rte(tmp_path)
    path = store / "rte" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["labels"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(BamError, match="no 'labels' entry"):
        read_teacher(store, RTE, IDS, "abc")
    path.write_text("[1, 2]")
    with pytest.raises(BamError, match="format 'list'"):
        read_teacher(store, RTE, IDS, "abc")


def test_dev_predictions_keep_ids_outputs_and_gold_labels(tmp_path):
    stored = read_predictions(store_with_rte(tmp_path) / "rte" / "dev.safetensors")
    assert stored.ids.tolist() == [0, 1] and stored.labels.tolist() == [0, 1] and stored.outputs.shape == (2, 2)
