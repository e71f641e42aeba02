"""The student stage: its teachers are actually used, row by row, and its annealing and checks work end to end."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from bam.config import load_recipe
from bam.data import column, load_tokenized
from bam.errors import BamError
from bam.model import load_tokenizer
from bam.student import distill
from bam.tasks import resolve
from bam.teacher_store import Predictions, read_predictions, write_teacher

from conftest import write_recipe


def _store_teaching(store, task, data, train_fingerprint, labels: torch.Tensor) -> None:
    """A teacher store whose training outputs say, confidently, that row i has label `labels[i]`."""
    logits = torch.full((len(labels), len(task.spec.labels)), -8.0)
    logits[torch.arange(len(labels)), labels] = 8.0
    dev = data.dev["dev"]
    predictions = {
        "train": Predictions.of(data.train, logits),
        "dev": Predictions.of(dev, torch.zeros(len(dev), len(task.spec.labels))),
    }
    write_teacher(store, task, predictions=predictions, train_fingerprint=train_fingerprint, details={}, save_model=None)


ANIMALS = "cat dog bird fox horse fish owl mouse".split()
VERBS = "sleeps runs sits waits plays hides".split()
PLACES = "garden house river field barn forest".split()


def _arbitrary_task(folder):
    """48 distinct invented sentences, random gold labels, and a teacher label that is wrong for every row.

    The teacher's label follows the animal (learnable); the rows are in random
    order, so a teacher row of another example carries an unrelated label.
    """
    generator = torch.Generator().manual_seed(7)
    order = torch.randperm(len(ANIMALS) * len(VERBS) * len(PLACES), generator=generator)[:48]
    animals = order // (len(VERBS) * len(PLACES))
    teacher = animals % 3
    gold = (teacher + 1 + torch.randint(0, 2, (48,), generator=generator)) % 3  # never the teacher's label
    lines = ["sentence\tlabel"]
    for index, label in zip(order.tolist(), gold.tolist()):
        animal, rest = divmod(index, len(VERBS) * len(PLACES))
        verb, place = divmod(rest, len(PLACES))
        lines.append(f"the {ANIMALS[animal]} {VERBS[verb]} in the {PLACES[place]}\t{'abc'[label]}")
    (folder / "ARB").mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        (folder / "ARB" / name).write_text("\n".join(lines) + "\n")
    return teacher


def test_the_student_follows_its_teacher_row_by_row_not_the_gold_labels(tmp_path, tiny_model):
    """A teacher that gives every training row a WRONG label, at teacher weight 1 throughout.

    A student fed the teacher's rows of other examples (misaligned) could not
    fit them, and one that ignored the teacher would learn the gold labels.
    """
    wrong = _arbitrary_task(tmp_path / "data")
    custom = '[custom_tasks.arb]\nlabels = ["a", "b", "c"]\nlocal = { folder = "ARB", text_columns = ["sentence"] }\n'
    recipe_path = write_recipe(tmp_path, tiny_model)
    recipe_path.write_text(recipe_path.read_text() + custom)
    settings = ['precision="fp32"', 'tasks=["arb"]', "student.epochs=20", "student.learning_rate=3e-3", "student.anneal=constant", "student.teacher_weight=1.0"]
    recipe = load_recipe(recipe_path, settings)
    (task,) = resolve(recipe)
    data, train_fingerprint = load_tokenized(task, tmp_path / "data", load_tokenizer(recipe.model), recipe.max_length)
    gold = torch.as_tensor(column(data.train, "label"))
    assert not (wrong == gold).any()
    _store_teaching(tmp_path / "store", task, data, train_fingerprint, wrong)

    distill(recipe, [task], data_dir=tmp_path / "data", teacher_store=tmp_path / "store", out=tmp_path / "run", save_teacher_store=True)

    student = read_predictions(tmp_path / "run" / "teachers" / "arb" / "train.safetensors")
    assert torch.equal(student.ids, torch.as_tensor(column(data.train, "id")))
    predicted = student.outputs.argmax(dim=-1)
    agreement = (predicted == wrong).float().mean().item()
    assert agreement >= 0.9, f"the student agrees with its teacher on only {agreement:.0%} of the training rows"


def _arb_recipe(folder, tiny_model, *settings):
    custom = '[custom_tasks.arb]\nlabels = ["a", "b", "c"]\nlocal = { folder = "ARB", text_columns = ["sentence"] }\n'
    path = write_recipe(folder, tiny_model)
    path.write_text(path.read_text() + custom)
    return load_recipe(path, ['precision="fp32"', 'tasks=["arb"]', "student.epochs=3", *settings])


@pytest.fixture(scope="module")
def arb(tmp_path_factory, tiny_model):
    """The arbitrary task's data and a teacher store for it (the wrong-label teacher)."""
    folder = tmp_path_factory.mktemp("arb")
    wrong = _arbitrary_task(folder / "data")
    recipe = _arb_recipe(folder, tiny_model)
    (task,) = resolve(recipe)
    data, train_fingerprint = load_tokenized(task, folder / "data", load_tokenizer(recipe.model), recipe.max_length)
    _store_teaching(folder / "store", task, data, train_fingerprint, wrong)
    return folder


def _student_dev(arb, tmp_path, tiny_model, *settings) -> torch.Tensor:
    tmp_path.mkdir(parents=True, exist_ok=True)
    recipe = _arb_recipe(tmp_path, tiny_model, *settings)
    distill(recipe, resolve(recipe), data_dir=arb / "data", teacher_store=arb / "store", out=tmp_path / "run")
    return read_predictions(tmp_path / "run" / "predictions" / "arb.dev.safetensors").outputs


def test_constant_annealing_blends_with_the_fixed_teacher_weight(arb, tmp_path, tiny_model):
    gold_only = _student_dev(arb, tmp_path / "none", tiny_model, "student.anneal=none")
    # Teacher weight 0 is lambda = 1 throughout: gold only, to the last bit, though the teacher is read.
    unweighted = _student_dev(arb, tmp_path / "zero", tiny_model, "student.anneal=constant", "student.teacher_weight=0.0")
    half = _student_dev(arb, tmp_path / "half", tiny_model, "student.anneal=constant", "student.teacher_weight=0.5")
    assert torch.equal(unweighted, gold_only)
    assert (half - gold_only).abs().max() > 1e-3


def test_a_teacher_of_another_task_type_is_refused(arb, tmp_path, tiny_model):
    store = tmp_path / "store"
    shutil.copytree(arb / "store", store)
    manifest = json.loads((store / "arb" / "manifest.json").read_text())
    (store / "arb" / "manifest.json").write_text(json.dumps({**manifest, "type": "regression"}))
    recipe = _arb_recipe(tmp_path, tiny_model)
    with pytest.raises(BamError, match=r"task 'arb': teacher is regression, the task is classification"):
        distill(recipe, resolve(recipe), data_dir=arb / "data", teacher_store=store, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_mean_pooling_trains_and_differs_from_first_token_pooling(arb, tmp_path, tiny_model):
    first = _student_dev(arb, tmp_path / "first", tiny_model, "student.anneal=none")
    mean = _student_dev(arb, tmp_path / "mean", tiny_model, "student.anneal=none", 'pooling="mean"')
    assert torch.isfinite(mean).all() and (mean - first).abs().max() > 1e-3
    assert json.loads((tmp_path / "mean" / "run" / "config.json").read_text())["pooling"] == "mean"


def test_forced_bf16_trains_and_is_recorded(arb, tmp_path, tiny_model):
    fp32 = _student_dev(arb, tmp_path / "fp32", tiny_model, "student.anneal=none", "student.epochs=1")
    bf16 = _student_dev(arb, tmp_path / "bf16", tiny_model, "student.anneal=none", "student.epochs=1", 'precision="bf16"')
    assert torch.isfinite(bf16).all() and (bf16 - fp32).abs().max() > 0  # bf16 rounding moves the outputs
    assert json.loads((tmp_path / "bf16" / "run" / "run.json").read_text())["precision"] == "bf16"
