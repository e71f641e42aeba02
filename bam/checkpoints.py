"""Training checkpoints: a killed run, started again with the same command, ends with the same numbers.

A checkpoint is everything the training loop needs to carry on as if it had
never stopped: the model weights (safetensors), the optimizer and scheduler
states and every process's torch random states, CPU and GPU (`state.pt`, read
back with `torch.load(weights_only=True)`, so no arbitrary objects), the step
reached, the seconds of training it took to get there (so that a resumed
run's recorded wall time includes the attempts before), the loss weighting's
state and the training log so far. The data position
needs no saving: the step sampler's plan is a pure function of the seed, so
the resumed run rebuilds it and carries on at the step. Each checkpoint is written under a hidden name and
renamed into place (`bam.files.atomic_directory`), and only the newest is
kept. A checkpoint records a key describing its run (recipe, data, teachers,
code, process count); one with another key is never resumed.

Layout: <folder>/step-00000200/{model.safetensors, state.pt, train_log.jsonl, checkpoint.json}
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from bam.errors import BamError, first_line
from bam.files import atomic_directory, read_json, write_json
from bam.train_log import read_train_log, write_train_log


@dataclass(frozen=True)
class Checkpointing:
    """Where a run keeps its checkpoints, how often, and what run they belong to."""

    folder: Path
    every: int  # optimizer steps between checkpoints; 0 keeps only the end-of-training one
    key: str


def run_key(recipe: dict, *identity) -> str:
    """A key for checkpoints: the recipe settings, what is trained on (`identity`: tasks, data, teachers), the code."""
    from bam.files import code_fingerprint

    # The task list is part of `identity`; a teacher does not change when the recipe lists more tasks.
    settings = {name: value for name, value in recipe.items() if name not in ("checkpoint_every", "tasks")}
    return hashlib.sha256(json.dumps([settings, *identity, code_fingerprint()], sort_keys=True).encode()).hexdigest()


def checkpoint_folder(final: Path) -> Path:
    """The checkpoint folder of an output that will be written at `final`: a hidden sibling."""
    return final.parent / f".{final.name}.checkpoints"


def save_checkpoint(
    checkpointing: Checkpointing, step: int, model, optimizer, scheduler, random_states: list[dict[str, torch.Tensor]], seconds: float = 0.0,
    *, weighting: torch.nn.Module | None = None, log: list[dict] = (),
) -> None:
    """Write the checkpoint of `step`, reached after `seconds` of training, atomically; then delete older ones."""
    name = f"step-{step:08d}"
    with atomic_directory(checkpointing.folder / name) as partial:
        save_model(model, str(partial / "model.safetensors"))
        state = {
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "random_states": random_states,
            "weighting": weighting.state_dict() if weighting is not None else {},
        }  # fmt: skip
        try:
            torch.save(state, partial / "state.pt")
        except RuntimeError as error:  # torch reports a failed write (a full disk) as a RuntimeError of its stream writer
            raise BamError(f"{checkpointing.folder / name}: could not write the checkpoint ({first_line(error)})") from None
        write_train_log(partial / "train_log.jsonl", list(log))
        write_json(partial / "checkpoint.json", {"key": checkpointing.key, "step": step, "seconds": seconds})
    for older in checkpointing.folder.glob("step-*"):
        if older.name != name:
            shutil.rmtree(older, ignore_errors=True)


def latest_checkpoint(checkpointing: Checkpointing) -> Path | None:
    """The newest finished checkpoint of this run, or None (other runs' checkpoints are ignored)."""
    for candidate in sorted(checkpointing.folder.glob("step-*"), reverse=True):
        try:
            about = read_json(candidate / "checkpoint.json")
        except (OSError, BamError):  # half-deleted or unreadable: not a checkpoint to resume
            continue
        well_formed = isinstance(about, dict) and type(about.get("step")) is int and isinstance(about.get("seconds", 0.0), (int, float))
        if well_formed and about.get("key") == checkpointing.key:
            return candidate
    return None


@dataclass(frozen=True)
class Resumed:
    """What a checkpoint gives back besides the states it loads in place."""

    step: int
    random_states: list[dict[str, torch.Tensor]]
    seconds: float
    log: list[dict]


def load_checkpoint(path: Path, model, optimizer, scheduler, weighting: torch.nn.Module | None = None) -> Resumed:
    """Restore model, optimizer, scheduler and loss weighting in place; returns the step reached, random states, seconds and log."""
    try:
        load_model(model, str(path / "model.safetensors"))
        state = torch.load(path / "state.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if weighting is not None:
            weighting.load_state_dict(state["weighting"])
        random_states = state["random_states"]
        log = read_train_log(path / "train_log.jsonl")
    except Exception as error:  # torch and safetensors raise many types for a damaged file; all mean the same here
        raise BamError(f"{path}: a damaged checkpoint ({first_line(error)}); delete {path.parent} to start the run over") from None
    about = read_json(path / "checkpoint.json")
    if [record["step"] for record in log] != list(range(1, about["step"] + 1)):  # the log must carry on where the weights do
        raise BamError(f"{path}: its training log does not hold steps 1 to {about['step']}; delete {path.parent} to start the run over")
    return Resumed(about["step"], random_states, about.get("seconds", 0.0), log)


def remove_checkpoints(final: Path) -> None:
    """Once the output at `final` is complete its checkpoints are no longer needed."""
    shutil.rmtree(checkpoint_folder(final), ignore_errors=True)
