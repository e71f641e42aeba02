import hashlib
import json
import re
import shutil
import stat
from pathlib import Path

import pytest
import torch

import bam.teacher_store
from bam.config import Recipe, TaskSpec
from bam.errors import BamError
from bam.tasks import Task, resolve
from bam.teacher_store import Predictions, read_manifest, read_predictions, read_teacher, write_predictions, write_teacher

RTE, MNLI = resolve(Recipe(model="m", tasks=("rte", "mnli")))
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
    teacher = read_teacher(store, RTE, IDS, "abc")
    manifest = read_manifest(store, "rte")
    assert torch.equal(teacher.outputs, OUTPUTS)
    assert teacher.sha256 == manifest["files"]["train"]["sha256"] == hashlib.sha256((store / "rte" / "train.safetensors").read_bytes()).hexdigest()
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


@pytest.mark.parametrize(("key", "value", "message"), [("train_fingerprint", None, "'train_fingerprint' must be a string, not None"), ("labels", "ab", "'labels' must be a list, not 'ab'"), ("files", [], "'files' must be an object, not []")])
def test_manifest_entries_of_the_wrong_type_are_refused(tmp_path, key, value, message):
    store = store_with_rte(tmp_path)
    path = store / "rte" / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    with pytest.raises(BamError, match=re.escape(message)):
        read_teacher(store, RTE, IDS, "abc")


@pytest.mark.parametrize("train_entry", ["train.safetensors", {}, {"path": "train.safetensors", "sha256": 7}])
def test_manifest_file_entries_of_the_wrong_shape_are_refused(tmp_path, train_entry):
    store = store_with_rte(tmp_path)
    path = store / "rte" / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "files": {**manifest["files"], "train": train_entry}}))
    with pytest.raises(BamError, match="'files.train' must be a table with the strings 'path' and 'sha256'"):
        read_teacher(store, RTE, IDS, "abc")


def test_a_manifest_that_is_not_text_is_refused(tmp_path):
    store = store_with_rte(tmp_path)
    (store / "rte" / "manifest.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(BamError, match="manifest.json: not valid JSON"):
        read_teacher(store, RTE, IDS, "abc")


def test_dev_predictions_keep_ids_outputs_and_gold_labels(tmp_path):
    stored = read_predictions(store_with_rte(tmp_path) / "rte" / "dev.safetensors")
    assert stored.ids.tolist() == [0, 1] and stored.labels.tolist() == [0, 1] and stored.outputs.shape == (2, 2)


def test_truncated_predictions_file_is_refused_without_a_manifest(tmp_path):
    path = store_with_rte(tmp_path) / "rte" / "dev.safetensors"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(BamError, match=r"dev\.safetensors: not a complete safetensors file, corrupted or truncated"):
        read_predictions(path)


def test_failed_write_keeps_the_old_predictions_and_leaves_no_scratch_file(tmp_path, monkeypatch):
    path = tmp_path / "rte.dev.safetensors"
    write_predictions(path, Predictions(IDS, OUTPUTS, LABELS))
    before = path.read_bytes()

    def crash(tensors, filename):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(bam.teacher_store, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        write_predictions(path, Predictions(IDS, torch.zeros(5, 2), LABELS))
    assert path.read_bytes() == before and [file.name for file in tmp_path.iterdir()] == [path.name]


def test_rewriting_a_file_leaves_readers_that_mapped_it_their_old_values(tmp_path):
    path = tmp_path / "rte.dev.safetensors"
    write_predictions(path, Predictions(IDS, OUTPUTS, LABELS))
    mapped = read_predictions(path)
    write_predictions(path, Predictions(IDS, torch.zeros(5, 2), LABELS))
    assert torch.equal(mapped.outputs, OUTPUTS) and torch.equal(read_predictions(path).outputs, torch.zeros(5, 2))


def test_prediction_files_are_as_readable_as_the_manifest(tmp_path):
    folder = store_with_rte(tmp_path) / "rte"
    manifest_permissions = stat.S_IMODE((folder / "manifest.json").stat().st_mode)
    assert {stat.S_IMODE(path.stat().st_mode) for path in folder.glob("*.safetensors")} == {manifest_permissions}


MILLION = 1_000_000


def write_large_teacher(store: Path, rows: int = MILLION) -> Predictions:
    """A synthetic MNLI-shaped teacher of `rows` examples (3 float32 outputs each); returns what was written.

    Also what the benchmark needs to time `read_teacher(store, MNLI, torch.arange(rows), "synthetic")`.
    """
    generator = torch.Generator().manual_seed(0)
    predictions = Predictions(torch.arange(rows), torch.randn(rows, 3, generator=generator), torch.randint(0, 3, (rows,), generator=generator))
    write_teacher(store, MNLI, predictions={"train": predictions}, train_fingerprint="synthetic", details={}, save_model=None)
    return predictions


@pytest.fixture(scope="module")
def large_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("large-store")
    return store, write_large_teacher(store)


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="resident memory is read from Linux's /proc")
def test_a_million_row_store_is_mapped_not_read(large_store):
    store, written = large_store
    train_ids = torch.arange(MILLION)
    size = written.outputs.nbytes  # 12 MB: large enough that a copy could not hide in noise
    before = resident_bytes()
    outputs = read_teacher(store, MNLI, train_ids, "synthetic").outputs
    opened = resident_bytes()
    assert opened - before < size // 4, f"opening grew resident memory by {(opened - before) >> 20} MB for {size >> 20} MB of outputs"
    assert str((store / "mnli" / "train.safetensors").resolve()) in Path("/proc/self/maps").read_text()
    # Not vacuous: reading every value brings the mapped pages in, and they are the written ones.
    assert torch.equal(outputs, written.outputs)
    assert resident_bytes() - opened > size // 2


def test_corrupted_or_truncated_copies_of_a_large_store_are_refused(large_store, tmp_path):
    store, _ = large_store
    flipped, truncated = tmp_path / "flipped", tmp_path / "truncated"
    for copy in (flipped, truncated):
        shutil.copytree(store, copy)
    with (flipped / "mnli" / "train.safetensors").open("r+b") as handle:
        handle.seek(handle.seek(0, 2) // 2)  # inside the outputs
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with (truncated / "mnli" / "train.safetensors").open("r+b") as handle:
        handle.truncate(handle.seek(0, 2) - 4096)
    for copy in (flipped, truncated):
        path = copy / "mnli" / "train.safetensors"
        with pytest.raises(BamError) as refused:
            read_teacher(copy, MNLI, torch.arange(MILLION), "synthetic")
        assert str(refused.value) == f"{path}: checksum does not match the manifest (corrupted or truncated)"


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_outputs_are_refused_on_write(tmp_path, value):
    outputs = OUTPUTS.clone()
    outputs[3, 1] = value
    with pytest.raises(BamError, match=r"train.safetensors: the model's outputs hold non-finite values"):
        write_predictions(tmp_path / "train.safetensors", Predictions(IDS, outputs, LABELS))
    assert list(tmp_path.iterdir()) == []


def test_a_store_with_non_finite_outputs_is_refused_on_read(tmp_path):
    """A store bam did not write (or wrote before it checked): NaN rows with a checksum that matches."""
    from safetensors.torch import save_file

    store = store_with_rte(tmp_path)
    path = store / "rte" / "train.safetensors"
    outputs = OUTPUTS.clone()
    outputs[0, 0] = float("nan")
    save_file({"ids": IDS, "outputs": outputs, "labels": LABELS}, path)
    manifest = json.loads((store / "rte" / "manifest.json").read_text())
    manifest["files"]["train"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (store / "rte" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BamError, match=r"task 'rte': teacher outputs hold non-finite values"):
        read_teacher(store, RTE, IDS, "abc")


def test_prediction_files_of_another_dtype_are_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"ids": IDS, "outputs": OUTPUTS.half(), "labels": LABELS}, tmp_path / "train.safetensors")
    with pytest.raises(BamError, match=r"train.safetensors: outputs are torch.float16, a teacher store holds float32"):
        read_predictions(tmp_path / "train.safetensors")
