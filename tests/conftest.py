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
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), WORDS)


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def save_tiny_bert(folder: Path, tokens) -> Path:
    """A 2-layer, 32-wide BERT with random weights whose vocabulary is BERT's special tokens and `tokens`, saved to `folder`."""
    vocabulary = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *tokens])}
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


# A Chinese tiny encoder and invented data in the CLUE/Tianchi release formats (recipes/clue-tianchi.toml).
# Every sentence is made up here from a few characters; the character vocabulary is built from the same list.
CHINESE_CHARACTERS = "我你他她们猫狗鸟鱼马在家里河边山上今天明天很真好坏高兴难过生气害怕喜欢惊讶讨厌球赛股票电影游戏汽车学校新闻说看跑睡吃喝"


def chinese_sentence(generator, length: int) -> str:
    return "".join(generator.choice(list(CHINESE_CHARACTERS), size=length))


@pytest.fixture(scope="session")
def tiny_chinese_model(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and a character vocabulary (BERT splits Chinese text into characters)."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-chinese-bert"), [*dict.fromkeys(CHINESE_CHARACTERS), '"', "？", "，"])


OCEMOTION_LABELS = ["sadness", "happiness", "disgust", "anger", "like", "surprise", "fear"]
TNEWS_LABELS = ["100", "101", "102", "103", "104", "106", "107", "108", "109", "110", "112", "113", "114", "115", "116"]
OCNLI_LABELS = ["entailment", "neutral", "contradiction"]


@pytest.fixture(scope="session")
def clue_data(tmp_path_factory) -> Path:
    """The three tasks' files exactly as released: OCNLI JSON lines with '-' rows, Tianchi's headerless TSV with CRLF lines and '"'."""
    import json

    import numpy as np

    folder = tmp_path_factory.mktemp("clue")
    generator = np.random.default_rng(0)
    (folder / "OCNLI").mkdir()
    for name, rows, unlabelled in (("train.50k.json", 60, 3), ("dev.json", 18, 2), ("test.json", 6, 0)):
        records = []
        for row in range(rows + unlabelled):
            label = "-" if row % 9 == 4 and unlabelled else OCNLI_LABELS[row % 3]
            unlabelled -= label == "-"
            record = {"level": "easy", "sentence1": chinese_sentence(generator, 12), "sentence2": chinese_sentence(generator, 6), "label": label,
                      "label0": label, "label1": label, "label2": label, "label3": label, "label4": label, "genre": "news", "prem_id": f"news_{row}", "id": row}  # fmt: skip
            if name == "test.json":
                record = {key: value for key, value in record.items() if not key.startswith("label")}
            records.append(json.dumps(record, ensure_ascii=False))
        (folder / "OCNLI" / name).write_text("\n".join(records) + "\n", encoding="utf-8")
    for task, labels, per_label in (("OCEMOTION", OCEMOTION_LABELS, 12), ("TNEWS", TNEWS_LABELS, 10)):
        (folder / task).mkdir()
        lines = []
        for row in range(len(labels) * per_label):
            text = chinese_sentence(generator, 10)
            if row % 7 == 3:
                text = f'他说"{text}'  # a lone quote: the files have no quoting
            lines.append(f"{row}\t{text}\t{labels[row % len(labels)]}" + ("\r\n" if row % 2 else "\n"))
        (folder / task / f"{task}_train1128.csv").write_bytes("".join(lines).encode())
        test_lines = [f"{row}\t{chinese_sentence(generator, 10)}\r\n" for row in range(5)]
        (folder / task / f"{task}_a.csv").write_bytes("".join(test_lines).encode())
    return folder
