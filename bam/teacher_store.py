"""The teacher store: one writer and one reader for cached teacher predictions.

Layout (documented for users in teachers/README.md):

    <store>/<task>/manifest.json        what the predictions are and what data they belong to
    <store>/<task>/train.safetensors    `ids` (int64, N), `outputs` (float32, N x outputs), gold `labels` (N)
    <store>/<task>/<split>.safetensors  the same for each evaluation split
    <store>/<task>/model/               the fine-tuned teacher (safetensors)

A task's folder is built under a hidden temporary name and renamed into place
only when complete, so a killed run never leaves a teacher that looks finished.
The reader refuses a store whose task, label order, data fingerprint, example
ids or file checksums do not match what the student is about to train on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bam.data import column
from bam.errors import BamError
from bam.files import atomic_directory, write_json
from bam.tasks import Task

FORMAT = "bam-teacher-store/1"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Predictions:
    """A model's outputs on one split, with the example ids and gold labels they belong to."""

    ids: torch.Tensor
    outputs: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def of(cls, dataset, outputs: torch.Tensor) -> "Predictions":
        """Outputs for every row of `dataset`, in dataset order, with its ids and labels."""
        return cls(torch.as_tensor(column(dataset, "id")), outputs, torch.as_tensor(column(dataset, "label")))


def write_predictions(path: Path, predictions: Predictions) -> str:
    """Save predictions as safetensors; returns the file's SHA-256."""
    save_file(
        {
            "ids": predictions.ids.to(torch.int64).contiguous(),
            "outputs": predictions.outputs.float().contiguous(),
            "labels": predictions.labels.contiguous(),
        },
        path,
    )
    return _sha256(path)


def read_predictions(path: Path) -> Predictions:
    """Load a predictions file written by `write_predictions`."""
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as error:
        raise BamError(f"{path}: unreadable ({error})") from None
    if set(tensors) != {"ids", "outputs", "labels"}:
        raise BamError(f"{path}: expected tensors 'ids', 'outputs' and 'labels', found {sorted(tensors)}")
    return Predictions(tensors["ids"], tensors["outputs"], tensors["labels"])


def write_teacher(
    store: Path,
    task: Task,
    *,
    predictions: dict[str, Predictions],
    train_fingerprint: str,
    details: dict,
    save_model: Callable[[Path], None] | None,
) -> Path:
    """Write one task's teacher atomically; `predictions` maps split -> Predictions, `train` included.

    `save_model` writes the model into the folder it is given; None stores predictions only
    (a multi-task model used as a teacher is saved once in its own run directory).
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
        manifest = {
            "format": FORMAT,
            "task": task.name,
            "type": task.spec.type,
            "labels": list(task.spec.labels),
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
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BamError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise BamError(f"{path}: format {found!r} is not {FORMAT!r}")
    for key in ("type", "labels", "train_fingerprint", "files"):
        if key not in manifest:
            raise BamError(f"{path}: no {key!r} entry")
    if not isinstance(manifest["files"], dict) or "train" not in manifest["files"]:
        raise BamError(f"{path}: no 'files.train' entry")
    return manifest


def read_teacher(store: Path, task: Task, train_ids: torch.Tensor, train_fingerprint: str) -> torch.Tensor:
    """The teacher's training-set outputs, row-aligned with `train_ids`, after checking they belong to this data."""
    manifest = read_manifest(store, task.name)
    where = f"teacher store {store}, task {task.name!r}"
    if manifest["type"] != task.spec.type:
        raise BamError(f"{where}: teacher is {manifest['type']}, the task is {task.spec.type}")
    if manifest["labels"] != list(task.spec.labels):
        raise BamError(f"{where}: teacher label order {manifest['labels']} differs from the task's {list(task.spec.labels)}")
    if manifest["train_fingerprint"] != train_fingerprint:
        raise BamError(f"{where}: teacher was made from different training data (fingerprint {manifest['train_fingerprint'][:12]}, data {train_fingerprint[:12]}); retrain the teacher")
    entry = manifest["files"]["train"]
    path = store / task.name / entry["path"]
    if not path.is_file():
        raise BamError(f"{path}: missing")
    if _sha256(path) != entry["sha256"]:
        raise BamError(f"{path}: checksum does not match the manifest (corrupted or truncated)")
    stored = read_predictions(path)
    ids, outputs = stored.ids, stored.outputs
    if ids.shape != train_ids.shape or not torch.equal(ids, train_ids.to(torch.int64)):
        raise BamError(f"{where}: teacher example ids do not match the training data ({len(ids)} stored, {len(train_ids)} in the data)")
    if outputs.dim() != 2 or len(outputs) != len(ids) or outputs.shape[-1] != task.output_size:
        raise BamError(f"{where}: teacher outputs have shape {tuple(outputs.shape)}, the task needs {len(ids)} x {task.output_size}")
    return outputs
