"""Shared fixtures: a tiny random-weight 2-layer BERT, the invented GLUE-layout data, a recipe using both."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import BertConfig, BertModel, BertTokenizer

FIXTURES = Path(__file__).parent / "fixtures"
REPOSITORY = Path(__file__).parent.parent
GLUE_FIXTURE = FIXTURES / "glue"
SHARED_GLUE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"

WORDS = (
    "the a cat dog bird fox horse fish owl mouse sleeps runs sits waits plays hides in "
    "garden house river field barn forest"
).split()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and a word-level vocabulary, saved to disk."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    vocabulary = {token: index for index, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tokenizer = BertTokenizer(vocab=vocabulary)
    config = BertConfig(
        vocab_size=len(vocabulary), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_recipe(folder: Path, model: Path, body: str = "") -> Path:
    """A recipe for the tiny model on the fixture tasks, short enough for unit tests."""
    path = folder / "tiny.toml"
    path.write_text(
        f'model = "{model}"\n'
        'tasks = ["rte", "stsb", "cola"]\n'
        "max_length = 32\n"
        "eval_batch_size = 16\n"
        "[teacher]\nbatch_size = 8\nepochs = 2\nlearning_rate = 1e-3\n"
        "[student]\nbatch_size = 8\nepochs = 2\nlearning_rate = 1e-3\n" + body
    )
    return path


@pytest.fixture
def tiny_recipe(tmp_path, tiny_model) -> Path:
    return write_recipe(tmp_path, tiny_model)


@pytest.fixture(autouse=True)
def tokenization_cache(tmp_path_factory, monkeypatch):
    """Tests share one throwaway tokenization cache, never the user's ~/.cache/bam."""
    monkeypatch.setenv("BAM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "bam-cache"))
