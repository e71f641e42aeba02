"""`bam finetune` (MT-DNN's per-task fine-tuning of a multi-task model) and the `mtdnn` sweep condition, on the tiny encoder."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from bam.config import load_recipe
from bam.errors import BamError
from bam.finetune import run_recipe, weights_fingerprint
from bam.model import MultiTaskModel
from bam.tasks import resolve
from bam.teacher_store import read_predictions

from conftest import GLUE_FIXTURE, write_recipe
from test_cli import bam


@pytest.fixture(scope="module")
def multi(tmp_path_factory, tiny_model):
    """A multi-task run on gold labels (the `multi` condition) of RTE and STS-B."""
    folder = tmp_path_factory.mktemp("finetune")
    recipe = write_recipe(folder, tiny_model)
    result = bam("distill", recipe, "--anneal", "none", "--data-dir", GLUE_FIXTURE, "--out", folder / "multi", "--set", 'tasks=["rte","stsb"]')
    assert result.exit_code == 0, result.output
    return folder / "multi"


def dev_outputs(path):
    return read_predictions(path).outputs


def test_each_task_starts_from_the_runs_encoder_and_its_own_trained_head(multi, tmp_path):
    # With a vanishing learning rate nothing moves: the fine-tuned task answers exactly as the multi-task run did.
    result = bam("finetune", multi, "--tasks", "rte", "--data-dir", GLUE_FIXTURE, "--out", tmp_path / "still", "--set", "teacher.learning_rate=1e-30")
    assert result.exit_code == 0, result.output
    assert torch.allclose(dev_outputs(tmp_path / "still" / "rte" / "dev.safetensors"), dev_outputs(multi / "predictions" / "rte.dev.safetensors"), atol=1e-5)
    assert not (tmp_path / "still" / "stsb").exists()
    manifest = json.loads((tmp_path / "still" / "rte" / "manifest.json").read_text())
    assert manifest["recipe"]["model"] == str(multi / "model" / "encoder") and manifest["recipe"]["teacher"]["learning_rate"] == 1e-30


def test_fine_tuning_trains_every_task_with_the_single_task_settings(multi, tmp_path):
    result = bam("finetune", multi, "--data-dir", GLUE_FIXTURE, "--out", tmp_path / "tuned")
    assert result.exit_code == 0, result.output
    assert {path.name for path in (tmp_path / "tuned").iterdir()} == {"rte", "stsb"}
    tuned = dev_outputs(tmp_path / "tuned" / "rte" / "dev.safetensors")
    assert not torch.allclose(tuned, dev_outputs(multi / "predictions" / "rte.dev.safetensors"), atol=1e-3)
    log = [json.loads(line) for line in (tmp_path / "tuned" / "rte" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 10  # the teacher settings: 40 rows x 2 epochs / batch 8, RTE alone


def test_a_run_without_a_head_for_the_task_or_a_model_is_one_line(multi, tmp_path):
    result = bam("finetune", multi, "--tasks", "cola", "--data-dir", GLUE_FIXTURE, "--out", tmp_path / "x")
    assert result.exit_code == 2 and "'cola' is not one of this recipe's tasks" in result.stderr
    result = bam("finetune", tmp_path, "--data-dir", GLUE_FIXTURE)
    assert result.exit_code == 2 and "not a run directory (no config.json)" in result.stderr


def test_the_starting_weights_key_the_checkpoints(multi, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(multi / "model", copy)
    assert weights_fingerprint(copy) == weights_fingerprint(multi / "model")
    heads = load_file(copy / "heads.safetensors")
    save_file({name: tensor + 1 if name.endswith("bias") else tensor for name, tensor in heads.items()}, copy / "heads.safetensors")
    assert weights_fingerprint(copy) != weights_fingerprint(multi / "model")


def test_a_model_saved_before_heads_json_had_a_format_is_read_with_its_recipe(multi, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(multi / "model", old)
    # The layout and weight names bam wrote before heads.json was versioned: bare linear layers.
    (old / "heads.json").write_text(json.dumps({"pooling": "first", "heads": {"rte": 2, "stsb": 1}}))
    save_file({name.replace(".linear.", "."): tensor for name, tensor in load_file(old / "heads.safetensors").items()}, old / "heads.safetensors")
    recipe = run_recipe(multi)
    current, legacy = MultiTaskModel.load(multi / "model").eval(), MultiTaskModel.load(old, legacy_recipe=recipe).eval()
    inputs = {"input_ids": torch.tensor([[2, 5, 6, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    for task in ("rte", "stsb"):
        assert torch.equal(current(task, inputs), legacy(task, inputs))
    with pytest.raises(BamError, match=r"format None is not 'bam-model/1'"):
        MultiTaskModel.load(old)  # without its recipe it is refused, never guessed
    (old / "heads.json").write_text(json.dumps({"pooling": "first", "heads": {"rte": 3, "stsb": 1}}))
    with pytest.raises(BamError, match=r"an older model's head 'rte' \(3 outputs, linear\) does not match the recipe's task"):
        MultiTaskModel.load(old, legacy_recipe=recipe)


def test_the_mtdnn_condition_fine_tunes_each_seeds_multi_model(tmp_path, tiny_model):
    from bam.sweep import Run, plan, run_sweep

    assert plan(["rte", "stsb"], [0], ["mtdnn"]) == [Run("multi", 0), Run("mtdnn", 0, "rte"), Run("mtdnn", 0, "stsb")]
    recipe = write_recipe(tmp_path, tiny_model)
    table = run_sweep(recipe, out=tmp_path / "sweep", seeds=[0], conditions=["mtdnn"], data_dir=GLUE_FIXTURE, overrides=['tasks=["rte","stsb"]'])
    assert table.groupby("condition").size().to_dict() == {"multi": 3, "mtdnn": 3}  # two tasks and the average each
    manifest = json.loads((tmp_path / "sweep" / "seed0" / "mtdnn" / "rte" / "manifest.json").read_text())
    assert manifest["recipe"]["model"] == str(tmp_path / "sweep" / "seed0" / "multi" / "model" / "encoder")
    assert set(resolve(load_recipe(recipe))[0].spec.metrics) <= set(table.columns)


def test_a_recipe_whose_task_differs_from_the_models_is_refused(multi, tmp_path):
    result = bam("finetune", multi, "--tasks", "rte", "--data-dir", GLUE_FIXTURE, "--out", tmp_path / "x", "--set", 'custom_tasks.rte.labels=["not_entailment","entailment"]')
    assert result.exit_code == 2 and "task 'rte' has another labels in the recipe than in the model" in result.stderr
    result = bam("finetune", multi, "--tasks", "rte", "--data-dir", GLUE_FIXTURE, "--out", tmp_path / "x", "--set", 'pooling="mean"')
    assert result.exit_code == 2 and "the model pools with 'first', the recipe with 'mean'" in result.stderr


def test_bam_load_reads_an_older_run_directory_through_its_recorded_recipe(multi, tmp_path):
    import shutil

    import bam

    old = tmp_path / "old-run"
    shutil.copytree(multi, old)
    (old / "model" / "heads.json").write_text(json.dumps({"pooling": "first", "heads": {"rte": 2, "stsb": 1}}))
    renamed = {name.replace(".linear.", "."): tensor for name, tensor in load_file(old / "model" / "heads.safetensors").items()}
    save_file(renamed, old / "model" / "heads.safetensors")
    pairs = [("the cat sleeps", "the cat sleeps in the house"), ("a dog runs", "the owl hides")]
    assert torch.equal(bam.load(old).outputs(pairs, "rte"), bam.load(multi).outputs(pairs, "rte"))
    (old / "config.json").unlink()  # without the recipe it was trained with, it is refused, never guessed
    with pytest.raises(BamError, match=r"format None is not 'bam-model/1'"):
        bam.load(old)
