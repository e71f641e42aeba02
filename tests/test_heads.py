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


# The SAN answer module (MT-DNN), against the reference's hand-computed cases (shared/reference §1.3.4).

from bam.heads import SANHead, average_steps  # noqa: E402
from bam.task_types import Batch, task_type  # noqa: E402
from bam.training import segment_ids  # noqa: E402


def step_log(*rows):
    return torch.tensor([rows], dtype=torch.float64).log()


def test_inference_averages_every_steps_distribution():
    # (a) K = 2, P^0 = (0.8, 0.2), P^1 = (0.6, 0.4): P = (0.7, 0.3), class 0
    answer = average_steps(step_log((0.8, 0.2), (0.6, 0.4)), torch.tensor([[True, True]])).exp()
    assert answer.tolist()[0] == pytest.approx([0.7, 0.3]) and answer.argmax().item() == 0


def test_training_averages_the_kept_steps_and_the_loss_is_their_cross_entropy():
    # (b) K = 5, kept {0, 3}, P^0 = (0.9, 0.1), P^3 = (0.5, 0.5), gold 0: P_train = (0.7, 0.3), loss = -ln 0.7 = 0.3567
    steps = step_log((0.9, 0.1), (0.2, 0.8), (0.3, 0.7), (0.5, 0.5), (0.01, 0.99))
    outputs = average_steps(steps, torch.tensor([[True, False, False, True, False]]))
    assert outputs.exp().tolist()[0] == pytest.approx([0.7, 0.3])
    classification = task_type("classification", "rte")
    spec = __import__("bam.config", fromlist=["TaskSpec"]).TaskSpec(labels=("yes", "no"))
    batch = Batch(torch.tensor([0]))
    loss = classification.loss(outputs, classification.gold_targets(batch, spec), batch, spec)
    assert loss.item() == pytest.approx(0.3567, abs=1e-4)


def san(steps=2, average=True, prediction_dropout=0.0):
    torch.manual_seed(0)
    head = SANHead(8, 2, steps=steps, prediction_dropout=prediction_dropout, dropout=0.0, average=average)
    head.initialise(0.5)
    return head


def pair_inputs(batch=3):
    torch.manual_seed(1)
    ids = torch.tensor([[2, 7, 7, 3, 8, 3, 0]] * batch)  # [CLS] premise [SEP] hypothesis [SEP] [PAD]
    return torch.randn(batch, 7, 8), {"attention_mask": (ids != 0).long(), "segment_ids": segment_ids(ids, 3)}


def test_segments_come_from_the_separator_tokens():
    assert segment_ids(torch.tensor([[2, 7, 7, 3, 8, 3, 0]]), 3).tolist() == [[0, 0, 0, 0, 1, 1, 1]]


def test_last_step_only_answers_with_the_last_steps_distribution():
    # (c) answer from P^{K-1} alone
    hidden, inputs = pair_inputs()
    head = san(average=False).eval()
    steps = head.step_log_probabilities(hidden, inputs)
    assert torch.allclose(head(hidden, inputs), steps[:, -1], atol=1e-6)
    assert torch.allclose(san().eval()(hidden, inputs).exp(), steps.exp().mean(dim=1), atol=1e-6)


def test_each_step_is_scored_with_the_state_before_its_gru_update():
    hidden, inputs = pair_inputs(batch=1)
    head = san().eval()
    real = inputs["attention_mask"].bool()
    premise, hypothesis = real & (inputs["segment_ids"] == 0), real & (inputs["segment_ids"] == 1)
    with torch.no_grad():
        alpha = torch.softmax(head.hypothesis_attention(hidden).squeeze(-1).masked_fill(~hypothesis, -torch.inf), dim=-1)
        state = alpha @ hidden[0]  # s^0: the hypothesis summary
        beta = torch.softmax((hidden[0] @ head.premise_attention(state)[0]).masked_fill(~premise[0], -torch.inf), dim=-1)
        read = (beta @ hidden[0]).unsqueeze(0)
        expected = torch.log_softmax(head.classifier(torch.cat([read, state, (read - state).abs(), read * state], dim=-1)), dim=-1)
        assert torch.allclose(head.step_log_probabilities(hidden, inputs)[:, 0], expected, atol=1e-6)


def test_training_keeps_at_least_one_step_per_example_and_averages_a_subset():
    hidden, inputs = pair_inputs(batch=64)
    head = san(steps=3, prediction_dropout=0.9).train()
    steps = head.step_log_probabilities(hidden, inputs).exp()
    torch.manual_seed(5)
    answers = head(hidden, inputs).exp()
    subsets = [[index for index in range(3) if mask >> index & 1] for mask in range(1, 8)]
    for row in range(64):
        assert any(torch.allclose(answers[row], steps[row, subset].mean(dim=0), atol=1e-6) for subset in subsets)
    assert not torch.allclose(answers, steps.mean(dim=1), atol=1e-4)  # with p = 0.9 some rows drop steps


def test_san_options_and_single_sentences_are_checked():
    from bam.config import LocalFiles, Recipe, TaskSpec
    from bam.tasks import resolve

    kind = head_kind("san", "rte")
    with pytest.raises(BamError, match=r"unknown san head option 'step' \(did you mean \"steps\"\?\)"):
        kind.check_options("rte", {"step": 3})
    with pytest.raises(BamError, match=r"prediction_dropout = 1.0 must be in \[0, 1\)"):
        kind.check_options("rte", {"prediction_dropout": 1.0})
    with pytest.raises(BamError, match=r"steps = 0 must be at least 1"):
        kind.check_options("rte", {"steps": 0})
    single = TaskSpec(labels=("a", "b"), head="san", local=LocalFiles(text_columns=("text",)))
    with pytest.raises(BamError, match=r"task 'x': the san head reads sentence pairs, and the task has one text column"):
        resolve(Recipe(model="m", tasks=("x",), custom_tasks={"x": single}))
    similarity = TaskSpec(type="regression", metrics=("pearson",), head="san", local=LocalFiles(text_columns=("a", "b")))
    with pytest.raises(BamError, match=r"task 'x': the san head answers with class probabilities, and a regression task has no classes"):
        resolve(Recipe(model="m", tasks=("x",), custom_tasks={"x": similarity}))


def test_a_student_with_a_san_head_trains_saves_loads_predicts_and_is_not_exported(tmp_path, tiny_model):
    import bam
    from bam.teacher_store import read_predictions
    from conftest import GLUE_FIXTURE, write_recipe
    from test_cli import bam as bam_command

    recipe = write_recipe(tmp_path, tiny_model, '[custom_tasks.rte]\nhead = "san"\nhead_options = { steps = 3 }\n')
    run = tmp_path / "run"
    result = bam_command("distill", recipe, "--anneal", "none", "--tasks", "rte,cola", "--data-dir", GLUE_FIXTURE, "--out", run, "--set", "precision='fp32'")
    assert result.exit_code == 0, result.output
    stored = read_predictions(run / "predictions" / "rte.dev.safetensors").outputs
    assert torch.allclose(stored.exp().sum(dim=-1), torch.ones(len(stored)), atol=1e-5)  # log-probabilities
    model = bam.load(run)
    lines = (GLUE_FIXTURE / "RTE" / "dev.tsv").read_text().splitlines()[1:]
    pairs = [tuple(line.split("\t")[1:3]) for line in lines]
    assert torch.allclose(model.outputs(pairs, "rte"), stored, atol=1e-5)
    result = bam_command("export", run, "--task", "rte", tmp_path / "rte")
    assert result.exit_code == 2 and "task 'rte' has a 'san' head, which no stock transformers class computes" in result.stderr
