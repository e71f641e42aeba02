import dataclasses
import os
import shutil
import time
from pathlib import Path

import pytest
from transformers import AutoTokenizer

import bam.data
from bam.config import Recipe
from bam.data import (
    cache_directory, column, fingerprint, load_task, load_tokenized, read_split,
    tokenizer_identity,
)  # fmt: skip
from bam.errors import BamError
from bam.model import load_tokenizer
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


def test_negative_column_positions_count_from_the_end(tmp_path):
    from bam.config import LocalFiles, TaskSpec

    (tmp_path / "train.tsv").write_text("x\tfirst text\tyes\ny\tsecond text\tno\n")
    spec = TaskSpec(labels=("no", "yes"), local=LocalFiles(text_columns=(-2,), label_column=-1, header=False))
    data = read_split(tmp_path / "train.tsv", spec)
    assert (data["text_a"], data["label"]) == (["first text", "second text"], [1, 0])
    too_far = TaskSpec(labels=("no", "yes"), local=LocalFiles(text_columns=(-9,), label_column=-1, header=False))
    with pytest.raises(BamError, match=r"train.tsv:1: row has 3 fields, column '-9' \(position -9\) is missing"):
        read_split(tmp_path / "train.tsv", too_far)


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
    return lambda: read_split(folder / "train.tsv", task(name).spec)


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


def test_bad_bytes_are_named_with_their_line_and_long_fields_read_whole(tmp_path):
    folder = tmp_path / "RTE"
    folder.mkdir()
    rows = "".join(f"{index}\ta\tb\tentailment\n" for index in range(3000))  # well past the first read buffer
    (folder / "train.tsv").write_bytes((HEADER + rows).encode() + b"3000\ta \xff\tb\tentailment\n")
    with pytest.raises(BamError, match=r"train.tsv:3002: not UTF-8 text \(byte 0xff at character 7 of the line\)"):
        read_split(folder / "train.tsv", task("rte").spec)
    # A long text is read whole, past Python csv's default limit of 131,072 characters.
    (folder / "train.tsv").write_text(HEADER + "0\ta\tb\tentailment\n" + "1\t" + "x" * 200_000 + "\tb\tentailment\n")
    assert read_split(folder / "train.tsv", task("rte").spec)[1]["text_a"] == "x" * 200_000
    # A byte-order mark opens the first line only (MRPC's files have one); it is not text.
    (folder / "train.tsv").write_bytes(b"\xef\xbb\xbf" + (HEADER + "0\ta\tb\tentailment\n").encode())
    assert read_split(folder / "train.tsv", task("rte").spec)[0]["text_a"] == "a"


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_every_line_ending_reads_alike(tmp_path, newline):
    folder = tmp_path / "RTE"
    folder.mkdir()
    (folder / "train.tsv").write_bytes(newline.join([HEADER.strip(), "0\ta\tb\tentailment", "1\tc é\td\tnot_entailment", ""]).encode())
    data = read_split(folder / "train.tsv", task("rte").spec)
    assert (data["text_a"], data["text_b"], data["label"], data["id"]) == (["a", "c é"], ["b", "d"], [0, 1], [0, 1])


def test_non_numeric_regression_label_is_named(tmp_path):
    folder = tmp_path / "STS-B"
    folder.mkdir()
    header = (GLUE_FIXTURE / "STS-B" / "train.tsv").read_text().splitlines()[0]
    (folder / "train.tsv").write_text(header + "\n0\tg\tf\ty\to\ts\ts\ta b\tc d\tfive\n")
    with pytest.raises(BamError, match=r"train.tsv:2: regression label 'five' is not a number"):
        read_split(folder / "train.tsv", task("stsb").spec)
    (folder / "train.tsv").write_text(header + "\n0\tg\tf\ty\to\ts\ts\ta b\tc d\t7.5\n")
    with pytest.raises(BamError, match=r"train.tsv:2: regression label '7.5' is outside the task's label_range \[0, 5\]"):
        read_split(folder / "train.tsv", task("stsb").spec)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(BamError, match=r"RTE/train.tsv: data file not found"):
        load_task(task("rte"), tmp_path)


def test_quotes_are_literal_text(tmp_path):
    data = broken(tmp_path, HEADER + '0\t"a quoted\tb\tentailment\n')()
    assert data[0]["text_a"] == '"a quoted'


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
        lambda path, name, split: datasets.Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "label": [5]}),
    )  # fmt: skip
    with pytest.raises(BamError, match=r"nyu-mll/glue/rte:train\[0\]: label 5 is not an index"):
        load_task(task("rte"), None)


def test_hub_rows_without_a_gold_label_are_skipped_keeping_their_ids(monkeypatch, caplog):
    import datasets

    monkeypatch.setattr(
        datasets, "load_dataset",
        lambda path, name, split: datasets.Dataset.from_dict({"sentence1": ["a", "b", "c"], "sentence2": ["x", "y", "z"], "label": [1, -1, 0]}),
    )  # fmt: skip
    with caplog.at_level("INFO", logger="bam"):
        data = load_task(task("rte"), None)
    assert (data.train["id"], data.train["text_a"], data.train["label"]) == ([0, 2], ["a", "c"], [1, 0])
    assert "skipped 1 row(s) without a gold label (-1)" in caplog.text


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
        read_split(tmp_path / "train.tsv", spec)


# The tokenization cache. Every test points BAM_CACHE_DIR at its own folder, never at the real ~/.cache.


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("BAM_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def tokenizer(tiny_model):
    return load_tokenizer(str(tiny_model))


def entries(cache):
    """The finished cache entries (hidden `.partial` folders excluded)."""
    folder = cache / "tokenized"
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith(".")) if folder.is_dir() else []


def as_rows(data):
    """Every split's features and values, for comparing two loads."""
    return {split: (dataset.features, dataset.to_dict()) for split, dataset in {"train": data.train, **data.dev}.items()}


def forbid_tokenizing(monkeypatch):
    def refuse(*arguments, **options):
        raise AssertionError("tokenized although the cache holds this split")

    monkeypatch.setattr(bam.data, "tokenize", refuse)


@pytest.mark.parametrize("name", ["rte", "cola"])  # a pair task and a single-sentence one (text_b is None)
def test_cached_splits_equal_uncached_ones(cache, tokenizer, monkeypatch, name):
    first, first_fingerprint = load_tokenized(task(name), GLUE_FIXTURE, tokenizer, 32)
    second, second_fingerprint = load_tokenized(task(name), GLUE_FIXTURE, tokenizer, 32)
    monkeypatch.setenv("BAM_CACHE_DIR", "off")
    uncached, uncached_fingerprint = load_tokenized(task(name), GLUE_FIXTURE, tokenizer, 32)
    assert first_fingerprint == second_fingerprint == uncached_fingerprint == fingerprint(load_task(task(name), GLUE_FIXTURE).train)
    expected = as_rows(uncached)
    assert set(expected["train"][1]) == {"id", "text_a", "text_b", "label", "input_ids", "token_type_ids", "attention_mask", "length"}
    assert as_rows(first) == expected and as_rows(second) == expected


def test_second_load_reads_the_cache_and_does_not_tokenize(cache, tokenizer, monkeypatch):
    load_tokenized(task("rte"), GLUE_FIXTURE, tokenizer, 32)
    assert len(entries(cache)) == 2  # train and dev
    forbid_tokenizing(monkeypatch)
    data, _ = load_tokenized(task("rte"), GLUE_FIXTURE, tokenizer, 32)
    assert len(entries(cache)) == 2
    # Memory-mapped from the entry's arrow file, not a copy in memory.
    assert all(file["filename"].startswith(str(cache / "tokenized")) for file in data.train.cache_files)


def test_the_same_tokenizer_from_another_folder_shares_entries(cache, tiny_model, tmp_path, monkeypatch):
    load_tokenized(task("rte"), GLUE_FIXTURE, load_tokenizer(str(tiny_model)), 32)
    shutil.copytree(tiny_model, tmp_path / "copy")
    forbid_tokenizing(monkeypatch)
    load_tokenized(task("rte"), GLUE_FIXTURE, load_tokenizer(str(tmp_path / "copy")), 32)
    assert len(entries(cache)) == 2


@pytest.mark.parametrize(("name", "content"), [("state.json", "[]"), ("state.json", "{}"), ("dataset_info.json", "[1]")])
def test_a_damaged_cache_entry_is_one_clear_error(cache, tokenizer, name, content):
    load_tokenized(task("rte"), GLUE_FIXTURE, tokenizer, 32)
    (cache / "tokenized" / entries(cache)[0] / name).write_text(content)
    with pytest.raises(BamError, match="unreadable tokenization cache entry .*; delete it, or set BAM_CACHE_DIR=off"):
        load_tokenized(task("rte"), GLUE_FIXTURE, tokenizer, 32)


def test_max_length_data_and_tokenizer_each_get_their_own_entry(cache, tiny_model, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model))
    load_tokenized(task("rte"), GLUE_FIXTURE, tokenizer, 32)
    assert len(entries(cache)) == 2
    load_tokenized(task("rte"), GLUE_FIXTURE, tokenizer, 16)
    assert len(entries(cache)) == 4
    cased = AutoTokenizer.from_pretrained(tiny_model, do_lower_case=False)
    assert tokenizer_identity(cased) != tokenizer_identity(tokenizer)
    load_tokenized(task("rte"), GLUE_FIXTURE, cased, 32)
    assert len(entries(cache)) == 6
    shutil.copytree(GLUE_FIXTURE / "RTE", tmp_path / "RTE")
    path = tmp_path / "RTE" / "train.tsv"
    path.write_text(path.read_text().replace("\tnot_entailment\n", "\tentailment\n", 1))
    changed, _ = load_tokenized(task("rte"), tmp_path, tokenizer, 32)
    assert len(entries(cache)) == 7  # a new entry for the changed train split; dev is unchanged
    assert changed.train.to_dict() == load_tokenized(task("rte"), tmp_path, tokenizer, 32)[0].train.to_dict()


def test_tokenizer_identity_ignores_the_truncation_left_by_the_last_call(tokenizer):
    before = tokenizer_identity(tokenizer)
    tokenizer(["the cat", "a dog"], ["sleeps", "runs"], truncation=True, max_length=5, padding=True)
    assert tokenizer_identity(tokenizer) == before


def test_a_half_written_entry_left_by_a_killed_process_is_ignored_and_redone(cache, tokenizer):
    expected = as_rows(load_tokenized(task("rte"), GLUE_FIXTURE, tokenizer, 32)[0])
    # Turn both finished entries into what a killed writer leaves: a hidden folder missing its last files.
    for name in entries(cache):
        left = cache / "tokenized" / f".{name}.0123456789abcdef.partial"
        (cache / "tokenized" / name).rename(left)
        (left / "state.json").unlink()
    again = load_tokenized(task("rte"), GLUE_FIXTURE, tokenizer, 32)[0]
    assert as_rows(again) == expected and len(entries(cache)) == 2


def test_leftovers_of_killed_writers_are_deleted_after_a_day_and_live_ones_kept(cache, tokenizer):
    folder = cache / "tokenized"
    abandoned, live = folder / ".aaaa.1111.partial", folder / ".bbbb.2222.partial"
    for leftover in (abandoned, live):
        leftover.mkdir(parents=True)
        (leftover / "data-00000-of-00001.arrow").write_bytes(b"half")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(abandoned, (two_days_ago, two_days_ago))
    load_tokenized(task("rte"), GLUE_FIXTURE, tokenizer, 32)  # writes two new entries
    assert not abandoned.exists() and live.is_dir()


def test_a_failed_write_leaves_nothing_behind(cache, tokenizer, monkeypatch):
    def full_disk(self, path, **options):
        (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bam.data.datasets.Dataset, "save_to_disk", full_disk)
    with pytest.raises(BamError, match=r"cannot write the tokenization cache \(No space left on device\); set BAM_CACHE_DIR"):
        load_tokenized(task("rte"), GLUE_FIXTURE, tokenizer, 32)
    assert list((cache / "tokenized").iterdir()) == []


def test_another_process_finishing_the_same_entry_first_is_harmless(cache, tokenizer, monkeypatch):
    real_tokenize = bam.data.tokenize
    raced = []

    def other_process_finishes_first(dataset, tokenizer, max_length):
        if not raced:  # while this process tokenizes its first split, "another" writes every entry of the task
            raced.append(True)
            load_tokenized(task("rte"), GLUE_FIXTURE, tokenizer, max_length)
        return real_tokenize(dataset, tokenizer, max_length)

    monkeypatch.setattr(bam.data, "tokenize", other_process_finishes_first)
    data, _ = load_tokenized(task("rte"), GLUE_FIXTURE, tokenizer, 32)
    assert raced and len(entries(cache)) == 2
    assert [path.name for path in (cache / "tokenized").iterdir() if path.name.startswith(".")] == []
    monkeypatch.setenv("BAM_CACHE_DIR", "off")
    monkeypatch.setattr(bam.data, "tokenize", real_tokenize)
    assert as_rows(data) == as_rows(load_tokenized(task("rte"), GLUE_FIXTURE, tokenizer, 32)[0])


def test_cache_off_writes_nothing(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("BAM_CACHE_DIR", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_directory() is None
    data, _ = load_tokenized(task("rte"), GLUE_FIXTURE, tokenizer, 32)
    assert data.train.cache_files == [] and list(tmp_path.iterdir()) == []


def test_cache_folder_comes_from_bam_cache_dir_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BAM_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_directory() == tmp_path / "home" / ".cache" / "bam"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_directory() == tmp_path / "xdg" / "bam"
    monkeypatch.setenv("BAM_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_directory() == tmp_path / "mine"


def test_an_unwritable_cache_folder_is_named(tmp_path, tokenizer, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("BAM_CACHE_DIR", str(tmp_path / "file"))
    with pytest.raises(BamError, match=r"file/tokenized: cannot write the tokenization cache .*set BAM_CACHE_DIR to another folder or to off"):
        load_tokenized(task("rte"), GLUE_FIXTURE, tokenizer, 32)


def test_several_data_directories_are_searched_in_order(tmp_path):
    other = tmp_path / "other"
    shutil.copytree(GLUE_FIXTURE / "RTE", other / "RTE")
    (other / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tthe owl sits\tthe owl waits\tnot_entailment\n")
    # GLUE_FIXTURE has no SciTail-like folder, so a task found only in the second directory comes from there ...
    shutil.copytree(GLUE_FIXTURE / "RTE", other / "EXTRA")
    extra = resolve(Recipe(model="m", tasks=("extra",), custom_tasks={"extra": dataclasses.replace(task("rte").spec, local=dataclasses.replace(task("rte").spec.local, folder="EXTRA"))}))[0]
    assert len(load_task(extra, [GLUE_FIXTURE, other]).train) == 40
    # ... and a folder both have comes from the first.
    assert len(load_task(task("rte"), [GLUE_FIXTURE, other]).train) == 40
    assert len(load_task(task("rte"), [other, GLUE_FIXTURE]).train) == 1


def test_a_task_folder_in_none_of_several_directories_is_named(tmp_path):
    with pytest.raises(BamError, match=r"task 'rte': none of the data directories \(.*\) has its folder 'RTE'"):
        load_task(task("rte"), [tmp_path / "a", tmp_path / "b"])


def test_data_directories_come_from_the_options_else_bam_data_dir(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    monkeypatch.setenv("BAM_DATA_DIR", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    assert bam.data.data_directories() == (tmp_path / "a", tmp_path / "b")
    assert bam.data.data_directories([tmp_path / "b"]) == (tmp_path / "b",)
    monkeypatch.delenv("BAM_DATA_DIR")
    assert bam.data.data_directories() == ()
    with pytest.raises(BamError, match=r"data directory .*missing does not exist"):
        bam.data.data_directories([tmp_path / "a", tmp_path / "missing"])


def test_a_header_naming_a_used_column_twice_is_refused(tmp_path):
    folder = tmp_path / "RTE"
    folder.mkdir()
    (folder / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\tsentence1\n0\ta\tb\tentailment\t3\n")
    with pytest.raises(BamError, match=r"train.tsv: the header names column 'sentence1' 2 times \(positions 1, 4\)"):
        read_split(folder / "train.tsv", task("rte").spec)
    # A duplicated column the task does not use is harmless.
    (folder / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\tnote\tnote\n0\ta\tb\tentailment\tx\ty\n")
    assert read_split(folder / "train.tsv", task("rte").spec)[0]["text_a"] == "a"


# JSON lines, rows without a gold label, ids from the file, held-out dev splits (the CLUE/Tianchi formats).


def nli_spec(**local):
    from bam.config import LocalFiles, TaskSpec

    settings = {"format": "jsonl", "text_columns": ("sentence1", "sentence2"), "label_column": "label", "skip_labels": ("-",), **local}
    return TaskSpec(labels=("entailment", "neutral", "contradiction"), local=LocalFiles(**settings))


def write_jsonl(path, records):
    import json

    path.write_text("".join((record if isinstance(record, str) else json.dumps(record, ensure_ascii=False)) + "\n" for record in records), encoding="utf-8")
    return path


def test_json_lines_are_read_by_key_with_unlabelled_rows_skipped_and_counted(tmp_path, caplog):
    path = write_jsonl(tmp_path / "train.json", [
        {"sentence1": "猫在睡觉", "sentence2": "猫醒着", "label": "contradiction", "label0": "contradiction", "genre": "news", "id": 0},
        {"sentence1": "狗在跑", "sentence2": "狗在动", "label": "-", "id": 1},
        "",
        {"sentence1": "鸟在唱", "sentence2": "有声音", "label": "entailment", "id": 2},
    ])  # fmt: skip
    with caplog.at_level("INFO", logger="bam"):
        data = read_split(path, nli_spec())
    # ids stay the file's lines (0-based): the skipped row and the blank line keep their numbers
    assert (data["id"], data["text_a"], data["text_b"], data["label"]) == ([0, 3], ["猫在睡觉", "鸟在唱"], ["猫醒着", "有声音"], [2, 0])
    assert "train.json: skipped 1 row(s) without a gold label (skip_labels: '-')" in caplog.text


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"sentence1": "a", "label": "neutral"}', r"train.json:1: no field 'sentence2'"),
        ('{"sentence1": "a", "sentence2": null, "label": "neutral"}', r"train.json:1: field 'sentence2' is null"),
        ('{"sentence1": "a", "sentence2": ["b"], "label": "neutral"}', r"train.json:1: field 'sentence2' must be a string or a number, not list"),
        ('["a", "b", "neutral"]', r"train.json:1: not a JSON object"),
        ('{"sentence1": "a", "sentence2": "b", "label": "neutral"', r"train.json:1: not a JSON object \("),
        ('{"sentence1": "a", "sentence2": "b", "label": "maybe"}', r"train.json:1: label 'maybe' is not one of entailment, neutral, contradiction"),
    ],
)
def test_bad_json_lines_name_the_line_and_field(tmp_path, line, message):
    with pytest.raises(BamError, match=message):
        read_split(write_jsonl(tmp_path / "train.json", [line]), nli_spec())


def test_ids_from_an_id_column_are_used_and_must_be_unique_integers(tmp_path):
    records = [{"sentence1": "a", "sentence2": "b", "label": "neutral", "id": 7}, {"sentence1": "c", "sentence2": "d", "label": "neutral", "id": "3"}]
    assert read_split(write_jsonl(tmp_path / "train.json", records), nli_spec(id_column="id"))["id"] == [7, 3]
    again = [*records, {"sentence1": "e", "sentence2": "f", "label": "neutral", "id": 7}]
    with pytest.raises(BamError, match=r"train.json:3: id 7 is used again \(first at .*train.json:1\)"):
        read_split(write_jsonl(tmp_path / "train.json", again), nli_spec(id_column="id"))
    with pytest.raises(BamError, match=r"train.json:1: id 'x-1' is not a non-negative integer"):
        read_split(write_jsonl(tmp_path / "train.json", [{**records[0], "id": "x-1"}]), nli_spec(id_column="id"))


def test_headerless_tab_separated_rows_with_crlf_and_literal_quotes(tmp_path):
    from bam.config import LocalFiles, TaskSpec

    # Tianchi's layout: id, text, label; no header, no quoting, some lines ending in \r\n.
    (tmp_path / "train.csv").write_bytes('0\t他说"好"\tlike\r\n1\t"下雨了\tsadness\n5\t真的吗？\tsurprise\r\n'.encode())
    spec = TaskSpec(labels=("sadness", "like", "surprise"), local=LocalFiles(header=False, text_columns=(1,), label_column=2, id_column=0))
    data = read_split(tmp_path / "train.csv", spec)
    assert (data["id"], data["text_a"], data["label"]) == ([0, 1, 5], ['他说"好"', '"下雨了', "真的吗？"], [1, 0, 2])


def test_a_held_out_dev_split_is_seeded_stratified_and_keeps_file_ids(tmp_path):
    from bam.config import LocalFiles, TaskSpec

    rows = [f"{row}\ttext {row}\t{'ab'[row % 2]}\n" for row in range(40)]
    (tmp_path / "X").mkdir()
    (tmp_path / "X" / "train.tsv").write_text("".join(rows))

    def split(seed):
        local = LocalFiles(folder="X", header=False, text_columns=(1,), label_column=2, id_column=0, dev_fraction=0.25, dev_seed=seed)
        recipe = Recipe(model="m", tasks=("x",), custom_tasks={"x": TaskSpec(labels=("a", "b"), local=local)})
        return load_task(resolve(recipe)[0], tmp_path)

    data = split(seed=0)
    train, dev = data.train["id"][:], data.dev["dev"]["id"][:]
    assert len(dev) == 10 and sorted(train + dev) == list(range(40)) and train == sorted(train) and dev == sorted(dev)
    assert sorted(data.dev["dev"]["label"][:]) == [0] * 5 + [1] * 5  # stratified: both labels held out equally
    assert split(seed=0).dev["dev"]["id"][:] == dev and split(seed=1).dev["dev"]["id"][:] != dev
    assert fingerprint(split(seed=1).train) != fingerprint(data.train)  # teachers of another hold-out are refused


def test_a_hold_out_that_cannot_be_stratified_is_one_line(tmp_path):
    from bam.config import LocalFiles, TaskSpec

    (tmp_path / "X").mkdir()
    (tmp_path / "X" / "train.tsv").write_text("a\tone\nb\ttwo\na\tthree\n")
    local = LocalFiles(folder="X", header=False, text_columns=(1,), label_column=0, dev_fraction=0.5)
    recipe = Recipe(model="m", tasks=("x",), custom_tasks={"x": TaskSpec(labels=("a", "b"), local=local)})
    with pytest.raises(BamError, match=r"train.tsv: cannot hold out dev_fraction = 0.5 of 3 rows"):
        load_task(resolve(recipe)[0], tmp_path)


def test_a_custom_task_without_a_hub_source_asks_for_a_data_folder():
    from bam.config import LocalFiles, TaskSpec

    recipe = Recipe(model="m", tasks=("x",), custom_tasks={"x": TaskSpec(labels=("a", "b"), local=LocalFiles(folder="X", text_columns=("text",)))})
    with pytest.raises(BamError, match=r"task 'x' has no hub source \(no `hub.text_fields`\); give the folder holding its files with --data-dir"):
        load_task(resolve(recipe)[0], None)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"sentence1": "a", "sentence2": "b", "label": "neutral", "id": ' + "9" * 5000 + "}", r"train.json:1: not a JSON object bam can read"),
        ('{"sentence1": ' + "[" * 100_000 + "]" * 100_000 + ', "sentence2": "b", "label": "neutral"}', r"train.json:1: not a JSON object bam can read"),
        ('{"sentence1": "a\\ud800", "sentence2": "b", "label": "neutral"}', r"train.json:1: field 'sentence1' holds an unpaired surrogate escape \(.ud800\)"),
        ('{"sentence1": "a", "sentence2": "b", "label": "neutral", "label": "contradiction"}', r"train.json:1: key 'label' appears twice"),
        ('{"sentence1": "a", "sentence2": "b", "label": "neutral", "id": "' + "9" * 5000 + '"}', r"train.json:1: id '9+' is not a non-negative integer"),
        ('{"sentence1": "a", "sentence2": "b", "label": "-"}', r"train.json: no examples \(all 1 rows have a label in skip_labels\)"),
    ],
)
def test_json_that_python_reads_badly_is_one_line(tmp_path, line, message):
    with pytest.raises(BamError, match=message):
        read_split(write_jsonl(tmp_path / "train.json", [line]), nli_spec(id_column="id") if '"id"' in line else nli_spec())


def test_a_hub_split_of_unlabelled_rows_only_is_refused(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda path, name, split: datasets.Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "label": [-1]}))
    with pytest.raises(BamError, match=r"nyu-mll/glue/rte split 'train': no examples \(all 1 rows have no gold label\)"):
        load_task(task("rte"), None)


@pytest.mark.parametrize("raw", ["0_5", " 0.5", "0.5 "])
def test_regression_labels_are_plain_numbers(tmp_path, raw):
    folder = tmp_path / "STS-B"
    folder.mkdir()
    header = (GLUE_FIXTURE / "STS-B" / "train.tsv").read_text().splitlines()[0]
    (folder / "train.tsv").write_text(header + f"\n0\tg\tf\ty\to\ts\ts\ta b\tc d\t{raw}\n")
    with pytest.raises(BamError, match=rf"train.tsv:2: regression label '{raw}' is not a number"):
        read_split(folder / "train.tsv", task("stsb").spec)
