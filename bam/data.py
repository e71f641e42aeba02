"""Reading task data into `datasets.Dataset`s, fingerprinting it, tokenizing it, batching it.

Every split becomes a Dataset with the columns `id` (a stable integer: the
example's row in its file or hub split, or the file's own id column), `text_a`,
`text_b` and `label` (a class index, or a regression target scaled to [0, 1]),
plus `group` for a task with a `local.group_column` (a ranking task: the number
of the row's group, groups numbered in the order they first appear).
Data comes from local data directories when any are given, otherwise from the
hub. Several directories are searched in order, like a PATH: a task is read
from the first one that holds its `local.folder` (GLUE in one, MNLI-dev in
another). Local files are delimited text (`bam.data.read_split`) or JSON lines,
read by the same row checks; rows whose label means "no gold label" (OCNLI's
`-`, a hub's -1) are skipped and counted; a task without a dev file can hold
out a seeded, stratified part of its training file instead (`local.dev_fraction`).

Tokenized splits are cached on disk, so another seed, the student after the
teachers, or a sweep's many runs do not tokenize the same data again. The cache
lives in `$BAM_CACHE_DIR` if set, else `$XDG_CACHE_HOME/bam` or `~/.cache/bam`;
`BAM_CACHE_DIR=off` turns it off. An entry, `tokenized/<key>/` (a
`datasets.Dataset.save_to_disk` folder, read back memory-mapped), is keyed by
the tokenizer's content (not its path), the max length, the split's data
fingerprint, the library versions and `TOKENIZE_VERSION`. It is written under a
hidden `.<key>.<random>.partial` name and renamed into place, so processes that
write the same entry at once all succeed and a killed one leaves only a hidden
folder that is never read (and deleted by the next write a day later). The
cache folder can be deleted at any time.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from datasets.fingerprint import Hasher

from bam.config import TaskSpec
from bam.errors import BamError, first_line
from bam.task_types import task_type
from bam.tasks import Task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskData:
    """One task's training split and its evaluation splits (name -> Dataset)."""

    task: Task
    train: datasets.Dataset
    dev: dict[str, datasets.Dataset]


def data_directories(options: Sequence[str | Path] = ()) -> tuple[Path, ...]:
    """The local data folders from --data-dir (repeatable) or BAM_DATA_DIR (several joined by ':'), in search order; () means the hub."""
    chosen = [str(option) for option in options if str(option)]
    if not chosen:
        chosen = [part for part in os.environ.get("BAM_DATA_DIR", "").split(os.pathsep) if part]
    folders = []
    for option in chosen:
        folder = Path(option).expanduser()
        if not folder.is_dir():
            raise BamError(f"data directory {folder} {'is not a folder' if folder.exists() else 'does not exist'}")
        folders.append(folder)
    return tuple(folders)


DataDirectories = Path | Sequence[Path] | None  # one folder (the common case, and the tests'), several, or None: the hub


def as_directories(data_dir: DataDirectories) -> tuple[Path, ...]:
    if data_dir is None:
        return ()
    return (Path(data_dir),) if isinstance(data_dir, (str, Path)) else tuple(Path(folder) for folder in data_dir)


def describe_directories(data_dir: DataDirectories) -> str | list[str]:
    """How run folders and sweep.json record the data source: 'hub', one resolved path, or a list of them."""
    folders = [str(folder.resolve()) for folder in as_directories(data_dir)]
    return "hub" if not folders else folders[0] if len(folders) == 1 else folders


def task_folder(task: Task, data_dir: DataDirectories) -> Path:
    """The folder holding the task's files: `local.folder` in the first data directory that has it."""
    folders = as_directories(data_dir)
    candidates = [folder / task.spec.local.folder for folder in folders]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    if len(folders) == 1:
        return candidates[0]  # reading it names the missing file, as it always has
    searched = ", ".join(str(folder) for folder in folders)
    raise BamError(f"task {task.name!r}: none of the data directories ({searched}) has its folder {task.spec.local.folder!r}")


def load_task(task: Task, data_dir: DataDirectories) -> TaskData:
    """All splits of one task, from the data directories if any are given, else from the Hugging Face hub."""
    if as_directories(data_dir):
        local = task.spec.local
        folder = task_folder(task, data_dir)
        train = read_split(folder / local.train, task.spec)
        if local.dev_fraction > 0:
            train, held_out = hold_out(train, task, folder / local.train)
            dev = {"dev": held_out}
        else:
            dev = {split: read_split(folder / name, task.spec) for split, name in local.dev.items()}
    else:
        hub = task.spec.hub
        if not hub.text_fields:  # a custom task declared for local files only: the hub would be asked for GLUE's default
            raise BamError(f"task {task.name!r} has no hub source (no `hub.text_fields`); give the folder holding its files with --data-dir or BAM_DATA_DIR")
        train = read_hub(task.spec, hub.train)
        dev = {split: read_hub(task.spec, name) for split, name in hub.dev.items()}
    return TaskData(task, train, dev)


def hold_out(dataset: datasets.Dataset, task: Task, path: Path) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, dev): `local.dev_fraction` of the rows held out with `local.dev_seed`, stratified by label where labels are classes.

    Both parts keep the file's order and ids, so the split is the same on every
    machine and for every training seed; changing the fraction or the seed
    changes the training rows, and so the data fingerprint teachers are checked against.
    """
    from sklearn.model_selection import train_test_split

    local = task.spec.local
    labels = column(dataset, "label")
    try:
        kept, held = train_test_split(
            np.arange(len(dataset)), test_size=local.dev_fraction, random_state=local.dev_seed,
            stratify=labels if task.type.discrete_labels else None,
        )  # fmt: skip
    except ValueError as error:  # too few rows, or a class too rare to appear on both sides
        raise BamError(f"{path}: cannot hold out dev_fraction = {local.dev_fraction:g} of {len(dataset)} rows: {error}") from None
    return dataset.select(np.sort(kept)), dataset.select(np.sort(held))


def column_index(column: int | str, header: list[str] | None, path: Path, no_header: str = "the task says the file has no header") -> int:
    """A column's position in a delimited file: given as one, or looked up by name in the header (named once)."""
    if isinstance(column, int):
        return column
    if header is None:
        raise BamError(f"{path}: column {column!r} is named, but {no_header}")
    if column not in header:
        raise BamError(f"{path}: no column named {column!r} in the header ({', '.join(header)})")
    if header.count(column) > 1:  # either could be meant; reading the first could train on the wrong field
        positions = [str(index) for index, name in enumerate(header) if name == column]
        raise BamError(f"{path}: the header names column {column!r} {len(positions)} times (positions {', '.join(positions)}); rename one, or name the column by position")
    return header.index(column)


_LONGEST_FIELD = 2**31 - 1  # the largest limit csv accepts on every platform


def open_text(path: Path, what: str = "data file"):
    """A text file of examples opened for reading, or one line naming it; bad bytes are refused line by line by `checked_lines`."""
    try:
        # utf-8-sig: MRPC's files start with a byte-order mark. Bad bytes are kept as lone surrogates and
        # refused line by line, so the error names the line (a decode error would name a buffer offset).
        return path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    except FileNotFoundError:
        raise BamError(f"{path}: {what} not found") from None
    except OSError as error:
        raise BamError(f"{path}: cannot read ({error.strerror})") from None


def _rows(path: Path, delimiter: str):
    with open_text(path) as handle:
        reader = csv.reader(checked_lines(handle, path), delimiter=delimiter, quoting=csv.QUOTE_NONE)
        # Without quoting a field cannot run past its line, so csv's default field limit (131,072 characters)
        # guards against nothing here and would refuse a long but legitimate text (a document, a long passage).
        csv.field_size_limit(max(csv.field_size_limit(), _LONGEST_FIELD))
        try:
            yield from reader
        except csv.Error as error:  # without quoting a row is one line, so the reader's count is the file's
            raise BamError(f"{path}:{reader.line_num}: unreadable row ({error})") from None


_UNDECODED = re.compile("[\udc80-\udcff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def checked_lines(handle, path: Path):
    for number, line in enumerate(handle, start=1):
        bad = None if line.isascii() else _UNDECODED.search(line)  # most lines are ASCII: skip the search
        if bad:
            raise BamError(f"{path}:{number}: not UTF-8 text (byte 0x{ord(bad.group()) - 0xDC00:02x} at character {bad.start()} of the line)")
        yield line


def _delimited_records(path: Path, local, columns: Sequence[int | str]):
    """(row number counted from 0 after any header, where, field getter) per non-blank row of a delimited file."""
    rows = _rows(path, local.delimiter)
    header = next(rows, None) if local.header else None
    if local.header and header is None:
        raise BamError(f"{path}: empty file")
    positions = {column: column_index(column, header, path) for column in columns}
    first_line = 2 if local.header else 1
    for line, row in enumerate(rows, start=first_line):
        if row == [] or row == [""]:
            continue  # blank lines hold no example, but keep their number so ids stay file rows
        where = f"{path}:{line}"

        def field(column, row=row, where=where) -> str:
            index = positions[column]
            if not -len(row) <= index < len(row):  # a negative position counts from the end, as in Python
                raise BamError(f"{where}: row has {len(row)} fields, column {str(column)!r} (position {index}) is missing")
            return row[index]

        yield line - first_line, where, field


def json_lines(path: Path):
    """(line number, where, object) for each non-blank line of a JSON-lines file, each checked to be a JSON object."""
    with open_text(path) as handle:
        for number, line in enumerate(checked_lines(handle, path), start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line, object_pairs_hook=_without_repeated_keys)
            except json.JSONDecodeError as error:
                raise BamError(f"{where}: not a JSON object ({error.msg})") from None
            except _RepeatedKey as repeated:
                raise BamError(f"{where}: key {repeated.args[0]!r} appears twice in the object (which one is meant?)") from None
            except (ValueError, RecursionError) as error:  # an integer of thousands of digits, nesting past the parser's depth
                raise BamError(f"{where}: not a JSON object bam can read ({first_line(error)})") from None
            if not isinstance(record, dict):
                raise BamError(f"{where}: not a JSON object")
            yield number, where, record


class _RepeatedKey(Exception):
    pass


def _without_repeated_keys(pairs: list[tuple[str, object]]) -> dict:
    record = {}
    for key, value in pairs:
        if key in record:
            raise _RepeatedKey(key)
        record[key] = value
    return record


def json_field(record: dict, key: str, where: str) -> str | None:
    """A field of a JSON-lines record as text (labels and ids are compared as text), or None if absent or null."""
    value = record.get(key)
    if isinstance(value, str) and _SURROGATE.search(value):  # "\ud800" in JSON decodes to a character no text may hold
        raise BamError(f"{where}: field {key!r} holds an unpaired surrogate escape ({_SURROGATE.search(value).group().encode('unicode_escape').decode()}), not text")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # a numeric id or label: 3 reads as "3"
    raise BamError(f"{where}: field {key!r} must be a string or a number, not {type(value).__name__}")


def _json_records(path: Path, local, columns: Sequence[int | str]):
    for number, where, record in json_lines(path):

        def field(column, record=record, where=where) -> str:
            value = json_field(record, column, where)
            if value is None:
                raise BamError(f"{where}: field {column!r} is null" if column in record else f"{where}: no field {column!r}")
            return value

        yield number - 1, where, field  # ids are 0-based lines, as a delimited file's rows


def read_split(path: Path, spec: TaskSpec) -> datasets.Dataset:
    """Read one split from a local file (delimited text, or JSON lines), checking every row."""
    local = spec.local
    if not 1 <= len(local.text_columns) <= 2:
        raise BamError(f"{path}: the task's `local.text_columns` must name one or two columns")
    has_ids, has_groups = local.id_column != "", local.group_column != ""
    columns = [*local.text_columns, local.label_column, *([local.id_column] if has_ids else []), *([local.group_column] if has_groups else [])]
    records = (_json_records if local.format == "jsonl" else _delimited_records)(path, local, columns)
    label_type = task_type(spec.type, str(path))
    ids, texts_a, texts_b, labels, groups, wheres, first_seen = [], [], [], [], [], [], {}
    skipped = 0
    for row, where, field in records:
        texts = [field(column) for column in local.text_columns]
        raw_label = field(local.label_column)
        if raw_label in local.skip_labels:
            skipped += 1
            continue
        example_id = _example_id(field(local.id_column), where) if has_ids else row
        if example_id in first_seen:  # ids align teacher predictions with examples: two rows may not share one
            raise BamError(f"{where}: id {example_id} is used again (first at {first_seen[example_id]})")
        first_seen[example_id] = where
        ids.append(example_id)
        texts_a.append(texts[0])
        texts_b.append(texts[1] if len(texts) > 1 else None)
        labels.append(label_type.parse_label(raw_label, spec, where))
        if has_groups:
            groups.append(group_value(field(local.group_column), local.group_column, where))
            wheres.append(where)
    if skipped:
        logger.info("%s: skipped %d row(s) without a gold label (skip_labels: %s)", path, skipped, ", ".join(map(repr, local.skip_labels)))
    if not labels:
        raise BamError(f"{path}: no examples" + (f" (all {skipped} rows have a label in skip_labels)" if skipped else ""))
    if has_groups:
        kept = label_type.check_groups(np.asarray(labels), np.asarray(group_numbers(groups)), wheres, spec, path).tolist()
        # The groups left are numbered again, 0, 1, ... with no gaps: a number is a batch unit (bam.training.Units).
        ids, texts_a, texts_b, labels, groups = ([values[row] for row in kept] for values in (ids, texts_a, texts_b, labels, groups))
    return _to_dataset(ids, texts_a, texts_b, labels, spec, group_numbers(groups) if has_groups else None)


def group_value(value: str, column: int | str, where: str) -> str:
    """A row's group, as text; an empty one is refused."""
    if not value.strip():  # every row without a value would silently join one group called ""
        raise BamError(f"{where}: the group column {column!r} is empty")
    return value


def group_numbers(names: Sequence[str]) -> list[int]:
    """Each row's group as a number: groups numbered 0, 1, ... in the order their first row appears."""
    numbers: dict[str, int] = {}
    return [numbers.setdefault(name, len(numbers)) for name in names]


def _example_id(raw: str, where: str) -> int:
    if not raw.isdecimal() or not raw.isascii() or len(raw) > 19 or int(raw) >= 2**63:
        raise BamError(f"{where}: id {raw!r} is not a non-negative integer")
    return int(raw)


def read_hub(spec: TaskSpec, split: str) -> datasets.Dataset:
    """Read one split from the Hugging Face hub (needs network access on first use)."""
    hub = spec.hub
    try:
        raw = datasets.load_dataset(hub.path, hub.name or None, split=split)
    except Exception as error:  # the hub client raises many types; all mean "could not get it"
        raise BamError(f"could not load {hub.path}/{hub.name} split {split!r} from the hub: {error}") from None
    if not 1 <= len(hub.text_fields) <= 2:
        raise BamError(f"{hub.path}/{hub.name}: the task's `hub.text_fields` must name one or two fields")
    missing = [field for field in (*hub.text_fields, hub.label_field) if field not in raw.column_names]
    if missing:
        raise BamError(f"{hub.path}/{hub.name} split {split!r} has no field {missing[0]!r} ({', '.join(raw.column_names)})")
    texts_a = raw[hub.text_fields[0]][:]
    texts_b = raw[hub.text_fields[1]][:] if len(hub.text_fields) > 1 else [None] * len(raw)
    label_type = task_type(spec.type, f"{hub.path}/{hub.name}")
    # -1 is the datasets library's "no label" for a class label (CLUE's OCNLI rows without a gold label).
    kept = [row for row, value in enumerate(raw[hub.label_field][:]) if not (label_type.discrete_labels and value == -1)]
    if len(kept) < len(raw):
        logger.info("%s/%s split %s: skipped %d row(s) without a gold label (-1)", hub.path, hub.name, split, len(raw) - len(kept))
    if not kept:
        raise BamError(f"{hub.path}/{hub.name} split {split!r}: no examples" + (f" (all {len(raw)} rows have no gold label)" if len(raw) else ""))
    values = raw[hub.label_field][:]
    labels = [label_type.hub_label(values[row], spec, f"{hub.path}/{hub.name}:{split}[{row}]") for row in kept]
    return _to_dataset(kept, [texts_a[row] for row in kept], [texts_b[row] for row in kept], labels, spec)


def _to_dataset(ids, texts_a, texts_b, labels, spec: TaskSpec, groups: list[int] | None = None) -> datasets.Dataset:
    label_type = datasets.Value(task_type(spec.type, "").label_dtype)
    columns = {"id": ids, "text_a": texts_a, "text_b": texts_b, "label": labels}
    features = {"id": datasets.Value("int64"), "text_a": datasets.Value("string"), "text_b": datasets.Value("string"), "label": label_type}
    if groups is not None:  # only a task with groups has the column, so every other task's data (and fingerprint) is as before
        columns["group"], features["group"] = groups, datasets.Value("int64")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def fingerprint(dataset: datasets.Dataset) -> str:
    """A hash of the examples themselves (ids, texts, labels, groups where there are), whatever file or hub they came from."""
    digest = hashlib.sha256()
    for column in ("id", "text_a", "text_b", "label", *(["group"] if "group" in dataset.column_names else [])):
        digest.update(json.dumps(dataset[column][:], ensure_ascii=False).encode())
    return digest.hexdigest()


def column(dataset: datasets.Dataset, name: str) -> np.ndarray:
    """One column as a NumPy array."""
    return np.asarray(dataset[name][:])


def groups_of(dataset: datasets.Dataset) -> torch.Tensor | None:
    """Each row's group number (a ranking task's data), or None for data without groups."""
    return torch.as_tensor(column(dataset, "group")) if "group" in dataset.column_names else None


def tokenize(dataset: datasets.Dataset, tokenizer, max_length: int) -> datasets.Dataset:
    """Add the tokenizer's model inputs and a `length` column (used to group batches by length)."""

    def encode(batch):
        pairs = batch["text_b"][0] is not None
        encoded = tokenizer(batch["text_a"], batch["text_b"] if pairs else None, truncation=True, max_length=max_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    return dataset.map(encode, batched=True, batch_size=1000)


# Bump whenever `tokenize` changes what it returns, so cache entries written by the old code are not used.
TOKENIZE_VERSION = 1


def cache_directory() -> Path | None:
    """The tokenization cache folder (see the module docstring), or None when BAM_CACHE_DIR=off."""
    chosen = os.environ.get("BAM_CACHE_DIR")
    if chosen == "off":
        return None
    if chosen:
        return Path(chosen).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "bam"


def tokenizer_identity(tokenizer) -> str:
    """A hash of everything that decides what `tokenize` gets from this tokenizer, wherever it was loaded from."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        # No Rust tokenizer to serialize: the datasets library's hash of the whole object (it includes the folder path).
        content = Hasher.hash(tokenizer)
    else:
        settings = json.loads(backend.to_str())
        # Every call sets truncation and padding on the backend: they record the last call, not the tokenizer.
        settings.pop("truncation", None)
        settings.pop("padding", None)
        content = json.dumps(settings, sort_keys=True, ensure_ascii=False)
    described = json.dumps(
        [type(tokenizer).__module__, type(tokenizer).__qualname__, tokenizer.truncation_side, list(tokenizer.model_input_names), content]
    )
    return hashlib.sha256(described.encode()).hexdigest()


def _cached_tokenize(
    dataset: datasets.Dataset, data_fingerprint: str, tokenizer, tokenizer_hash: str, max_length: int, cache: Path
) -> datasets.Dataset:
    """`tokenize(dataset, ...)`, read from the cache when an entry exists, otherwise computed and stored there."""
    key = {
        "tokenize_version": TOKENIZE_VERSION,
        "tokenizer": tokenizer_hash,
        "max_length": max_length,
        "data": data_fingerprint,
        # A new release may tokenize differently or store differently; an upgrade simply starts new entries.
        "versions": {name: importlib.metadata.version(name) for name in ("transformers", "tokenizers", "datasets")},
    }
    entry = cache / "tokenized" / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    if not entry.is_dir():
        about = {**key, "tokenizer_name": str(tokenizer.name_or_path), "rows": len(dataset)}  # for a person looking at the cache
        _store(tokenize(dataset, tokenizer, max_length), entry, about)
    try:
        return datasets.Dataset.load_from_disk(str(entry))
    except Exception as error:  # datasets raises many types for a damaged folder; all mean "unreadable"
        raise BamError(f"{entry}: unreadable tokenization cache entry ({error}); delete it, or set BAM_CACHE_DIR=off") from None


def _store(tokenized: datasets.Dataset, entry: Path, about: dict) -> None:
    """Write `entry` so that it appears complete or not at all."""
    # A folder of our own, not `atomic_directory`'s fixed `.NAME.partial`: two processes (two DDP ranks, two sweep
    # workers) may write the same entry at once, and must not delete or fill each other's half-written folder.
    partial = entry.parent / f".{entry.name}.{uuid.uuid4().hex}.partial"
    _remove_abandoned(entry.parent)
    try:
        partial.mkdir(parents=True)
        tokenized.save_to_disk(str(partial))
        (partial / "key.json").write_text(json.dumps(about, indent=2) + "\n", encoding="utf-8")
        os.rename(partial, entry)  # fails, leaving the other in place, if another process renamed its copy first
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        if entry.is_dir():
            return  # another process finished the same entry first, with the same contents
        reason = error.strerror or error
        raise BamError(f"{entry.parent}: cannot write the tokenization cache ({reason}); set BAM_CACHE_DIR to another folder or to off") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _remove_abandoned(folder: Path, older_than_seconds: float = 24 * 3600) -> None:
    """Delete half-written entries that killed writers left: no live writer takes a day over one split."""
    for leftover in folder.glob(".*.partial"):
        with contextlib.suppress(OSError):
            if time.time() - leftover.stat().st_mtime > older_than_seconds:
                shutil.rmtree(leftover, ignore_errors=True)


def load_tokenized(task: Task, data_dir: DataDirectories, tokenizer, max_length: int) -> tuple[TaskData, str]:
    """One task's splits, tokenized (through the cache unless it is off), with the fingerprint of its training data."""
    data = load_task(task, data_dir)
    cache = cache_directory()
    tokenizer_hash = tokenizer_identity(tokenizer) if cache is not None else None

    def prepare(dataset: datasets.Dataset, data_fingerprint: str) -> datasets.Dataset:
        if cache is None:
            return tokenize(dataset, tokenizer, max_length)
        return _cached_tokenize(dataset, data_fingerprint, tokenizer, tokenizer_hash, max_length, cache)

    train_fingerprint = fingerprint(data.train)
    tokenized = TaskData(
        task,
        prepare(data.train, train_fingerprint),
        {split: prepare(dataset, fingerprint(dataset)) for split, dataset in data.dev.items()},
    )
    return tokenized, train_fingerprint
