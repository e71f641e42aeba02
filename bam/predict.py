"""`bam predict`: a trained model's answers for every row of a file, and its metrics when the file has labels.

read (a TSV, CSV or JSON-lines file: the task's text columns, an optional id
column, the label column if present) -> predict (`bam.inference`) -> write
(CSV or JSON lines, chosen by the output's suffix, or CSV on stdout) ->
score (the task's metrics, when every row has a label).

Columns come from `--text-columns` or else the task's spec (`local.text_columns`,
the names or positions its training files use, and its `id_column`). A file
whose name ends like the task's own training file is read as those are (the
spec's delimiter or JSON lines: Tianchi's tab-separated `.csv` files); other
TSV files are read as GLUE's are (tab-separated, quotes taken literally), CSV
files with standard quoting; `--format` overrides both. Rows are numbered from
0 after the header, as bam numbers training examples. A row whose label is one
of the task's `skip_labels` (OCNLI's `-`) is answered but not scored.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bam.data import checked_lines, column_index, group_numbers, group_value, json_field, json_lines, open_text
from bam.errors import BamError
from bam.files import replaced_atomically
from bam.inference import Model
from bam.task_types import Answer
from bam.tasks import Task

logger = logging.getLogger(__name__)

INPUT_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


@dataclass(frozen=True)
class Rows:
    """What prediction needs from an input file."""

    ids: list[str | int]
    texts: list[str] | list[tuple[str, str]]
    labels: torch.Tensor | None  # of the scored rows, parsed as the task parses its training labels; None when the file has none
    scored: list[int]  # the rows with a gold label (not one of the task's skip_labels)
    groups: torch.Tensor | None = None  # each row's group number (a ranking task's candidates of one question share one)
    group_values: list[str | int] | None = None  # each row's group as the file gives it, written beside its rank


@dataclass(frozen=True)
class Columns:
    """Which fields of each row to read; a name needs a header (or JSON keys), a position does not."""

    texts: tuple[int | str, ...]
    label: int | str | None  # None: the rows are not scored
    id: int | str | None
    header: bool | None  # None: not said (a delimited file with named columns has one; with positions, bam asks)
    group: int | str | None = None  # a ranking task's group column


def predict_file(
    model: Model,
    input_path: Path,
    task_name: str,
    *,
    out: Path | None,
    text_columns: Sequence[str] = (),
    id_column: str | None = None,
    label_column: str | None = None,
    group_column: str | None = None,
    header: bool | None = None,
    input_format: str | None = None,
    batch_size: int = 128,
    precision: str = "fp32",
    on_start: Callable[[int], None] = lambda total: None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, float] | None:
    """Write the answers for every row of `input_path` to `out` (stdout if None); returns the metrics if the rows have labels."""
    # read: everything that can be refused, before any prediction
    task = model.task(task_name)
    output_format = _output_format(out)
    columns = choose_columns(task, text_columns, id_column, header, label_column, group_column)
    rows = read_rows(input_path, task, columns, input_format)

    # predict
    on_start(len(rows.texts))
    outputs = model.outputs(rows.texts, task.name, batch_size=batch_size, precision=precision, on_batch=on_batch)

    # score, write: a file that cannot be scored is refused before any answer is written
    scores = None
    if rows.labels is not None:
        scores = task.score(rows.labels, outputs[rows.scored], None if rows.groups is None else rows.groups[rows.scored])
    write_answers(out, output_format, rows.ids, task.type.answers(outputs, task.spec, rows.groups), rows.group_values)
    return scores


def choose_columns(
    task: Task, text_columns: Sequence[str], id_column: str | None, header: bool | None, label_column: str | None = None, group_column: str | None = None
) -> Columns:
    """The command line's columns, else the task spec's; digits name a position, anything else a header name.

    With the command line's text columns, the spec's label column counts only if it is a name: a
    position of the task's own files (CoLA's 1) would point at some other field of another file.
    """
    local = task.spec.local
    for option, given in (("--id-column", id_column), ("--label-column", label_column), ("--group-column", group_column), *(("--text-columns", column) for column in text_columns)):
        if given is not None and not given.strip():  # an empty name would silently fall back to the task's column
            raise BamError(f"{option}: an empty column name; give a header name or a 0-based position")
    if text_columns:
        if not 1 <= len(text_columns) <= 2:
            raise BamError(f"--text-columns: give one or two columns, got {len(text_columns)}")
        texts = tuple(_column(column) for column in text_columns)
        # None: a header line unless the columns are positions (then the reader asks, see _delimited_records)
        default_header, default_label = None, local.label_column if isinstance(local.label_column, str) else None
        identifier = _column(id_column) if id_column else None
    else:
        if not local.text_columns:
            raise BamError(f"task {task.name!r} names no text columns (local.text_columns); give --text-columns")
        texts, default_header, default_label = local.text_columns, local.header, local.label_column
        identifier = _column(id_column) if id_column else (local.id_column if local.id_column != "" else None)
    label = _column(label_column) if label_column is not None else default_label
    group = _column(group_column) if group_column else (local.group_column if local.group_column != "" and not text_columns else None)
    if task.type.batch_unit == "group" and group is None:
        raise BamError(f"task {task.name!r} ranks the candidates of each group: give the group column (--group-column)")
    if task.type.batch_unit != "group" and group_column:
        raise BamError(f"--group-column: task {task.name!r} is a {task.spec.type} task, which has no groups")
    return Columns(texts, label, identifier, default_header if header is None else header, group)


def _column(given: str) -> int | str:
    return int(given) if given.isdigit() else given


def read_rows(path: Path, task: Task, columns: Columns, given_format: str | None = None) -> Rows:
    """The ids, texts and (when the rows have them) labels of an input file, each row checked."""
    reading = _reading(path, task, given_format)
    records = _json_records(path, columns) if reading is None else _delimited_records(path, columns, reading, given_format)
    ids, texts, raw_labels, scored, groups, wheres = [], [], [], [], [], []
    has_labels = None
    for row_number, where, fields in records:
        found = [fields(column) for column in columns.texts]
        for column, value in zip(columns.texts, found):
            if value is None:
                raise BamError(f"{where}: no text column {column!r}")
        ids.append(row_number if columns.id is None else _required(fields(columns.id), where, f"id column {columns.id!r}"))
        texts.append(found[0] if len(found) == 1 else (found[0], found[1]))
        if columns.group is not None:
            groups.append(group_value(_required(fields(columns.group), where, f"group column {columns.group!r}"), columns.group, where))
        label = fields(columns.label) if columns.label is not None else None
        if has_labels is None:
            has_labels = label is not None  # the first row (or a header naming the column) decides; every row must agree
        if has_labels != (label is not None):
            raise BamError(f"{where}: {'no' if has_labels else 'a'} label column {columns.label!r}, unlike the first row")
        if has_labels and label not in task.spec.local.skip_labels:
            raw_labels.append(task.type.parse_label(label, task.spec, where))
            scored.append(len(texts) - 1)
            wheres.append(where)
    if not texts:
        raise BamError(f"{path}: no rows to predict")
    if has_labels and len(scored) < len(texts):
        logger.info("%s: %d of %d row(s) have a label in skip_labels: answered, not scored", path, len(texts) - len(scored), len(texts))
    labels = torch.as_tensor(raw_labels) if raw_labels else None
    if labels is not None and columns.group is not None:
        # Scored as the task's dev set is: a group without exactly one positive is refused, or left out
        # (local.invalid_groups = "drop"); every row is still answered.
        kept = task.type.check_groups(labels.numpy(), np.asarray(group_numbers([groups[row] for row in scored])), wheres, task.spec, path)
        scored, labels = [scored[index] for index in kept], labels[torch.as_tensor(kept, dtype=torch.int64)]
    if columns.group is None:
        return Rows(ids, texts, labels, scored)
    return Rows(ids, texts, labels, scored, torch.as_tensor(group_numbers(groups)), groups)


def _reading(path: Path, task: Task, given_format: str | None) -> dict | None:
    """How to read the file: csv.reader options for delimited text, None for JSON lines."""
    local = task.spec.local
    like_the_task = path.suffix.lower() == Path(local.train).suffix.lower()
    chosen = given_format or ("task" if like_the_task else INPUT_FORMATS.get(path.suffix.lower()))
    if chosen is None:
        raise BamError(f"{path}: not a supported input format (the name must end in {', '.join(INPUT_FORMATS)}, or give --format)")
    if chosen == "task":
        return None if local.format == "jsonl" else {"delimiter": local.delimiter, "quoting": csv.QUOTE_NONE}
    return {"tsv": {"delimiter": "\t", "quoting": csv.QUOTE_NONE}, "csv": {"delimiter": ","}, "jsonl": None}[chosen]


def _required(value: str | None, where: str, what: str) -> str:
    if value is None:
        raise BamError(f"{where}: no {what}")
    return value


def _delimited_records(path: Path, columns: Columns, options: dict, given_format: str | None) -> Iterator[tuple[int, str, Callable]]:
    """(row number, where, field getter) per data row of a delimited file; a getter gives None for a missing field."""
    # A comma-separated file named like a task's tab-separated ones is read with tabs: say so when a row falls short.
    hint = "" if given_format or options["delimiter"] == "," else f" (read as the task's files are, fields split by {options['delimiter']!r}; --format csv reads a comma-separated file)"
    with open_text(path, "input file") as handle:  # as training reads: a byte-order mark dropped, bad bytes named by line
        csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # long documents are legitimate text
        reader = csv.reader(checked_lines(handle, path), **options)
        has_header = columns.header
        if has_header is None:
            if any(isinstance(column, int) for column in (*columns.texts, columns.id, columns.group)):
                # As in training: with a header line assumed, a headerless file's first row would silently go missing.
                raise BamError("--text-columns gives positions: say whether the file's first line is a header (--header or --no-header)")
            has_header = True
        try:
            header = next(reader, None) if has_header else None
            if has_header and header is None:
                raise BamError(f"{path}: empty file")
            positions = {}
            for column in (*columns.texts, *(column for column in (columns.id, columns.group) if column is not None)):
                positions[column] = column_index(column, header, path, "the file is read without a header (give positions, or drop --no-header)")
            # The label column is optional: where the header lacks it, the file simply has no labels.
            if isinstance(columns.label, int):
                positions[columns.label] = columns.label
            elif columns.label is not None and header is not None and columns.label in header:
                positions[columns.label] = column_index(columns.label, header, path)
            for row_number, row in enumerate(reader):  # blank rows keep their numbers, as in training
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
                    raise BamError(f"{where}: row has {len(row)} fields, column {column!r} (position {position}) is missing{hint}")

                yield row_number, where, field
        except csv.Error as error:
            raise BamError(f"{path}:{reader.line_num}: unreadable row ({error})") from None


def _json_records(path: Path, columns: Columns) -> Iterator[tuple[int, str, Callable]]:
    """(row number, where, field getter) per line of a JSON-lines file (bam.data's reader); values are strings or numbers."""
    for option, given in (("--text-columns", columns.texts), ("--id-column", (columns.id,)), ("--label-column", (columns.label,)), ("--group-column", (columns.group,))):
        if any(isinstance(column, int) for column in given):
            raise BamError(f"{path}: JSON lines have keys, not positions; name the {option.removeprefix('--').replace('-', ' ')} by key ({option})")
    if not path.is_file():
        raise BamError(f"{path}: input file not found")
    for number, where, record in json_lines(path):
        yield number - 1, where, lambda column, record=record, where=where: json_field(record, column, where) if isinstance(column, str) else None


def _output_format(out: Path | None) -> str:
    if out is None:
        return "csv"
    chosen = OUTPUT_FORMATS.get(out.suffix.lower())
    if chosen is None:
        raise BamError(f"--out {out}: the name must end in {', '.join(OUTPUT_FORMATS)} (CSV or JSON lines)")
    if out.is_dir():
        raise BamError(f"--out {out}: is a folder")
    return chosen


def write_answers(out: Path | None, output_format: str, ids: Sequence, answers: list[Answer], groups: Sequence | None = None) -> None:
    """CSV (id, label and one probability_<label> column per label, or value; a ranking task's group, score and rank)
    or JSON lines with the same fields; written whole or not at all."""
    # A rank means something only beside the group it is a rank in.
    keys = [{"id": row_id} for row_id in ids] if groups is None else [{"id": row_id, "group": group} for row_id, group in zip(ids, groups)]
    text = _as_jsonl(keys, answers) if output_format == "jsonl" else _as_csv(keys, answers)
    if out is None:
        sys.stdout.write(text)
        return
    with replaced_atomically(out) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _record(answer: Answer) -> dict:
    return {name: value for name, value in vars(answer).items() if value is not None}


def _as_jsonl(keys: list[dict], answers: list[Answer]) -> str:
    return "".join(json.dumps({**key, **_record(answer)}, ensure_ascii=False) + "\n" for key, answer in zip(keys, answers))


def _as_csv(keys: list[dict], answers: list[Answer]) -> str:
    flat = []
    for key, answer in zip(keys, answers):
        record = _record(answer)
        probabilities = record.pop("probabilities", {})
        flat.append({**key, **record, **{f"probability_{label}": value for label, value in probabilities.items()}})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(flat[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()
