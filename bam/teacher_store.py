"""The teacher store: one writer and one reader for cached teacher predictions.

Layout (documented for users in teachers/README.md):

    <store>/<task>/manifest.json        what the predictions are and what data they belong to
    <store>/<task>/train.safetensors    `ids` (int64, N), `outputs` (float32, N x outputs), gold `labels` (N),
                                        and `groups` (int64, N: each row's group number) for a task with groups
    <store>/<task>/<split>.safetensors  the same for each evaluation split
    <store>/<task>/model/               the fine-tuned teacher (bam.model.MultiTaskModel.load reads it)
    <store>/<task>/train_log.jsonl      per-step training losses (bam.train_log)

A task's folder is built under a hidden temporary name and renamed into place
only when complete, so a killed run never leaves a teacher that looks finished;
each predictions file is also written to a temporary name and renamed, because
run directories hold prediction files outside any teacher folder.
The reader refuses a store whose task, label order, data fingerprint, example
ids or file checksums do not match what the student is about to train on.

Prediction files are memory-mapped, not read: a million-example task opens in
one streaming checksum pass, and its outputs occupy memory only as the student
touches their rows.
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from bam.data import column, groups_of
from bam.errors import BamError
from bam.files import atomic_directory, read_format, replaced_atomically, write_json
from bam.tasks import Task
from bam.train_log import write_train_log

# Version 2 added the `groups` tensor (ranking tasks). A version-1 store has none, and never
# needs one (ranking came with version 2), so it is still read; any other version is refused.
FORMAT = "bam-teacher-store/2"
READABLE_FORMATS = ("bam-teacher-store/1", FORMAT)
TENSORS = ("ids", "outputs", "labels")


def _sha256(path: Path) -> str:
    # file_digest reads through one small buffer: the file passes through the
    # page cache, never into this process's resident memory.
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass(frozen=True)
class Predictions:
    """A model's outputs on one split, with the example ids and gold labels they belong to."""

    ids: torch.Tensor
    outputs: torch.Tensor
    labels: torch.Tensor
    groups: torch.Tensor | None = None  # each row's group number, for data with groups (ranking)

    @classmethod
    def of(cls, dataset, outputs: torch.Tensor) -> "Predictions":
        """Outputs for every row of `dataset`, in dataset order, with its ids, labels and groups."""
        return cls(torch.as_tensor(column(dataset, "id")), outputs, torch.as_tensor(column(dataset, "label")), groups_of(dataset))


def write_predictions(path: Path, predictions: Predictions) -> str:
    """Save predictions as safetensors through a temporary file and a rename; returns the file's SHA-256."""
    path = Path(path)
    # Checked as stored (float32): a diverged model's outputs would teach or score as if real.
    if not torch.isfinite(predictions.outputs.float()).all():
        raise BamError(f"{path}: the model's outputs hold non-finite values (did training diverge?); not written")
    # A rename, never a rewrite in place: a reader that has the old file
    # mapped keeps its old bytes instead of crashing (SIGBUS) on a truncated file.
    with replaced_atomically(path) as temporary:
        temporary.unlink(missing_ok=True)
        # Created by us, so it gets the umask's permissions like the manifest;
        # safetensors >= 0.8 writes through its own owner-only temporary file,
        # which would leave a shared store unreadable to the rest of the group.
        temporary.touch()
        permissions = stat.S_IMODE(temporary.stat().st_mode)
        tensors = {
            "ids": predictions.ids.to(torch.int64).contiguous(),
            "outputs": predictions.outputs.float().contiguous(),
            "labels": predictions.labels.contiguous(),
        }
        if predictions.groups is not None:
            tensors["groups"] = predictions.groups.to(torch.int64).contiguous()
        save_file(tensors, temporary)
        temporary.chmod(permissions)
        sha256 = _sha256(temporary)
    return sha256


def read_predictions(path: Path) -> Predictions:
    """Map a predictions file written by `write_predictions`; its bytes are read only when used.

    safetensors checks that the header covers the file exactly, so a truncated
    or extended file is refused here; a flipped byte in the data is only caught
    by the manifest's checksum (see `read_teacher`).
    """
    try:
        # safe_open maps the whole file privately: tensors are views of the
        # mapping, and writing to one copies that page instead of changing the file.
        with safe_open(path, framework="pt") as handle:
            names = set(handle.keys())
            if names not in (set(TENSORS), {*TENSORS, "groups"}):
                raise BamError(f"{path}: expected tensors 'ids', 'outputs' and 'labels' (and 'groups' for a task with groups), found {sorted(names)}")
            ids, outputs, labels = (handle.get_tensor(name) for name in TENSORS)
            groups = handle.get_tensor("groups") if "groups" in names else None
    except SafetensorError as error:
        raise BamError(f"{path}: not a complete safetensors file, corrupted or truncated ({error})") from None
    except OSError as error:
        raise BamError(f"{path}: unreadable ({error.strerror or error})") from None
    if outputs.dtype != torch.float32:  # what write_predictions stores, and what the streaming finite check reads
        raise BamError(f"{path}: outputs are {outputs.dtype}, a teacher store holds float32")
    if ids.dtype != torch.int64 or ids.dim() != 1 or outputs.dim() != 2 or not len(ids) == len(outputs) == len(labels):
        raise BamError(f"{path}: ids {ids.dtype} {tuple(ids.shape)}, outputs {tuple(outputs.shape)} and labels {tuple(labels.shape)} do not describe one row per example")
    if groups is not None and (groups.dtype != torch.int64 or groups.shape != ids.shape):
        raise BamError(f"{path}: groups {groups.dtype} {tuple(groups.shape)} do not give one int64 group per example")
    return Predictions(ids, outputs, labels, groups)


def write_teacher(
    store: Path,
    task: Task,
    *,
    predictions: dict[str, Predictions],
    train_fingerprint: str,
    details: dict,
    save_model: Callable[[Path], None] | None,
    train_log: list[dict] | None = None,
) -> Path:
    """Write one task's teacher atomically; `predictions` maps split -> Predictions, `train` included.

    `save_model` writes the model into the folder it is given; None stores predictions only
    (a multi-task model used as a teacher is saved once, with its training log, in its own run directory).
    """
    final = store / task.name
    with atomic_directory(final) as partial:
        files = {}
        for split, split_predictions in predictions.items():
            path = partial / f"{split}.safetensors"
            sha256 = write_predictions(path, split_predictions)
            files[split] = {"path": path.name, "sha256": sha256, "examples": len(split_predictions.ids)}
        if save_model is not None:
            save_model(partial / "model")
        if train_log is not None:
            write_train_log(partial / "train_log.jsonl", train_log)
        manifest = {
            "format": FORMAT,
            "task": task.name,
            "type": task.spec.type,
            "labels": list(task.spec.labels),
            "target_settings": target_settings(task),
            "train_fingerprint": train_fingerprint,
            "files": files,
            **details,
        }
        write_json(partial / "manifest.json", manifest)
    return final


def read_manifest(store: Path, task_name: str) -> dict:
    """The manifest of one task's teacher, or a clear refusal if there is none."""
    if not store.is_dir():
        raise BamError(f"teacher store {store} does not exist (run `bam train-teachers` first, or pass --teachers)")
    path = store / task_name / "manifest.json"
    if not path.is_file():
        raise BamError(f"teacher store {store} has no finished teacher for task {task_name!r} (run `bam train-teachers RECIPE --tasks {task_name} --out {store}`)")
    manifest = read_format(path, READABLE_FORMATS)
    for key, kind, described in (("type", str, "a string"), ("labels", list, "a list"), ("train_fingerprint", str, "a string"), ("files", dict, "an object")):
        if key not in manifest:
            raise BamError(f"{path}: no {key!r} entry")
        if not isinstance(manifest[key], kind):
            raise BamError(f"{path}: {key!r} must be {described}, not {manifest[key]!r}")
    if "train" not in manifest["files"]:
        raise BamError(f"{path}: no 'files.train' entry")
    for split, entry in manifest["files"].items():
        if not (isinstance(entry, dict) and all(isinstance(entry.get(key), str) for key in ("path", "sha256"))):
            raise BamError(f"{path}: 'files.{split}' must be a table with the strings 'path' and 'sha256'")
    return manifest


def target_settings(task: Task) -> dict:
    """The task settings under which a teacher's stored outputs become its targets (a ranking task's scale; none for the others)."""
    return {field: getattr(task.spec, field) for field in task.type.target_settings}


def recorded_target_settings(manifest: dict, task: Task, where: str) -> dict:
    """The target settings a teacher was trained with: its manifest's, or for a store from before bam recorded them,
    its recorded recipe's spec of the task; one line if neither says."""
    fields = task.type.target_settings
    recorded = manifest.get("target_settings")
    if recorded is None:
        recipe = manifest.get("recipe") if isinstance(manifest.get("recipe"), dict) else {}
        recorded = (recipe.get("custom_tasks") or {}).get(task.name) or {}
    missing = [field for field in fields if not isinstance(recorded, dict) or field not in recorded]
    if missing:
        raise BamError(f"{where}: the manifest does not record the teacher's {missing[0]} (a store bam did not write, or an older one); retrain the teacher")
    return {field: recorded[field] for field in fields}


@dataclass(frozen=True)
class Teacher:
    """A teacher's training-set outputs, and the checksum of the file they were verified against."""

    outputs: torch.Tensor
    sha256: str


def read_teacher(store: Path, task: Task, train_ids: torch.Tensor, train_fingerprint: str) -> Teacher:
    """The teacher's training-set outputs, row-aligned with `train_ids`, after checking they belong to this data."""
    manifest = read_manifest(store, task.name)
    where = f"teacher store {store}, task {task.name!r}"
    if manifest["type"] != task.spec.type:
        raise BamError(f"{where}: teacher is {manifest['type']}, the task is {task.spec.type}")
    if manifest["labels"] != list(task.spec.labels):
        raise BamError(f"{where}: teacher label order {manifest['labels']} differs from the task's {list(task.spec.labels)}")
    recorded, expected = recorded_target_settings(manifest, task, where), target_settings(task)
    for field, value in expected.items():
        if recorded[field] != value:  # the teacher's stored scores would give the student another target distribution
            raise BamError(f"{where}: teacher was trained with {field} = {recorded[field]!r}, the task has {value!r}; train the teachers with the task's {field}")
    if manifest["train_fingerprint"] != train_fingerprint:
        raise BamError(f"{where}: teacher was made from different training data (fingerprint {manifest['train_fingerprint'][:12]}, data {train_fingerprint[:12]}); retrain the teacher")
    path, sha256 = _checked_file(store, task.name, manifest, "train")
    _check_rows(path, train_ids, where)
    # A fresh mapping, untouched: the outputs become resident only as the
    # student reads their rows.
    outputs = read_predictions(path).outputs
    if outputs.shape[-1] != task.output_size:  # rows were checked with the ids
        raise BamError(f"{where}: teacher outputs have shape {tuple(outputs.shape)}, the task needs {len(train_ids)} x {task.output_size}")
    return Teacher(outputs, sha256)


def read_split(store: Path, task_name: str, manifest: dict, split: str) -> Predictions:
    """One split's predictions from a teacher's folder (mapped), checked against the manifest's checksum and for finite outputs.

    `manifest` is the task's, from `read_manifest`; a teacher ensemble reads its members this way.
    """
    path, _ = _checked_file(store, task_name, manifest, split)
    predictions = read_predictions(path)  # first: the finite check trusts the layout this checks
    if not _outputs_are_finite(path):
        raise BamError(f"{path}: outputs hold non-finite values (a diverged teacher?); retrain the teacher")
    return predictions


def stored_tasks(store: Path) -> list[str]:
    """The tasks a store holds a finished teacher of, sorted; one line if `store` is not a store."""
    if not store.is_dir():
        raise BamError(f"teacher store {store} does not exist")
    if (store / "manifest.json").is_file():  # an easy slip: the task folder given for its store
        raise BamError(f"{store} is one task's folder, not a teacher store; give the folder above it ({store.parent})")
    # Hidden folders are scratch (`.<task>.partial`, checkpoints): never finished teachers.
    return sorted(folder.name for folder in store.iterdir() if not folder.name.startswith(".") and (folder / "manifest.json").is_file())


def _checked_file(store: Path, task_name: str, manifest: dict, split: str) -> tuple[Path, str]:
    """The path of one split's file and its SHA-256, once that matches the manifest."""
    entry = manifest["files"][split]
    path = store / task_name / entry["path"]
    if not path.is_file():
        raise BamError(f"{path}: missing")
    try:
        sha256 = _sha256(path)
    except OSError as error:
        raise BamError(f"{path}: unreadable ({error.strerror or error})") from None
    if sha256 != entry["sha256"]:
        raise BamError(f"{path}: checksum does not match the manifest (corrupted or truncated)")
    return path, sha256


def _check_rows(path: Path, train_ids: torch.Tensor, where: str) -> None:
    # The comparison touches every row; doing it on a mapping of its own, which
    # is unmapped when this returns, keeps those pages out of the student's
    # resident memory for the whole of training.
    ids = read_predictions(path).ids
    if ids.shape != train_ids.shape or not torch.equal(ids, train_ids.to(torch.int64)):
        raise BamError(f"{where}: teacher example ids do not match the training data ({len(ids)} stored, {len(train_ids)} in the data)")
    if not _outputs_are_finite(path):  # a store written by another tool, or by bam before it checked
        raise BamError(f"{where}: teacher outputs hold non-finite values (a diverged teacher?); retrain the teacher")


def _outputs_are_finite(path: Path, chunk_bytes: int = 1 << 20) -> bool:
    """Whether every float32 of the file's `outputs` is finite, read through a small buffer (never mapped or held whole).

    read_predictions has already checked the file's layout, so the header can be trusted here.
    """
    with path.open("rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        start, end = json.loads(handle.read(header_size))["outputs"]["data_offsets"]
        handle.seek(8 + header_size + start)
        remaining = end - start
        while remaining > 0:
            chunk = handle.read(min(chunk_bytes, remaining))
            if not np.isfinite(np.frombuffer(chunk, dtype="<f4")).all():
                return False
            remaining -= len(chunk)
    return True
