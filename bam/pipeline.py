"""`bam run`: the whole BAM pipeline in one command, teachers -> student -> teacher-against-student summary.

Each stage is the one its own command runs (`bam.teachers`, `bam.student`),
so a killed `bam run` resumes from the stage's checkpoints. What has finished
is reused, not redone: a teacher whose manifest records the same settings
(the recipe's, for that task), and a student run directory whose config.json
records the same recipe. Anything else is trained, and replaces what was
there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bam.config import Recipe, to_dict
from bam.data import DataDirectories
from bam.errors import BamError
from bam.files import as_read_back, read_json
from bam.student import distill
from bam.tasks import Task
from bam.teacher_store import read_manifest
from bam.teachers import train_teachers
from bam.training import ProgressCallback


@dataclass(frozen=True)
class Summary:
    """The pipeline's outcome: per task the teacher's and the student's dev scores, and what was reused."""

    teacher_scores: dict[str, float]
    student_scores: dict[str, float]
    reused_teachers: list[str]
    reused_student: bool


def run_pipeline(
    recipe: Recipe,
    tasks: list[Task],
    *,
    data_dir: DataDirectories,
    store: Path,
    out: Path,
    progress: Callable[[str], ProgressCallback | None] = lambda name: None,
    on_stage: Callable[[str], None] = lambda message: None,
) -> Summary:
    """Train what is missing (teachers, then the student) and return both stages' dev scores per task."""
    # teachers: only those not already in the store with these settings
    missing = [task for task in tasks if not _teacher_is_current(store, task, recipe)]
    reused = [task.name for task in tasks if task not in missing]
    if reused:
        on_stage(f"teachers: reusing {', '.join(reused)} from {store}")
    if missing:
        on_stage(f"teachers: training {', '.join(task.name for task in missing)} into {store}")
        train_teachers(dataclasses.replace(recipe, tasks=tuple(task.name for task in missing)), missing, data_dir=data_dir, store=store, progress=progress)
    teacher_scores = {task.name: read_manifest(store, task.name)["dev_metrics"]["score"] for task in tasks}

    # student: reused when its run directory records this recipe and these teachers (none retrained)
    reused_student = not missing and _student_is_current(out, recipe, store)
    if reused_student:
        on_stage(f"student: reusing {out}")
        results = read_json(out / "metrics.json")
    else:
        on_stage(f"student: distilling from {store} into {out}")
        results = distill(recipe, tasks, data_dir=data_dir, teacher_store=store, out=out, progress=progress("student"))
    student_scores = {task.name: results["tasks"][task.name]["score"] for task in tasks}
    return Summary(teacher_scores, student_scores, reused, reused_student)


def _teacher_settings(recipe: dict, task_name: str) -> dict:
    """What shapes one task's teacher: the recipe without the student's settings, the task list or other tasks' specs."""
    kept = {key: value for key, value in recipe.items() if key not in ("tasks", "student", "custom_tasks")}
    return {**kept, "task_spec": recipe.get("custom_tasks", {}).get(task_name)}


def _teacher_is_current(store: Path, task: Task, recipe: Recipe) -> bool:
    if not (store / task.name / "manifest.json").is_file():
        return False
    try:
        recorded = read_manifest(store, task.name).get("recipe")
    except BamError:
        return False  # damaged or of another format: trained again, and replaced
    return isinstance(recorded, dict) and _teacher_settings(recorded, task.name) == _teacher_settings(_as_recorded(recipe), task.name)


def _student_is_current(out: Path, recipe: Recipe, store: Path) -> bool:
    if not ((out / "metrics.json").is_file() and (out / "config.json").is_file()):
        return False
    try:
        recorded = read_json(out / "config.json")
    except BamError:
        return False
    if not isinstance(recorded, dict) or recorded.get("teacher_store") != str(store):
        return False
    return {key: value for key, value in recorded.items() if key not in ("data_dir", "teacher_store")} == _as_recorded(recipe)


def _as_recorded(recipe: Recipe) -> dict:
    """The recipe as a manifest or config.json holds it once read back (JSON has lists, not tuples)."""
    return as_read_back(to_dict(recipe))
