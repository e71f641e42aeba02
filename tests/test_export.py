"""bam export: a task as a stock transformers classifier that answers as bam does, every task as a bam model, and the refusals."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertForSequenceClassification,
    BertTokenizer,
    ElectraConfig,
    RobertaConfig,
    XLMRobertaConfig,
    pipeline,
)

from bam.data import load_task, load_tokenized
from bam.errors import BamError
from bam.export import export_task
from bam.heads import SequenceClassificationHead
from bam.model import MultiTaskModel, load_encoder, load_tokenizer
from bam.tasks import Task, registry
from bam.training import predict

from conftest import GLUE_FIXTURE, write_recipe
from test_cli import assert_one_line_error, bam

MAXIMUM_DIFFERENCE = 1e-4  # the bar: exported outputs within this of bam's, in fp32


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model):
    """A student trained end to end on gold labels: RTE and STS-B with the family's own head, CoLA with the linear head."""
    folder = tmp_path_factory.mktemp("export")
    heads = '[custom_tasks.rte]\nhead = "sequence-classification"\n[custom_tasks.stsb]\nhead = "sequence-classification"\n'
    recipe = write_recipe(folder, tiny_model, heads)
    result = bam("distill", recipe, "--anneal", "none", "--data-dir", GLUE_FIXTURE, "--out", folder / "run")
    assert result.exit_code == 0, result.output
    return folder / "run"


def bam_outputs(model_folder, task_name: str) -> torch.Tensor:
    """What bam answers on the task's dev set, in fp32: the head's raw outputs, in dev order."""
    model = MultiTaskModel.load(model_folder)
    task = model.tasks[task_name]
    tokenizer = load_tokenizer(str(model_folder / "encoder"))
    dev = load_tokenized(task, GLUE_FIXTURE, tokenizer, model.max_length)[0].dev["dev"]
    return predict(model, task, dev, tokenizer, precision="fp32", batch_size=5)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """Each exportable task of the run through `bam export --task`."""
    folder = tmp_path_factory.mktemp("exported")
    for task in ("rte", "stsb"):
        result = bam("export", run, "--task", task, folder / task)
        assert result.exit_code == 0, result.output
    return folder


@pytest.mark.parametrize("task_name", ["rte", "stsb"])
def test_an_exported_task_answers_as_bam_does_through_the_model_and_the_pipeline(run, exported, task_name):
    task = MultiTaskModel.load(run / "model").tasks[task_name]
    raw = bam_outputs(run / "model", task_name)
    # What bam answers: logits and probabilities, or the regression value on the task's original (0-5) scale.
    answers = torch.softmax(raw, dim=-1) if task.output_size > 1 else task.type.predictions(raw, task.spec).unsqueeze(-1)
    expected_logits = raw if task.output_size > 1 else answers
    dev = load_task(task, GLUE_FIXTURE).dev["dev"]
    texts_a, texts_b = list(dev["text_a"]), list(dev["text_b"])
    pairs = [{"text": a, "text_pair": b} for a, b in zip(texts_a, texts_b)]

    folder = exported / task_name
    classifier = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.inference_mode():
        logits = classifier(**tokenizer(texts_a, texts_b, padding=True, truncation=True, return_tensors="pt")).logits
    model_difference = (logits - expected_logits).abs().max().item()

    scored = pipeline("text-classification", model=str(folder), top_k=None)(pairs)
    labels = [classifier.config.id2label[index] for index in range(task.output_size)]
    piped = torch.tensor([[{entry["label"]: entry["score"] for entry in row}[label] for label in labels] for row in scored])
    pipeline_difference = (piped - answers).abs().max().item()

    print(f"{task_name}: max abs difference, model {model_difference:.2g}, pipeline {pipeline_difference:.2g}")
    assert model_difference <= MAXIMUM_DIFFERENCE and pipeline_difference <= MAXIMUM_DIFFERENCE
    assert answers.std() > 0  # a trained head with distinct answers, so a swapped or dropped weight shows


@pytest.mark.parametrize("task_name", ["rte", "stsb"])
def test_bam_load_and_bam_predict_answer_from_an_exported_folder_as_from_the_run(run, exported, task_name):
    import bam as package

    dev = load_task(MultiTaskModel.load(run / "model").tasks[task_name], GLUE_FIXTURE).dev["dev"]
    pairs = list(zip(dev["text_a"], dev["text_b"]))
    from_run = package.load(run).outputs(pairs, task_name)
    from_export = package.load(exported / task_name)
    assert list(from_export.tasks) == [task_name]
    # The export folded the regression scale in; bam.load unfolds it, so raw outputs and answers agree.
    assert (from_export.outputs(pairs, task_name) - from_run).abs().max().item() <= MAXIMUM_DIFFERENCE
    result = bam("predict", exported / task_name, GLUE_FIXTURE / {"rte": "RTE", "stsb": "STS-B"}[task_name] / "dev.tsv", "--task", task_name)
    assert result.exit_code == 0, result.output
    assert f"{task_name} metrics on" in result.stderr


def test_an_exported_folder_is_plain_transformers_with_the_tasks_labels(run, exported):
    for task_name, labels, problem in [("rte", ["entailment", "not_entailment"], "single_label_classification"), ("stsb", ["stsb"], "regression")]:
        folder = exported / task_name
        config = json.loads((folder / "config.json").read_text())
        assert config["architectures"] == ["BertForSequenceClassification"] and config["problem_type"] == problem
        assert config["id2label"] == {str(index): label for index, label in enumerate(labels)}
        assert config["label2id"] == {label: index for index, label in enumerate(labels)}
        names = sorted(path.name for path in folder.iterdir())
        assert "model.safetensors" in names and not [name for name in names if name.endswith((".py", ".bin", ".pt", ".pkl", ".pth"))]
        assert AutoTokenizer.from_pretrained(folder).model_max_length == 32  # bam's max_length: truncation=True cuts where bam does
        described = json.loads((folder / "bam_task.json").read_text())
        assert described["format"] == "bam-exported-task/1" and described["task"] == task_name
        assert described["output_size"] == len(labels) and described["max_length"] == 32
        assert described["spec"]["head"] == "sequence-classification" and described["source"] == str((run / "model").resolve())


def test_export_all_writes_a_bam_model_that_predicts_exactly_as_its_source(run, tmp_path):
    result = bam("export", run, "--all", tmp_path / "all")
    assert result.exit_code == 0, result.output
    for task_name in ("rte", "stsb", "cola"):  # the linear head too: --all takes any head
        assert torch.equal(bam_outputs(tmp_path / "all", task_name), bam_outputs(run / "model", task_name))
    provenance = json.loads((tmp_path / "all" / "export.json").read_text())
    assert provenance["format"] == "bam-export/1" and provenance["tasks"] == ["rte", "stsb", "cola"]
    assert provenance["source"] == str((run / "model").resolve())
    assert type(AutoModel.from_pretrained(tmp_path / "all" / "encoder")).__name__ == "BertModel"  # the shared encoder, once


def test_a_head_no_stock_class_computes_is_refused_naming_the_head_to_train_with(run, tmp_path):
    result = bam("export", run, "--task", "cola", tmp_path / "cola")
    assert_one_line_error(result, "task 'cola' has a 'linear' head, which no stock transformers class computes")
    assert 'head = "sequence-classification"' in result.output and not (tmp_path / "cola").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (lambda run, tiny, out: (run, "--task", "rtee", out), "no task 'rtee' (did you mean \"rte\"?); its tasks: rte, stsb, cola"),
        (lambda run, tiny, out: (tiny, "--task", "rte", out), "not a bam model (no heads.json"),
        (lambda run, tiny, out: (run / "absent", "--all", out), "no such model folder"),
        (lambda run, tiny, out: (run, out), "give exactly one of --task NAME or --all"),
        (lambda run, tiny, out: (run, "--task", "rte", "--all", out), "give exactly one of --task NAME or --all"),
    ],
)
def test_bad_export_inputs_are_one_line_and_write_nothing(run, tiny_model, tmp_path, arguments, message):
    out = tmp_path / "out"
    assert_one_line_error(bam("export", *arguments(run, tiny_model, out)), message)
    assert not out.exists()


def test_an_out_folder_that_holds_files_is_refused_and_left_alone(run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert_one_line_error(bam("export", run, "--task", "rte", out), "exists and is not empty")
    assert [path.name for path in out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        # A head weight the stock model has no place for (or lacks): refused before anything is written.
        (lambda weights: {name.replace("pooler", "poolr"): tensor for name, tensor in weights.items()}, "no weight for 'bert.pooler.dense.bias'"),
        # Weights that load but compute something else: the probe catches it.
        (lambda weights: {name: tensor.T.contiguous() if name.endswith("dense.weight") else tensor for name, tensor in weights.items()}, "away from bam"),
    ],
)
def test_an_export_that_would_not_answer_as_bam_is_refused_and_writes_nothing(run, tmp_path, monkeypatch, broken, message):
    stock_weights = SequenceClassificationHead.stock_weights
    monkeypatch.setattr(SequenceClassificationHead, "stock_weights", lambda head, scale, shift: broken(stock_weights(head, scale, shift)))
    with pytest.raises(BamError, match=message):
        export_task(run, "rte", tmp_path / "rte")
    assert not (tmp_path / "rte").exists() and not (tmp_path / ".rte.partial").exists()


def test_an_export_whose_folder_loads_back_incomplete_is_refused_and_writes_nothing(run, tmp_path, monkeypatch):
    save_pretrained = BertForSequenceClassification.save_pretrained

    def without_classifier_bias(model, folder, **options):  # as if a weight were lost on the way to disk
        save_pretrained(model, folder, state_dict={name: tensor for name, tensor in model.state_dict().items() if name != "classifier.bias"}, **options)

    monkeypatch.setattr(BertForSequenceClassification, "save_pretrained", without_classifier_bias)
    with pytest.raises(BamError, match=r"rte: the exported folder loads back with missing keys \(classifier.bias; 1 in all\); nothing written"):
        export_task(run, "rte", tmp_path / "rte")
    assert not (tmp_path / "rte").exists() and not (tmp_path / ".rte.partial").exists()


FAMILIES = {
    "roberta": lambda size: RobertaConfig(**size, pad_token_id=0, type_vocab_size=2, max_position_embeddings=66),
    "xlm-roberta": lambda size: XLMRobertaConfig(**size, pad_token_id=0, type_vocab_size=2, max_position_embeddings=66),
    "electra": lambda size: ElectraConfig(**size, embedding_size=32, max_position_embeddings=64),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_layout_exports_exactly(tiny_model, tmp_path, family):
    """RoBERTa, XLM-R and ELECTRA keep their heads elsewhere than BERT, with dropout in other places (BERT: the run above)."""
    tokenizer = BertTokenizer.from_pretrained(tiny_model)
    size = {"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    AutoModel.from_config(FAMILIES[family](size)).save_pretrained(tmp_path / "encoder")
    tokenizer.save_pretrained(tmp_path / "encoder")
    tasks = [Task(name, dataclasses.replace(registry()[name], head="sequence-classification")) for name in ("rte", "stsb")]
    model = MultiTaskModel(load_encoder(str(tmp_path / "encoder")), tasks)
    with torch.no_grad():  # biases away from their zero start, so a misplaced bias shows
        for parameter in model.heads.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    model.save(tmp_path / "model", tokenizer, 32)
    model.eval()
    inputs = tokenizer(["the cat sleeps in the house", "a dog runs"], ["the bird", "the fox hides in the old forest"], padding=True, return_tensors="pt")
    for task in tasks:
        export_task(tmp_path / "model", task.name, tmp_path / task.name)
        classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / task.name).eval()
        outputs = task.type.stock_outputs(task.name, task.spec)
        with torch.inference_mode():
            expected = model(task.name, dict(inputs)) * outputs.scale + outputs.shift
            difference = (classifier(**inputs).logits - expected).abs().max().item()
        assert difference <= MAXIMUM_DIFFERENCE, (family, task.name, difference)
