"""Teacher ensembles: the averaging per task type against hand-computed values, every refusal, and a round trip
from two trained teacher stores through `bam ensemble-teachers` to a student distilled from the ensemble."""

import json
import math
import shutil

import pytest
import torch
from click.testing import CliRunner

from bam.cli import main
from bam.config import Recipe, TaskSpec, to_dict
from bam.ensemble import ensemble_teachers
from bam.errors import BamError
from bam.task_types import TASK_TYPES
from bam.tasks import Task, resolve
from bam.teacher_store import Predictions, read_manifest, read_predictions, read_teacher, write_teacher

from conftest import GLUE_FIXTURE, write_recipe

CLASSIFICATION, REGRESSION = TASK_TYPES["classification"], TASK_TYPES["regression"]
(RTE,) = resolve(Recipe(model="m", tasks=("rte",)))


def test_classification_stores_the_log_of_the_mean_distribution():
    # Member a: softmax([ln 2, 0, 0]) = [2, 1, 1] / 4 and softmax([0, 0, 0]) = [1, 1, 1] / 3.
    # Member b: softmax([0, ln 3, 0]) = [1, 3, 1] / 5 and softmax([ln 4 + 10, 10, ln 3 + 10]) = [4, 1, 3] / 8.
    a = torch.tensor([[math.log(2), 0.0, 0.0], [0.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, math.log(3), 0.0], [math.log(4) + 10, 10.0, math.log(3) + 10]])
    # Row 0: ([0.5, 0.25, 0.25] + [0.2, 0.6, 0.2]) / 2 = [0.35, 0.425, 0.225].
    # Row 1: ([1/3, 1/3, 1/3] + [1/2, 1/8, 3/8]) / 2 = [5/12, 11/48, 17/48] (= [20, 11, 17] / 48).
    mean = torch.tensor([[0.35, 0.425, 0.225], [5 / 12, 11 / 48, 17 / 48]])
    stored = CLASSIFICATION.ensemble([a, b], TaskSpec(labels=("a", "b")))
    assert stored.dtype == torch.float32
    torch.testing.assert_close(stored, mean.log(), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.softmax(stored, dim=-1), mean, atol=1e-6, rtol=0)
    # Not the mean of the logits: row 0 would be softmax([ln 2 / 2, ln 3 / 2, 0]) = [√2, √3, 1] / (√2 + √3 + 1).
    assert torch.softmax(stored[0], dim=-1)[0].item() != pytest.approx(math.sqrt(2) / (math.sqrt(2) + math.sqrt(3) + 1), abs=1e-3)


def test_classification_ensemble_stays_finite_where_float32_probabilities_underflow():
    # softmax([0, -200]) = [1, e^-200], and e^-200 is 0 in float32: the mean's log must still be finite (about -200 - ln 2).
    stored = CLASSIFICATION.ensemble([torch.tensor([[0.0, -200.0]]), torch.tensor([[0.0, -300.0]])], TaskSpec(labels=("a", "b")))
    assert torch.isfinite(stored).all() and stored[0, 1].item() == pytest.approx(-200 - math.log(2), abs=1e-3)


def test_regression_stores_the_mean_value():
    # (0.2 + 0.4) / 2 = 0.3 and (0.9 + 0.5) / 2 = 0.7, on the [0, 1] target scale the store holds.
    torch.testing.assert_close(REGRESSION.ensemble([torch.tensor([[0.2], [0.9]]), torch.tensor([[0.4], [0.5]])], TaskSpec(type="regression")), torch.tensor([[0.3], [0.7]]))


# Two synthetic RTE teachers of the same data. On dev (gold 0, 1, 1, 0) each is right on 2 of 4 rows, the ensemble on all 4:
# P(class 0) a: 0.9, 0.6, 0.2, 0.4 -> 0, 0, 1, 1;  b: 0.4, 0.3, 0.7, 0.8 -> 1, 1, 0, 0;  mean: 0.65, 0.45, 0.45, 0.6 -> 0, 1, 1, 0.
DEV_IDS, DEV_LABELS = torch.arange(4), torch.tensor([0, 1, 1, 0])
DEV_FIRST_CLASS = {0: [0.9, 0.6, 0.2, 0.4], 1: [0.4, 0.3, 0.7, 0.8]}
TRAIN_IDS, TRAIN_LABELS = torch.arange(5), torch.tensor([0, 1, 1, 0, 1])


def write_member(store, seed, *, task=RTE, recipe=None, fingerprint="data", train_ids=TRAIN_IDS, dev_labels=DEV_LABELS, extra_splits=()):
    """A teacher of `task` as `bam train-teachers` would store it, with invented outputs."""
    recipe = recipe or Recipe(model="m", tasks=(task.name,), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    train_labels = TRAIN_LABELS if task.spec.type == "classification" else torch.rand(5, generator=generator)
    train = Predictions(train_ids, torch.randn(5, task.output_size, generator=generator), train_labels)
    if task.output_size == 2:
        first = torch.tensor(DEV_FIRST_CLASS[seed % 2])
        dev = Predictions(DEV_IDS, torch.stack([first, 1 - first], dim=-1).log(), dev_labels)
    else:
        dev = Predictions(DEV_IDS, torch.rand(4, task.output_size, generator=generator), torch.rand(4, generator=generator))
    predictions = {"train": train, "dev": dev, **{split: dev for split in extra_splits}}
    details = {"seed": seed, "recipe": to_dict(recipe), "dev_metrics": {"accuracy": 50.0, "score": 50.0}}
    write_teacher(store, task, predictions=predictions, train_fingerprint=fingerprint, details=details, save_model=None)
    return store


@pytest.fixture
def members(tmp_path):
    return write_member(tmp_path / "a", 0), write_member(tmp_path / "b", 1)


def test_an_ensemble_is_a_teacher_store_that_lists_its_members(members, tmp_path):
    a, b = members
    results = ensemble_teachers([a, b], tmp_path / "ensemble")
    assert results["tasks"]["rte"] == {"accuracy": 100.0, "score": 100.0}  # its own dev metrics, on its averaged outputs
    manifest = read_manifest(tmp_path / "ensemble", "rte")
    assert manifest["dev_metrics"] == {"accuracy": 100.0, "score": 100.0}
    assert [(member["store"], member["seed"], member["dev_metrics"]["score"]) for member in manifest["members"]] == [(str(a), 0, 50.0), (str(b), 1, 50.0)]
    assert [member["train_sha256"] for member in manifest["members"]] == [read_manifest(store, "rte")["files"]["train"]["sha256"] for store in (a, b)]
    assert (manifest["type"], manifest["labels"], manifest["train_fingerprint"]) == ("classification", ["entailment", "not_entailment"], "data")
    assert sorted(path.name for path in (tmp_path / "ensemble" / "rte").iterdir()) == ["dev.safetensors", "manifest.json", "train.safetensors"]  # no model
    # The student reads it like any store, with the same checks.
    teacher = read_teacher(tmp_path / "ensemble", RTE, TRAIN_IDS, "data")
    mean = (read_predictions(a / "rte" / "train.safetensors").outputs.softmax(-1) + read_predictions(b / "rte" / "train.safetensors").outputs.softmax(-1)) / 2
    assert torch.allclose(teacher.outputs.softmax(-1), mean, atol=1e-6)
    with pytest.raises(BamError, match="made from different training data"):
        read_teacher(tmp_path / "ensemble", RTE, TRAIN_IDS, "other data")


def swapped_labels(tmp_path, b):
    spec = TaskSpec(labels=("not_entailment", "entailment"))
    write_member(b, 1, task=Task("rte", spec), recipe=Recipe(model="m", tasks=("rte",), custom_tasks={"rte": spec}))


def other_type(tmp_path, b):
    spec = TaskSpec(type="regression", metrics=("pearson",))
    write_member(b, 1, task=Task("rte", spec), recipe=Recipe(model="m", tasks=("rte",), custom_tasks={"rte": spec}))


def other_metrics(tmp_path, b):
    spec = TaskSpec(labels=("entailment", "not_entailment"), metrics=("f1",))
    write_member(b, 1, task=Task("rte", spec), recipe=Recipe(model="m", tasks=("rte",), custom_tasks={"rte": spec}))


def damaged_file(tmp_path, b):
    path = b / "rte" / "dev.safetensors"
    content = bytearray(path.read_bytes())
    content[-1] ^= 1  # one flipped bit in the last output: safetensors still reads it, only the checksum tells
    path.write_bytes(bytes(content))


def an_ensemble(tmp_path, b):
    write_member(tmp_path / "c", 2)
    ensemble_teachers([tmp_path / "a", tmp_path / "c"], tmp_path / "ac")
    shutil.rmtree(b)
    shutil.copytree(tmp_path / "ac", b)


REFUSALS = {
    "other training data": (lambda tmp_path, b: write_member(b, 1, fingerprint="other"), r"b, task 'rte': made from other training data than the first member's \(.*a\) \(fingerprint other"),
    "rows shifted": (lambda tmp_path, b: write_member(b, 1, train_ids=TRAIN_IDS.roll(1)), r"b, task 'rte': the example ids of split 'train' differ from the first member's"),
    "other gold labels": (lambda tmp_path, b: write_member(b, 1, dev_labels=1 - DEV_LABELS), r"b, task 'rte': the gold labels of split 'dev' differ"),
    "label order": (swapped_labels, r"b, task 'rte': label order \['not_entailment', 'entailment'\] differs from the first member's"),
    "type": (other_type, r"b, task 'rte': type regression differs from the first member's \(.*a\), classification"),
    "metrics": (other_metrics, r"b, task 'rte': its recorded recipe gives the task another metrics than the first member's"),
    "split set": (lambda tmp_path, b: write_member(b, 1, extra_splits=("dev2",)), r"b, task 'rte': splits dev, dev2, train differ from the first member's .*, dev, train"),
    "damaged file": (damaged_file, r"b/rte/dev.safetensors: checksum does not match the manifest"),
    "a copy of a member": (lambda tmp_path, b: (shutil.rmtree(b), shutil.copytree(tmp_path / "a", b)), r"a and .*b hold the same teacher of task 'rte'"),
    "an ensemble as a member": (an_ensemble, r"b, task 'rte': is itself an ensemble; name its members instead"),
    "missing task": (lambda tmp_path, b: shutil.rmtree(b / "rte"), r"teacher store .*b has no finished teacher for task 'rte'"),
}


@pytest.mark.parametrize("refusal", REFUSALS)
def test_members_that_are_not_teachers_of_the_same_task_and_data_are_refused(members, tmp_path, refusal):
    a, b = members
    spoil, message = REFUSALS[refusal]
    spoil(tmp_path, b)
    with pytest.raises(BamError, match=message):
        ensemble_teachers([a, b], tmp_path / "out", ["rte"])
    assert not (tmp_path / "out").exists()


def test_the_stores_themselves_are_checked(members, tmp_path):
    a, b = members
    with pytest.raises(BamError, match="an ensemble needs at least two teacher stores, got 1"):
        ensemble_teachers([a], tmp_path / "out")
    with pytest.raises(BamError, match=r"teacher store .*a is named twice: an ensemble needs different teachers"):
        ensemble_teachers([a, b, tmp_path / "." / "a"], tmp_path / "out")
    with pytest.raises(BamError, match=r"--out .*b is one of the members"):
        ensemble_teachers([a, b], b)
    with pytest.raises(BamError, match=r"a/rte is one task's folder, not a teacher store; give the folder above it"):
        ensemble_teachers([a / "rte", b / "rte"], tmp_path / "out")
    write_member(tmp_path / "c", 2, task=resolve(Recipe(model="m", tasks=("stsb",)))[0])
    with pytest.raises(BamError, match=r"the teacher stores hold no task in common \(.*a: rte; .*c: stsb\)"):
        ensemble_teachers([a, tmp_path / "c"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert read_manifest(b, "rte")["seed"] == 1  # --out a member left it alone


def test_a_refusal_through_the_command_is_one_line(members, tmp_path):
    a, b = members
    damaged_file(tmp_path, b)
    result = CliRunner().invoke(main, ["ensemble-teachers", str(a), str(b), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines()[-1] == f"bam: error: {b / 'rte' / 'dev.safetensors'}: checksum does not match the manifest (corrupted or truncated)"


def bam(*arguments):
    return CliRunner().invoke(main, [str(argument) for argument in arguments], catch_exceptions=False)


def test_two_trained_teachers_ensembled_then_distilled(tiny_model, tmp_path):
    recipe = write_recipe(tmp_path, tiny_model)
    for seed in (0, 1):
        result = bam("train-teachers", recipe, "--tasks", "rte,stsb", "--seed", seed, "--data-dir", GLUE_FIXTURE, "--out", tmp_path / f"seed{seed}")
        assert result.exit_code == 0, result.output
    result = bam("ensemble-teachers", tmp_path / "seed0", tmp_path / "seed1", "--out", tmp_path / "ensemble")
    assert result.exit_code == 0, result.output
    assert "average" in result.output
    tasks = {task.name: task for task in resolve(Recipe(model="m", tasks=("rte", "stsb")))}
    targets = {"rte": lambda outputs: outputs.softmax(-1), "stsb": lambda outputs: outputs}  # what the student learns from
    for name, task in tasks.items():
        manifest = read_manifest(tmp_path / "ensemble", name)
        assert [member["seed"] for member in manifest["members"]] == [0, 1]
        for split in ("train", "dev"):
            ensemble = read_predictions(tmp_path / "ensemble" / name / f"{split}.safetensors")
            members = [read_predictions(tmp_path / f"seed{seed}" / name / f"{split}.safetensors") for seed in (0, 1)]
            assert torch.equal(ensemble.ids, members[0].ids) and torch.equal(ensemble.labels, members[0].labels)
            mean = (targets[name](members[0].outputs) + targets[name](members[1].outputs)) / 2
            assert torch.allclose(targets[name](ensemble.outputs), mean, atol=1e-6), (name, split)
        dev = read_predictions(tmp_path / "ensemble" / name / "dev.safetensors")
        assert {key: value for key, value in manifest["dev_metrics"].items() if key != "score"} == pytest.approx(task.score(dev.labels, dev.outputs))
    result = bam("distill", recipe, "--tasks", "rte,stsb", "--teachers", tmp_path / "ensemble", "--data-dir", GLUE_FIXTURE, "--out", tmp_path / "student")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "student" / "config.json").read_text())["teacher_store"] == str(tmp_path / "ensemble")
    assert set(json.loads((tmp_path / "student" / "metrics.json").read_text())["tasks"]) == {"rte", "stsb"}
    # --tasks picks, and a picked task a member lacks is named.
    result = bam("ensemble-teachers", tmp_path / "seed0", tmp_path / "seed1", "--tasks", "cola", "--out", tmp_path / "other")
    assert result.exit_code == 2 and f"teacher store {tmp_path / 'seed0'} has no finished teacher for task 'cola'" in result.output
