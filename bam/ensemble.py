"""`bam ensemble-teachers`: several teachers of the same tasks and data, averaged into one teacher store.

The knowledge-distillation follow-ups of BAM (MT-DNN's, TextBrewer's) teach a
student from several teachers at once. Here an ensemble is one more teacher
store, so the student reads it as it reads any other, with the same checks.

For each task: read (every member's manifest and prediction files, through
bam.teacher_store, each checked against its checksum and against the first
member: type, label order, training-data fingerprint, splits, example ids and
gold labels) -> average (every split, train and dev, by the task type's
`ensemble` rule: the mean distribution for classification, the mean value for
regression) -> score (the ensemble's own dev metrics) -> write (a teacher-store
task folder without a model, whose manifest lists its members). Every task is
read and checked before any is written.

The task's spec (its metrics, label range, output size) comes from the recipe
each member recorded in its manifest, and the members must agree on it. A
RECIPE argument could name the wrong file, or one edited since, and nothing in
the store could tell; the recorded recipe is the one the teacher was trained
and scored with, so there is nothing for a user to get wrong.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bam import metrics
from bam.config import Recipe, build
from bam.errors import BamError
from bam.files import check_writable, code_fingerprint
from bam.tasks import Task, resolve
from bam.teacher_store import Predictions, read_manifest, read_split, stored_tasks, write_teacher

# The spec fields that say what a teacher's outputs mean and how they are scored: members must agree on them.
# (Where the data files are, and which head produced the outputs, may differ.)
SCORED_FIELDS = ("type", "labels", "label_range", "metrics", "ranking_scale")  # what the members must share: how outputs are scored and read as targets


@dataclass(frozen=True)
class Member:
    """One member's teacher of one task: its store, manifest, recorded task, and predictions per split (mapped)."""

    store: Path
    manifest: dict
    task: Task
    predictions: dict[str, Predictions]

    @property
    def where(self) -> str:
        return f"teacher store {self.store}, task {self.task.name!r}"


def ensemble_teachers(stores: Sequence[Path], out: Path, tasks: Sequence[str] | None = None) -> dict:
    """Average the teacher stores `stores` into the store `out`, task by task; returns the ensemble's dev metrics (metrics.json layout).

    `tasks` picks the tasks (each held by every store); by default, every task all the stores hold.
    """
    # read: everything that can be refused, before anything is written
    stores, out = [Path(store) for store in stores], Path(out)
    _check_stores(stores, out)
    names = ensemble_tasks(stores, tasks)
    members = {name: _read_members(stores, name) for name in names}
    for name in names:
        check_writable(out / name)

    results = {}
    for name, task_members in members.items():
        # average
        first = task_members[0]
        task = first.task
        predictions = {
            split: Predictions(rows.ids, task.type.ensemble([member.predictions[split].outputs for member in task_members], task.spec, rows.groups), rows.labels, rows.groups)
            for split, rows in first.predictions.items()
        }
        # score
        results[name] = task.score_splits({split: (rows.labels, rows.outputs, rows.groups) for split, rows in predictions.items() if split != "train"})
        # write
        details = {
            "members": [_described(member) for member in task_members],
            "dev_metrics": {**results[name], "score": metrics.task_score(results[name])},
            "code": code_fingerprint(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        write_teacher(out, task, predictions=predictions, train_fingerprint=first.manifest["train_fingerprint"], details=details, save_model=None)
    return metrics.summarize(results)


def ensemble_tasks(stores: Sequence[Path], only: Sequence[str] | None = None) -> list[str]:
    """The tasks to ensemble: `only`, each of which every store must hold, or else every task all the stores hold."""
    held = {Path(store): stored_tasks(Path(store)) for store in stores}
    if only is not None:
        if not only:
            raise BamError("--tasks: no task named")
        repeated = [name for name in only if list(only).count(name) > 1]
        if repeated:
            raise BamError(f"--tasks: {repeated[0]!r} is named twice")
        for name in only:
            for store, names in held.items():
                if name not in names:
                    raise BamError(f"teacher store {store} has no finished teacher for task {name!r}")
        return list(only)
    common = [name for name in next(iter(held.values()), []) if all(name in names for names in held.values())]
    if not common:
        raise BamError("the teacher stores hold no task in common (" + "; ".join(f"{store}: {', '.join(names) or 'none'}" for store, names in held.items()) + ")")
    return common


def _check_stores(stores: list[Path], out: Path) -> None:
    """At least two different stores, and an output that is none of them."""
    if len(stores) < 2:
        raise BamError(f"an ensemble needs at least two teacher stores, got {len(stores)}")
    resolved = [store.resolve() for store in stores]
    for index, store in enumerate(resolved):
        if store in resolved[:index]:  # the same teacher counted twice is a weighting, not an ensemble
            raise BamError(f"teacher store {stores[index]} is named twice: an ensemble needs different teachers")
    if out.resolve() in resolved:  # it would replace a member's teacher with the ensemble it is part of
        raise BamError(f"--out {out} is one of the members; write the ensemble into another store")


def _read_members(stores: list[Path], name: str) -> list[Member]:
    """Every store's teacher of task `name`, each checked against the first."""
    members = [_read_member(store, name) for store in stores]
    first = members[0]
    seen = {first.manifest["files"]["train"]["sha256"]: first.store}
    for member in members[1:]:
        _check_agrees(member, first)
        sha256 = member.manifest["files"]["train"]["sha256"]
        if sha256 in seen:  # a copied store under another name
            raise BamError(f"teacher stores {seen[sha256]} and {member.store} hold the same teacher of task {name!r} (identical training-set outputs): an ensemble needs different teachers")
        seen[sha256] = member.store
    return members


def _read_member(store: Path, name: str) -> Member:
    """One store's teacher of task `name`: its manifest, its recorded task, and every split checked against its checksum."""
    manifest = read_manifest(store, name)
    path = store / name / "manifest.json"
    if "members" in manifest:  # its members would count once per ensemble they are in, not once each
        raise BamError(f"teacher store {store}, task {name!r}: is itself an ensemble; name its members instead")
    if not isinstance(manifest.get("recipe"), dict):
        raise BamError(f"{path}: no recorded 'recipe', so the task's metrics are unknown (a store bam did not write?)")
    try:
        (task,) = resolve(build(Recipe, manifest["recipe"]), name)
    except BamError as error:
        raise BamError(f"{path}: its recorded recipe does not describe task {name!r} ({error})") from None
    if manifest["type"] != task.spec.type or manifest["labels"] != list(task.spec.labels):
        raise BamError(f"{path}: 'type' and 'labels' differ from the task in its own recorded recipe (an edited manifest?)")
    predictions = {split: read_split(store, name, manifest, split) for split in manifest["files"]}
    if task.type.batch_unit == "group" and any(rows.groups is None for rows in predictions.values()):
        # Averaging a ranking teacher's distributions needs each row's group; the store must say, not be guessed from the data.
        raise BamError(f"teacher store {store}, task {name!r}: its predictions hold no groups (a ranking store written by bam writes them); retrain the teacher")
    for split, rows in predictions.items():
        if rows.outputs.shape[-1] != task.output_size:
            raise BamError(f"{store / name / manifest['files'][split]['path']}: outputs have {rows.outputs.shape[-1]} columns, the task needs {task.output_size}")
    return Member(store, manifest, task, predictions)


def _check_agrees(member: Member, first: Member) -> None:
    """Refuse a member that is not a teacher of the same task, labels, data and examples as the first."""
    theirs = f"the first member's ({first.store})"
    mine, other = member.manifest, first.manifest
    if mine["type"] != other["type"]:
        raise BamError(f"{member.where}: type {mine['type']} differs from {theirs}, {other['type']}")
    if mine["labels"] != other["labels"]:
        raise BamError(f"{member.where}: label order {mine['labels']} differs from {theirs}, {other['labels']}")
    if mine["train_fingerprint"] != other["train_fingerprint"]:
        raise BamError(f"{member.where}: made from other training data than {theirs} (fingerprint {mine['train_fingerprint'][:12]}, theirs {other['train_fingerprint'][:12]})")
    if sorted(member.predictions) != sorted(first.predictions):
        raise BamError(f"{member.where}: splits {', '.join(sorted(member.predictions))} differ from {theirs}, {', '.join(sorted(first.predictions))}")
    differing = [field for field in SCORED_FIELDS if getattr(member.task.spec, field) != getattr(first.task.spec, field)]
    if differing:
        raise BamError(f"{member.where}: its recorded recipe gives the task another {differing[0]} than {theirs}")
    for split, rows in member.predictions.items():
        if not (rows.ids.shape == first.predictions[split].ids.shape and rows.ids.equal(first.predictions[split].ids)):
            raise BamError(f"{member.where}: the example ids of split {split!r} differ from {theirs} (other examples, or in another order)")
        if not (rows.labels.shape == first.predictions[split].labels.shape and rows.labels.equal(first.predictions[split].labels)):
            raise BamError(f"{member.where}: the gold labels of split {split!r} differ from {theirs}")
        mine_groups, their_groups = rows.groups, first.predictions[split].groups
        if (mine_groups is None) != (their_groups is None) or (mine_groups is not None and not mine_groups.equal(their_groups)):
            raise BamError(f"{member.where}: the groups of split {split!r} differ from {theirs}")


def _described(member: Member) -> dict:
    """What the ensemble's manifest says about one member."""
    return {
        "store": str(member.store.resolve()),
        "seed": member.manifest.get("seed"),
        "train_sha256": member.manifest["files"]["train"]["sha256"],
        "dev_metrics": member.manifest.get("dev_metrics"),
    }


def check_built_from(store: Path, task_name: str, members: dict[int, Path]) -> None:
    """Refuse an ensemble of a task that was not built from the current teachers of `members` (seed -> store):
    other seeds (a sweep resumed with other --seeds), or a member retrained or deleted since.

    Members are compared by seed and by the checksum of their training-set
    predictions, not by path, so a sweep folder that moved still matches.
    """
    folder = store / task_name
    recorded = read_manifest(store, task_name).get("members")
    if not (isinstance(recorded, list) and all(isinstance(entry, dict) for entry in recorded)):
        raise BamError(f"{folder / 'manifest.json'}: no 'members' list; not a teacher ensemble")
    built = {entry.get("seed"): entry.get("train_sha256") for entry in recorded}
    again = "delete it, and the runs it taught, to build it again"
    if sorted(built, key=str) != sorted(members):
        raise BamError(f"{folder}: built from the teachers of seeds {', '.join(map(str, sorted(built, key=str)))}, not of the seeds {', '.join(map(str, sorted(members)))} asked for now; {again}")
    for seed, member in sorted(members.items()):
        manifest_path = member / task_name / "manifest.json"
        if not manifest_path.is_file() or read_manifest(member, task_name)["files"]["train"]["sha256"] != built[seed]:
            raise BamError(f"{folder}: seed {seed}'s teacher ({member / task_name}) is no longer the one it was built from (retrained or deleted since); {again}")
