"""The conditions a sweep compares, as data, and the sweep folder's layout (known here and nowhere else).

A condition says which stage trains it, how its targets anneal, which other
condition's predictions teach it, which condition's trained encoder it starts
from, whose teachers it averages, and whether it trains one run per task. The
BAM paper's five:

    single         the single-task teachers (their dev scores are the Single baseline)
    multi          a multi-task student on gold labels only (anneal = none)
    bam            Single->Multi: a student distilled from that seed's teachers, linear annealing
    single-single  born-again single-task: a one-task student taught by its own teacher
    multi-multi    a multi-task student taught by that seed's `multi` model

MT-DNN's procedure (Liu et al. 2019):

    mtdnn          each seed's `multi` model fine-tuned per task (bam.finetune): its encoder and that task's head

and teacher ensembles (the MT-DNN distillation follow-up's, TextBrewer's):

    ensemble       the `single` teachers of EVERY seed of the sweep, averaged (bam.ensemble): one run
                   per task for the whole sweep, not per seed, so it has no results row of its own
    bam-ensemble   a student distilled from `ensemble`, linear annealing: each seed's student has the same teacher

A student condition followed by `+METHOD` is the same condition trained with
that loss weighting (bam.weighting): `multi+uncertainty`, `bam+dwa`.

Layout of a sweep folder, one folder per run:

    seed<N>/single/<task>/          the teacher store of seed N (one run per task)
    seed<N>/multi/                  run directory, with teachers/: its own predictions, for multi-multi
    seed<N>/bam/
    seed<N>/single-single/<task>/
    seed<N>/multi-multi/
    seed<N>/mtdnn/<task>/           a teacher store, like single's
    ensemble/<task>/                the teacher store of the ensemble of every seed's single teachers
    seed<N>/bam-ensemble/
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Condition:
    """How the runs of one condition are trained."""

    name: str
    stage: Literal["teachers", "student", "ensemble", "finetune"]  # bam.teachers.train_teachers, bam.student.distill, bam.ensemble.ensemble_teachers or bam.finetune.finetune
    anneal: str = "none"  # the student's teacher annealing
    teacher: str | None = None  # the condition whose predictions teach it (its teacher store)
    starting_model: str | None = None  # the condition whose trained encoder it starts from (None: the recipe's model)
    members: str | None = None  # an ensemble's: the condition whose teacher stores, of every seed of the sweep, it averages
    per_task: bool = False  # one run per task instead of one for all
    teaches: bool = False  # a student that also stores its own predictions as a teacher store
    loss_weighting: str | None = None  # the student's loss weighting, where the condition names one (`multi+uncertainty`)

    def needs(self) -> list[str]:
        """The conditions whose runs must finish before this one's."""
        return [name for name in (self.teacher, self.starting_model, self.members) if name is not None]

    @property
    def across_seeds(self) -> bool:
        """One run (per task) for the whole sweep, made from the runs of every seed, instead of one per seed."""
        return self.members is not None

    @property
    def writes_store(self) -> bool:
        """Whether each run is a teacher-store task folder (teachers, ensembles) rather than a run directory."""
        return self.stage != "student"


class _Conditions(dict):
    """The named conditions; a student condition's name with `+METHOD` appended names it with that loss weighting."""

    def __missing__(self, name: str) -> Condition:
        from bam.weighting import WEIGHTINGS  # it imports bam.config, which needs nothing from here

        base, plus, method = name.partition("+")
        if plus and base in self and self[base].stage == "student" and method in WEIGHTINGS:
            return dataclasses.replace(self[base], name=name, loss_weighting=method)
        raise KeyError(name)

    def __contains__(self, name) -> bool:
        try:
            self[name]
        except KeyError:
            return False
        return True


def condition_order(name: str) -> tuple[int, str]:
    """Where a condition sorts: after the conditions it may need, a weighted variant right after its base."""
    base = name.partition("+")[0]
    return (list(CONDITIONS).index(base) if base in CONDITIONS else len(CONDITIONS), name)


def conditions_in(sweep: Path) -> list[str]:
    """Every named condition, and the weighted variants (`multi+dwa`) that have a folder in the sweep."""
    variants = {folder.name for seed in Path(sweep).glob("seed*") if seed.is_dir() for folder in seed.iterdir() if "+" in folder.name and folder.name in CONDITIONS}
    return [*CONDITIONS, *sorted(variants, key=condition_order)]


CONDITIONS: dict[str, Condition] = _Conditions({
    condition.name: condition
    for condition in (
        Condition("single", "teachers", per_task=True),
        # A `multi` run always stores its own predictions, so multi-multi can be added to a sweep later.
        Condition("multi", "student", teaches=True),
        Condition("bam", "student", anneal="linear", teacher="single"),
        Condition("single-single", "student", anneal="linear", teacher="single", per_task=True),
        Condition("multi-multi", "student", anneal="linear", teacher="multi"),
        Condition("mtdnn", "finetune", starting_model="multi", per_task=True),
        Condition("ensemble", "ensemble", members="single", per_task=True),
        Condition("bam-ensemble", "student", anneal="linear", teacher="ensemble"),
    )
})


def run_folder(sweep: Path, condition: str, seed: int | None, task: str | None = None) -> Path:
    """The folder one run writes: a teacher-store task folder, or a run directory (`seed` is None for a run across seeds)."""
    across_seeds = condition in CONDITIONS and CONDITIONS[condition].across_seeds
    folder = Path(sweep) / condition if across_seeds else Path(sweep) / f"seed{seed}" / condition
    return folder / task if task else folder


def finished_marker(condition: str) -> str:
    """The file whose presence says a run finished (both are written last, into a folder renamed into place)."""
    return "manifest.json" if CONDITIONS[condition].writes_store else "metrics.json"


def teacher_store(sweep: Path, condition: str, seed: int | None) -> Path:
    """The teacher store a condition's runs leave: the teachers' (or ensemble's) store itself, or a teaching student's `teachers/`."""
    if CONDITIONS[condition].writes_store:
        return run_folder(sweep, condition, seed)
    return run_folder(sweep, condition, seed) / "teachers"


def trained_encoder(sweep: Path, condition: str, seed: int, task: str | None) -> Path:
    """Where a run's trained encoder is saved (for a condition that starts from it)."""
    folder = run_folder(sweep, condition, seed, task if CONDITIONS[condition].per_task else None)
    return folder / "model" / "encoder"


def dev_prediction_files(sweep: Path, condition: str, seed: int, task: str) -> dict[str, Path]:
    """A run's prediction files on one task's dev splits, by split name (none for a condition bam does not know)."""
    if condition not in CONDITIONS:  # a results.csv edited by hand
        return {}
    if CONDITIONS[condition].writes_store:  # a teacher-store folder: <split>.safetensors, train included
        folder, prefix = run_folder(sweep, condition, seed, task), ""
    else:  # a run directory: predictions/<task>.<split>.safetensors
        folder, prefix = run_folder(sweep, condition, seed, task if CONDITIONS[condition].per_task else None) / "predictions", f"{task}."
    found = {path.name[len(prefix) : -len(".safetensors")]: path for path in folder.glob(f"{prefix}*.safetensors")}
    found.pop("train", None)
    return found
