"""`bam predict`: a trained model's answers for every row of a file, and its metrics when the file has labels.

read (a TSV, CSV or JSON-lines file: the task's text columns, an optional id
column, the label column if present) -> predict (`bam.inference`) -> write
(CSV or JSON lines, chosen by the output's suffix, or CSV on stdout) ->
score (the task's metrics, when every row has a label).

Columns come from `--text-columns` or else the task's spec (`local.text_columns`,
the names or positions its training files use). TSV files are read as GLUE's
are: tab-separated, quotes taken literally; CSV files with standard quoting.
Rows are numbered from 0 after the header, as bam numbers training examples.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bam.data import column_index
from bam.errors import BamError
from bam.files import replaced_atomically
from bam.inference import Model
from bam.task_types import Answer
from bam.tasks import Task

INPUT_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


@dataclass(frozen=True)
class Rows:
    """What prediction needs from an input file."""

    ids: list[str | int]
    texts: list[str] | list[tuple[str, str]]
    labels: torch.Tensor | None  # parsed as the task parses its training labels; None when the file has none


@dataclass(frozen=True)
class Columns:
    """Which fields of each row to read; a name needs a header (or JSON keys), a position does not."""

    texts: tuple[int | str, ...]
    label: int | str | None  # None: the rows are not scored
    id: int | str | None
    header: bool


def predict_file(
    model: Model,
    input_path: Path,
    task_name: str,
    *,
    out: Path | None,
    text_columns: Sequence[str] = (),
    id_column: str | None = None,
    label_column: str | None = None,
    header: bool | None = None,
    batch_size: int = 128,
    precision: str = "fp32",
    on_start: Callable[[int], None] = lambda total: None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, float] | None:
    """Write the answers for every row of `input_path` to `out` (stdout if None); returns the metrics if the rows have labels."""
    # read: everything that can be refused, before any prediction
    task = model.task(task_name)
    output_format = _output_format(out)
    columns = choose_columns(task, text_columns, id_column, header, label_column)
    rows = read_rows(input_path, task, columns)

    # predict
    on_start(len(rows.texts))
    outputs = model.outputs(rows.texts, task.name, batch_size=batch_size, precision=precision, on_batch=on_batch)

    # write, score
    write_answers(out, output_format, rows.ids, task.type.answers(outputs, task.spec))
    return task.score(rows.labels, outputs) if rows.labels is not None else None


def choose_columns(
    task: Task, text_columns: Sequence[str], id_column: str | None, header: bool | None, label_column: str | None = None
) -> Columns:
    """The command line's columns, else the task spec's; digits name a position, anything else a header name.

    With the command line's text columns, the spec's label column counts only if it is a name: a
    position of the task's own files (CoLA's 1) would point at some other field of another file.
    """
    local = task.spec.local
    if text_columns:
        if not 1 <= len(text_columns) <= 2:
            raise BamError(f"--text-columns: give one or two columns, got {len(text_columns)}")
        texts = tuple(_column(column) for column in text_columns)
        default_header, default_label = True, local.label_column if isinstance(local.label_column, str) else None
    else:
        if not local.text_columns:
            raise BamError(f"task {task.name!r} names no text columns (local.text_columns); give --text-columns")
        texts, default_header, default_label = local.text_columns, local.header, local.label_column
    label = _column(label_column) if label_column is not None else default_label
    return Columns(texts, label, _column(id_column) if id_column else None, default_header if header is None else header)


def _column(given: str) -> int | str:
    return int(given) if given.isdigit() else given


def read_rows(path: Path, task: Task, columns: Columns) -> Rows:
    """The ids, texts and (when every row has one) labels of an input file, each row checked."""
    input_format = INPUT_FORMATS.get(path.suffix.lower())
    if input_format is None:
        raise BamError(f"{path}: not a supported input format (the name must end in {', '.join(INPUT_FORMATS)})")
    records = _json_records(path, columns) if input_format == "jsonl" else _delimited_records(path, columns, input_format)
    ids, texts, raw_labels = [], [], []
    has_labels = None
    for row_number, (where, fields) in enumerate(records):
        found = [fields(column) for column in columns.texts]
        for column, value in zip(columns.texts, found):
            if value is None:
                raise BamError(f"{where}: no text column {column!r}")
        ids.append(row_number if columns.id is None else _required(fields(columns.id), where, f"id column {columns.id!r}"))
        texts.append(found[0] if len(found) == 1 else (found[0], found[1]))
        label = fields(columns.label) if columns.label is not None else None
        if has_labels is None:
            has_labels = label is not None  # the first row (or a header naming the column) decides; every row must agree
        if has_labels != (label is not None):
            raise BamError(f"{where}: {'no' if has_labels else 'a'} label column {columns.label!r}, unlike the first row")
        if has_labels:
            raw_labels.append(task.type.parse_label(label, task.spec, where))
    if not texts:
        raise BamError(f"{path}: no rows to predict")
    labels = torch.as_tensor(raw_labels) if has_labels else None
    return Rows(ids, texts, labels)


def _required(value: str | None, where: str, what: str) -> str:
    if value is None:
        raise BamError(f"{where}: no {what}")
    return value


def _opened(path: Path):
    try:
        # utf-8-sig: a byte-order mark (as spreadsheet programs write) is not part of the first column's name.
        return path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise BamError(f"{path}: input file not found") from None
    except OSError as error:
        raise BamError(f"{path}: cannot read ({error.strerror})") from None


def _delimited_records(path: Path, columns: Columns, input_format: str) -> Iterator[tuple[str, Callable]]:
    """(where, field getter) per data row of a TSV or CSV file; a getter gives None for a missing field."""
    with _opened(path) as handle:
        options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if input_format == "tsv" else {"delimiter": ","}
        csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # long documents are legitimate text
        reader = csv.reader(handle, **options)
        try:
            header = next(reader, None) if columns.header else None
            if columns.header and header is None:
                raise BamError(f"{path}: empty file")
            positions = {}
            for column in (*columns.texts, *([columns.id] if columns.id is not None else [])):
                positions[column] = column_index(column, header, path, "the file is read without a header (give positions, or drop --no-header)")
            # The label column is optional: where the header lacks it, the file simply has no labels.
            if isinstance(columns.label, int):
                positions[columns.label] = columns.label
            elif columns.label is not None and header is not None and columns.label in header:
                positions[columns.label] = column_index(columns.label, header, path)
            for row in reader:
                if row == [] or row == [""]:
                    continue
                where = f"{path}:{reader.line_num}"

                def field(column, row=row, where=where):
                    position = positions.get(column)
                    if position is None:
                        return None  # a label column the header does not name: the file has no labels
                    if -len(row) <= position < len(row):
                        return row[position]
                    if column == columns.label and header is None:
                        return None  # a headerless file may simply stop before the label's position
                    raise BamError(f"{where}: row has {len(row)} fields, column {column!r} (position {position}) is missing")

                yield where, field
        except csv.Error as error:
            raise BamError(f"{path}:{reader.line_num}: unreadable row ({error})") from None
        except UnicodeDecodeError as error:
            raise BamError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def _json_records(path: Path, columns: Columns) -> Iterator[tuple[str, Callable]]:
    """(where, field getter) per line of a JSON-lines file; values must be strings (labels may be numbers)."""
    named = [column for column in (*columns.texts, columns.id) if column is not None]
    if any(isinstance(column, int) for column in named):
        raise BamError(f"{path}: JSON lines have keys, not positions; name the text columns (--text-columns)")
    with _opened(path) as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise BamError(f"{where}: not a JSON object ({error.msg})") from None
                if not isinstance(record, dict):
                    raise BamError(f"{where}: not a JSON object")

                def field(column, record=record, where=where):
                    value = record.get(column) if isinstance(column, str) else None
                    if value is None or isinstance(value, str):
                        return value
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        return str(value)  # a numeric id or regression label
                    raise BamError(f"{where}: field {column!r} must be a string, not {type(value).__name__}")

                yield where, field
        except UnicodeDecodeError as error:
            raise BamError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def _output_format(out: Path | None) -> str:
    if out is None:
        return "csv"
    chosen = OUTPUT_FORMATS.get(out.suffix.lower())
    if chosen is None:
        raise BamError(f"--out {out}: the name must end in {', '.join(OUTPUT_FORMATS)} (CSV or JSON lines)")
    if out.is_dir():
        raise BamError(f"--out {out}: is a folder")
    return chosen


def write_answers(out: Path | None, output_format: str, ids: Sequence, answers: list[Answer]) -> None:
    """CSV (id, label and one probability_<label> column per label, or value) or JSON lines; written whole or not at all."""
    text = _as_jsonl(ids, answers) if output_format == "jsonl" else _as_csv(ids, answers)
    if out is None:
        sys.stdout.write(text)
        return
    with replaced_atomically(out) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _record(answer: Answer) -> dict:
    return {name: value for name, value in vars(answer).items() if value is not None}


def _as_jsonl(ids: Sequence, answers: list[Answer]) -> str:
    return "".join(json.dumps({"id": row_id, **_record(answer)}, ensure_ascii=False) + "\n" for row_id, answer in zip(ids, answers))


def _as_csv(ids: Sequence, answers: list[Answer]) -> str:
    flat = []
    for row_id, answer in zip(ids, answers):
        record = _record(answer)
        probabilities = record.pop("probabilities", {})
        flat.append({"id": row_id, **record, **{f"probability_{label}": value for label, value in probabilities.items()}})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(flat[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()
