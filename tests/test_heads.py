"""Heads: the sequence-classification head is its family's own (first token, initialisation, dropout), and refuses other families."""

import pytest
import torch
from transformers import BertConfig, DistilBertConfig, ElectraConfig

from bam.errors import BamError
from bam.heads import head_kind

KIND = head_kind("sequence-classification", "rte")


def build(config, pooling="first"):
    return KIND.build(config, 3, task_name="rte", pooling=pooling, options={})


def test_it_reads_the_first_token_whatever_the_recipes_pooling_says():
    config = BertConfig(hidden_size=8, num_attention_heads=2)
    torch.manual_seed(0)
    first = build(config, "first").eval()
    mean = build(config, "mean").eval()
    mean.load_state_dict(first.state_dict())
    hidden = torch.randn(4, 5, 8)
    inputs = {"attention_mask": torch.ones(4, 5, dtype=torch.long)}
    changed_later_tokens = torch.cat([hidden[:, :1], torch.randn(4, 4, 8)], dim=1)
    assert torch.equal(first(hidden, inputs), mean(hidden, inputs))
    assert torch.equal(first(hidden, inputs), first(changed_later_tokens, inputs))


def test_it_starts_as_the_family_starts_its_head():
    head = build(BertConfig(hidden_size=64, num_attention_heads=2))
    head.initialise(0.02)
    for layer in (head.dense, head.output):
        assert torch.count_nonzero(layer.bias) == 0
        assert 0.018 < layer.weight.std().item() < 0.022
    assert head.dropout.p == 0.1  # the encoder's hidden dropout, as BertForSequenceClassification without classifier_dropout
    assert build(BertConfig(classifier_dropout=0.3)).dropout.p == 0.3
    assert type(build(ElectraConfig(hidden_size=8, num_attention_heads=2)).activation).__name__ == "GELUActivation"


def test_a_family_without_a_known_classification_head_is_refused_at_build():
    with pytest.raises(BamError, match=r"task 'rte': the sequence-classification head has no layout for model type 'distilbert' \(it has: bert, roberta, xlm-roberta, electra\); use head = \"linear\""):
        build(DistilBertConfig())


def test_it_takes_no_options():
    with pytest.raises(BamError, match=r"task 'rte': the sequence-classification head takes no `head_options` \(got hidden\)"):
        KIND.check_options("rte", {"hidden": 7})
