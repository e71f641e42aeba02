"""The ranking task type (MT-DNN's pairwise ranking): its maths against the reference's hand values, groups kept
whole by every batching step, the data and store checks, and a ranking task end to end on the tiny encoder."""

import json
import math
import re

import numpy as np
import pytest
import torch

from bam.config import LocalFiles, TaskSpec, load_recipe
from bam.data import load_task, read_split
from bam.distillation import blend
from bam.errors import BamError
from bam.files import write_json
from bam.sampling import SAMPLERS
from bam.config import TrainConfig
from bam.task_types import TASK_TYPES, Batch, candidate_ranks, group_log_softmax, positive_ranks
from bam.tasks import Task, resolve
from bam.teacher_store import Predictions, read_manifest, read_predictions, write_predictions
from bam.training import Units, memory_passes, process_share

from conftest import write_recipe
from test_cli import bam

RANKING = TASK_TYPES["ranking"]
LOCAL = LocalFiles(folder="QA", text_columns=("question", "answer"), group_column="group")
SPEC = TaskSpec(type="ranking", labels=("wrong", "right"), metrics=("accuracy", "mrr"), local=LOCAL)


def ranking_batch(labels, groups, teacher=None) -> Batch:
    return Batch(torch.tensor(labels), None if teacher is None else torch.tensor(teacher).unsqueeze(-1), torch.tensor(groups))


# --- the maths, against ../shared/reference/mt-dnn-and-loss-weighting.md §1.4 ---------------------------------


def test_two_candidates_give_the_references_probabilities_and_loss():
    scores, batch = torch.tensor([[1.0], [2.0]]), ranking_batch([0, 1], [0, 0])
    probabilities = group_log_softmax(scores.squeeze(-1), batch.groups).exp()
    torch.testing.assert_close(probabilities, torch.tensor([0.2689, 0.7311]), atol=1e-4, rtol=0)
    assert RANKING.loss(scores, RANKING.gold_targets(batch, SPEC), batch, SPEC).item() == pytest.approx(0.3133, abs=1e-4)
    assert candidate_ranks(scores.squeeze(-1), batch.groups).tolist() == [2, 1]  # the prediction (0, 1): the second ranks first


def test_three_candidates_and_a_scale_of_two_give_the_references_values():
    batch = ranking_batch([0, 1, 0], [5, 5, 5])
    loss = RANKING.loss(torch.tensor([[0.5], [2.0], [1.0]]), RANKING.gold_targets(batch, SPEC), batch, SPEC)
    assert loss.item() == pytest.approx(-math.log(0.6285), abs=1e-4) and loss.item() == pytest.approx(0.4644, abs=1e-4)
    scaled = TaskSpec(**{**vars(SPEC), "ranking_scale": 2.0})
    pair = ranking_batch([0, 1], [0, 0])
    assert RANKING.loss(torch.tensor([[1.0], [2.0]]), RANKING.gold_targets(pair, scaled), pair, scaled).item() == pytest.approx(-math.log(0.8808), abs=1e-4)


def test_the_loss_is_the_mean_over_groups_and_never_mixes_them():
    # Groups 0 and 1 interleaved: each group's softmax must see only its own candidates.
    batch = ranking_batch([0, 0, 1, 1], [0, 1, 0, 1])
    scores = torch.tensor([[1.0], [0.5], [2.0], [0.5]])
    expected = (-math.log(math.exp(2) / (math.exp(1) + math.exp(2))) - math.log(0.5)) / 2
    assert RANKING.loss(scores, RANKING.gold_targets(batch, SPEC), batch, SPEC).item() == pytest.approx(expected, abs=1e-6)


def test_teacher_targets_are_the_teachers_softmax_over_each_group_and_blend_with_gold():
    batch = ranking_batch([0, 1, 1, 0, 0], [0, 0, 1, 1, 1], teacher=[1.0, 2.0, 0.0, 0.0, 0.0])
    teacher = RANKING.teacher_targets(batch, SPEC)
    torch.testing.assert_close(teacher, torch.tensor([0.2689, 0.7311, 1 / 3, 1 / 3, 1 / 3]), atol=1e-4, rtol=0)
    blended = blend(RANKING.gold_targets(batch, SPEC), teacher, 0.25)  # 0.25 gold, 0.75 teacher
    torch.testing.assert_close(blended, torch.tensor([0.75 * 0.2689, 0.25 + 0.75 * 0.7311, 0.25 + 0.25, 0.25, 0.25]), atol=1e-4, rtol=0)
    assert torch.allclose(torch.zeros(2).index_add(0, batch.groups, blended), torch.ones(2))  # still a distribution per group


def test_group_accuracy_and_mrr_by_hand():
    # group 0: positive scored highest (rank 1); group 1: positive second of three (rank 2); group 2: positive last of 2.
    labels, groups = torch.tensor([1, 0, 0, 1, 0, 0, 1]), torch.tensor([0, 0, 1, 1, 1, 2, 2])
    outputs = torch.tensor([[3.0], [1.0], [5.0], [4.0], [0.0], [2.0], [1.0]])
    assert positive_ranks(outputs.squeeze(-1), labels, groups).tolist() == [0, 1, 1]
    scores = Task("qa", SPEC).score(labels, outputs, groups)
    assert scores["accuracy"] == pytest.approx(100 / 3)
    assert scores["mrr"] == pytest.approx(100 * (1 + 1 / 2 + 1 / 2) / 3)


def test_a_tie_with_the_positive_is_not_a_right_ranking():
    assert positive_ranks(torch.tensor([1.0, 1.0]), torch.tensor([0, 1]), torch.tensor([0, 0])).tolist() == [1]


@pytest.mark.parametrize("seed", range(5))
def test_ranks_equal_a_count_over_each_group_with_ties_gaps_and_negative_scores(seed):
    generator = torch.Generator().manual_seed(seed)
    groups = torch.randint(0, 40, (300,), generator=generator) * 3  # numbers with gaps, rows of a group scattered
    scores = torch.randint(-3, 3, (300,), generator=generator).float() / 2  # many ties
    expected = [1 + int(((groups == groups[row]) & (scores > scores[row])).sum()) for row in range(300)]
    assert candidate_ranks(scores, groups).tolist() == expected
    labels = torch.zeros(300, dtype=torch.int64)
    for group in groups.unique():
        rows = (groups == group).nonzero().squeeze(-1)
        labels[rows[torch.randint(len(rows), (1,), generator=generator)]] = 1
    expected = [int(((groups == group) & (scores >= scores[(groups == group) & (labels == 1)])).sum()) - 1 for group in groups.unique()]
    assert positive_ranks(scores, labels, groups).tolist() == expected


def test_answers_give_each_candidates_score_and_rank_in_its_group():
    answers = RANKING.answers(torch.tensor([[0.1], [0.7], [0.3], [0.2]]), SPEC, torch.tensor([0, 0, 1, 1]))
    assert [(answer.rank, round(answer.score, 3)) for answer in answers] == [(2, 0.1), (1, 0.7), (1, 0.3), (2, 0.2)]
    with pytest.raises(BamError, match="group"):
        RANKING.answers(torch.tensor([[0.1]]), SPEC)


def test_an_ensemble_of_ranking_teachers_teaches_the_mean_of_their_group_distributions():
    groups = torch.tensor([0, 0, 1, 1, 1])
    a, b = torch.tensor([[1.0], [2.0], [0.0], [1.0], [3.0]]), torch.tensor([[0.5], [-1.0], [2.0], [2.0], [0.0]])
    scaled = TaskSpec(**{**vars(SPEC), "ranking_scale": 2.0})
    stored = RANKING.ensemble([a, b], scaled, groups)
    mean = (group_log_softmax(2 * a.squeeze(-1), groups).exp() + group_log_softmax(2 * b.squeeze(-1), groups).exp()) / 2
    torch.testing.assert_close(RANKING.teacher_targets(Batch(torch.zeros(5), stored, groups), scaled), mean)


def test_the_kpi_is_the_batchs_group_accuracy():
    batch = ranking_batch([1, 0, 0, 1], [0, 0, 1, 1])
    assert RANKING.kpi(torch.tensor([[2.0], [1.0], [2.0], [1.0]]), batch, SPEC) == pytest.approx(0.5)


# --- groups stay whole ----------------------------------------------------------------------------------------


class _Rows:
    """Just enough of a datasets.Dataset for `Units.of`."""

    def __init__(self, groups, lengths):
        self.columns = {"group": list(groups), "length": list(lengths)}
        self.column_names = list(self.columns)

    def __getitem__(self, name):
        return self.columns[name]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5])
@pytest.mark.parametrize("processes", [1, 2, 3])
@pytest.mark.parametrize("sampler", ["proportional", "epoch-shuffle", "all-tasks"])
def test_no_batch_process_share_or_memory_pass_splits_a_group(batch_size, processes, sampler):
    generator = np.random.default_rng(batch_size * 10 + processes)
    sizes = generator.integers(1, 5, size=23)  # groups of 1 to 4 candidates, their rows shuffled in the file
    groups = generator.permutation(np.repeat(np.arange(23), sizes))
    units = Units.of(_Rows(groups, generator.integers(3, 30, size=len(groups))))
    assert sorted(units.rows(np.arange(23)).tolist()) == list(range(len(groups)))  # every row in exactly one unit
    config = TrainConfig(batch_size=batch_size, epochs=2, step_sampler=sampler, length_group_batches=2)
    plan = SAMPLERS[sampler].plan({"qa": units.lengths, "other": np.arange(1, 8)}, config, seed=3)
    for step in plan:
        for task, indices in step.parts:
            if task != 0:
                continue
            for process in range(processes):
                share, _ = process_share(indices, process, processes)
                for part, _ in memory_passes(share, units.lengths, max_tokens=40, sizes=units.sizes):
                    rows = units.rows(part)
                    for group in set(groups[rows]):  # each group in the pass with all its rows
                        assert set(np.flatnonzero(groups == group)) <= set(rows.tolist())


def test_memory_passes_count_a_groups_rows():
    lengths, sizes = np.array([10, 10, 10, 10]), np.array([4, 4, 1, 1])
    assert len(memory_passes(np.arange(4), lengths, max_tokens=100, sizes=sizes)) == 1  # 10 rows x 10 tokens
    assert len(memory_passes(np.array([0, 1]), lengths, max_tokens=40, sizes=sizes)) == 2  # 8 rows x 10 tokens: one group per pass


# --- data and store -------------------------------------------------------------------------------------------

QUESTIONS = [("where does the cat sleep", "the cat sleeps in the house", "the dog runs in the field"),
             ("where does the fox hide", "the fox hides in the forest", "the owl sits in the barn"),
             ("where does the fish wait", "the fish waits in the river", "the horse plays in the garden"),
             ("where does the bird sit", "the bird sits in the garden", "the mouse hides in the house")]  # fmt: skip


def write_qa(folder, rows_per_file: int = 40, extra: str = "") -> None:
    """Invented questions, each with its right answer and one or two wrong ones, rows of a group not adjacent."""
    (folder / "QA").mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(0)
    for name, count in (("train.tsv", rows_per_file), ("dev.tsv", rows_per_file // 2)):
        rows = []
        for group in range(count // 2):
            question, right, wrong = QUESTIONS[int(generator.integers(len(QUESTIONS)))]
            rows += [(f"g{group}", question, right, "right"), (f"g{group}", question, wrong, "wrong")]
        order = generator.permutation(len(rows))
        lines = ["group\tquestion\tanswer\tlabel", *("\t".join(rows[index]) for index in order)]
        (folder / "QA" / name).write_text("\n".join(lines) + "\n" + extra)


def qa_task(**local) -> Task:
    return Task("qa", TaskSpec(**{**vars(SPEC), "local": LocalFiles(**{**vars(LOCAL), **local})}))


def test_groups_of_a_single_candidate_are_counted_aloud(tmp_path, caplog):
    write_qa(tmp_path)
    path = tmp_path / "QA" / "train.tsv"
    with caplog.at_level("INFO"):
        read_split(path, qa_task().spec)
    assert "single candidate" not in caplog.text
    path.write_text(path.read_text() + "g98\twhere\there\tright\n" + "g99\twho\tme\tright\n")
    with caplog.at_level("INFO"):
        dataset = read_split(path, qa_task().spec)
    assert len(dataset) == 42 and "train.tsv: 2 of 22 group(s) have a single candidate, which is always ranked first" in caplog.text


def test_groups_are_numbered_in_order_of_first_appearance_and_fingerprinted(tmp_path):
    write_qa(tmp_path)
    dataset = read_split(tmp_path / "QA" / "train.tsv", qa_task().spec)
    groups = dataset["group"][:]
    assert groups[0] == 0 and max(groups) == 19 and sorted(set(groups)) == list(range(20))
    assert [groups.index(number) for number in range(20)] == sorted(groups.index(number) for number in range(20))


@pytest.mark.parametrize("wrong_line, positives", [("g0\twhere does the cat sleep\tthe cat sleeps\tright\n", 2), (None, 0)])
def test_a_group_without_exactly_one_positive_is_refused_naming_its_row_or_dropped_and_counted(tmp_path, caplog, wrong_line, positives):
    write_qa(tmp_path)
    path = tmp_path / "QA" / "train.tsv"
    if wrong_line:
        path.write_text(path.read_text() + wrong_line)
    else:
        path.write_text(path.read_text() + "g99\twhere\tnowhere\twrong\n")
    with pytest.raises(BamError, match=rf"train.tsv:\d+: the group starting here has {positives} positive candidates \('right'\); a ranking group needs exactly one"):
        read_split(path, qa_task().spec)
    with caplog.at_level("INFO"):
        dataset = read_split(path, qa_task(invalid_groups="drop").spec)
    assert len(dataset) == 40 - 2 * (positives == 2) and "left out 1 of 2" in caplog.text
    assert sorted(set(dataset["group"][:])) == list(range(len(dataset) // 2))  # numbered again without a gap


@pytest.mark.parametrize(
    "change, message",
    [
        ({"local": LocalFiles(**{**vars(LOCAL), "group_column": ""})}, "a ranking task needs `local.group_column`"),
        ({"labels": ("a", "b", "c")}, "a ranking task has two `labels`"),
        ({"ranking_scale": 0.0}, "`ranking_scale` must be a number above 0 and at most 1000, got 0.0"),
        ({"ranking_scale": 1e300}, "`ranking_scale` must be a number above 0 and at most 1000, got 1e\\+300"),
        ({"metrics": ("f1",)}, "metric 'f1' does not fit a ranking task"),
        ({"head": "san", "head_options": {}}, "the san head answers with class probabilities"),
        ({"local": LocalFiles(**{**vars(LOCAL), "dev_fraction": 0.2, "dev": {"dev": "dev.tsv"}})}, "cannot hold out part of a task with groups"),
        ({"type": "classification", "metrics": ("accuracy",)}, "`local.group_column` is a ranking task's setting (its groups of candidates); a classification task has no groups"),
        ({"type": "regression", "metrics": ("pearson",), "local": LocalFiles(**{**vars(LOCAL), "group_column": ""}), "ranking_scale": 2.0}, "`ranking_scale` is a ranking task's setting"),
        ({"type": "classification", "metrics": ("accuracy",), "local": LocalFiles(**{**vars(LOCAL), "group_column": "", "invalid_groups": "drop"})}, "`local.invalid_groups` is a ranking task's setting"),
        ({"local": LocalFiles(**{**vars(LOCAL), "group_column": 0})}, "`local.group_column` gives position 0 while `local.header` is true"),
    ],
)
def test_specs_a_ranking_task_cannot_train_are_refused_in_one_line(tmp_path, tiny_model, change, message):
    from bam.tasks import check_spec

    with pytest.raises(BamError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_spec("qa", TaskSpec(**{**vars(SPEC), **change}))


def test_a_missing_group_column_is_named(tmp_path):
    write_qa(tmp_path)
    with pytest.raises(BamError, match="'topic'"):
        read_split(tmp_path / "QA" / "train.tsv", qa_task(group_column="topic").spec)


def test_store_files_keep_groups_and_version_one_stores_are_still_read(tmp_path):
    predictions = Predictions(torch.tensor([4, 5, 6]), torch.tensor([[0.1], [0.2], [0.3]]), torch.tensor([1, 0, 1]), torch.tensor([0, 0, 1]))
    write_predictions(tmp_path / "train.safetensors", predictions)
    assert read_predictions(tmp_path / "train.safetensors").groups.tolist() == [0, 0, 1]
    write_predictions(tmp_path / "plain.safetensors", Predictions(torch.tensor([4]), torch.tensor([[0.1, 0.2]]), torch.tensor([1])))
    assert read_predictions(tmp_path / "plain.safetensors").groups is None
    (tmp_path / "store" / "qa").mkdir(parents=True)
    manifest = {"format": "bam-teacher-store/1", "type": "classification", "labels": ["a", "b"], "train_fingerprint": "x", "files": {"train": {"path": "train.safetensors", "sha256": "0"}}}
    write_json(tmp_path / "store" / "qa" / "manifest.json", manifest)
    assert read_manifest(tmp_path / "store", "qa")["format"] == "bam-teacher-store/1"
    write_json(tmp_path / "store" / "qa" / "manifest.json", {**manifest, "format": "bam-teacher-store/3"})
    with pytest.raises(BamError, match="format 'bam-teacher-store/3' is not 'bam-teacher-store/1' or 'bam-teacher-store/2'"):
        read_manifest(tmp_path / "store", "qa")


# --- end to end -------------------------------------------------------------------------------------------------

RECIPE_TASK = """
[custom_tasks.qa]
type = "ranking"
labels = ["wrong", "right"]
metrics = ["accuracy", "mrr"]
[custom_tasks.qa.local]
folder = "QA"
text_columns = ["question", "answer"]
group_column = "group"
"""


def test_a_ranking_task_trains_teaches_a_student_and_predicts_ranks(tmp_path, tiny_model):
    from conftest import GLUE_FIXTURE
    import shutil

    data = tmp_path / "data"
    shutil.copytree(GLUE_FIXTURE / "RTE", data / "RTE")
    write_qa(data)
    recipe = write_recipe(tmp_path, tiny_model, RECIPE_TASK)
    recipe.write_text(recipe.read_text().replace('tasks = ["rte", "stsb", "cola"]', 'tasks = ["qa", "rte"]'))
    store, run = tmp_path / "teachers", tmp_path / "student"
    result = bam("train-teachers", recipe, "--data-dir", data, "--out", store)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(store, "qa")
    assert manifest["format"] == "bam-teacher-store/2" and set(manifest["files"]) == {"train", "dev"}
    stored = read_predictions(store / "qa" / "train.safetensors")
    train = load_task(resolve(load_recipe(recipe), "qa")[0], data).train
    assert stored.groups.tolist() == train["group"][:]
    dev_metrics = manifest["dev_metrics"]
    assert set(dev_metrics) == {"accuracy", "mrr", "score"} and 50 <= dev_metrics["mrr"] <= 100

    result = bam("distill", recipe, "--data-dir", data, "--teachers", store, "--out", run, "--anneal", "linear")
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())["tasks"]["qa"]
    assert set(metrics) == {"accuracy", "mrr", "score"}

    out = tmp_path / "answers.jsonl"
    result = bam("predict", run, data / "QA" / "dev.tsv", "--task", "qa", "--out", out)
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(answers) == 20 and sorted({answer["rank"] for answer in answers}) == [1, 2]
    dev_groups = [line.split("\t")[0] for line in (data / "QA" / "dev.tsv").read_text().splitlines()[1:]]
    assert [answer["group"] for answer in answers] == dev_groups  # each rank beside the group it ranks in
    for group in set(dev_groups):
        assert sorted(answer["rank"] for answer in answers if answer["group"] == group) == [1, 2]
    result = bam("predict", run, data / "QA" / "dev.tsv", "--task", "qa", "--out", tmp_path / "answers.csv")
    assert result.exit_code == 0 and (tmp_path / "answers.csv").read_text().splitlines()[0].startswith("id,group,score,rank"), result.output
    assert f"accuracy {metrics['accuracy']:.2f}" in result.output  # the same model on the same dev file scores the same

    import bam as api

    model = api.load(run)
    pairs = [(question, answer) for question, right, wrong in QUESTIONS[:2] for answer in (right, wrong)]
    answers = model.predict(pairs, task="qa", groups=["q1", "q1", "q2", "q2"])
    assert [answer.rank for answer in answers[:2]] in ([1, 2], [2, 1]) and sorted(answer.rank for answer in answers[2:]) == [1, 2]
    with pytest.raises(BamError, match="groups: 3 given for 4 texts"):
        model.predict(pairs, task="qa", groups=["q1", "q1", "q2"])
    for groups, message in [
        ("q1q2", "groups must be a list with one group per text, not a str"),  # not four groups of one character
        (iter(["q1"] * 4), "groups must be a list with one group per text, not a list_iterator"),
        (["q1", None, "q2", "q2"], "group 1: expected a non-empty string or an integer, got None"),
        (["q1", " ", "q2", "q2"], "group 1: expected a non-empty string or an integer, got ' '"),
        (None, "task 'qa' ranks the candidates of each group: give groups=, one group per text"),
    ]:
        with pytest.raises(BamError, match=re.escape(message)):
            model.predict(pairs, task="qa", groups=groups)
    with pytest.raises(BamError, match="groups: task 'rte' is a classification task, which has no groups"):
        model.predict(pairs, task="rte", groups=["q1", "q1", "q2", "q2"])
    assert [answer.rank for answer in model.predict(pairs, task="qa", groups=[1, "1", 2, 2])[:2]] == [1, 1]  # 1 and "1": two groups

    # A labelled file with a group of two right answers: refused, naming the group and its row, and no answers written.
    lines = (data / "QA" / "dev.tsv").read_text().splitlines()
    first = next(line for line in lines[1:] if line.endswith("\twrong"))
    (tmp_path / "two-right.tsv").write_text("\n".join([lines[0], *(line.replace("\twrong", "\tright") if line == first else line for line in lines[1:])]) + "\n")
    result = bam("predict", run, tmp_path / "two-right.tsv", "--task", "qa", "--out", tmp_path / "refused.jsonl")
    group = first.split("\t")[0]
    starts = next(number for number, line in enumerate(lines[1:], start=2) if line.split("\t")[0] == group)
    assert result.exit_code == 2 and f"two-right.tsv:{starts}: the group starting here has 2 positive candidates ('right')" in result.output, result.output
    assert not (tmp_path / "refused.jsonl").exists()
    result = bam("predict", run, data / "RTE" / "dev.tsv", "--task", "rte", "--group-column", "label")
    assert result.exit_code == 2 and "--group-column: task 'rte' is a classification task, which has no groups" in result.output


def test_the_mt_dnn_mini_recipe_runs_both_stages_on_the_tiny_encoder(tmp_path, tiny_model):
    """recipes/mt-dnn-mini.toml as written (SAN heads, ranking, epoch-shuffle), on invented data in its six folders."""
    import shutil

    from conftest import GLUE_FIXTURE, REPOSITORY

    data = tmp_path / "data"
    shutil.copytree(GLUE_FIXTURE, data)
    (data / "MNLI-dev").mkdir()
    rte = (GLUE_FIXTURE / "RTE" / "train.tsv").read_text().splitlines()[1:]
    for name in ("train.tsv", "dev.tsv"):  # RTE's invented pairs, relabelled in three ways
        rows = [line.split("\t") for line in rte]
        labels = ["entailment", "neutral", "contradiction"]
        lines = ["index\tsentence1\tsentence2\tlabel", *(f"{row[0]}\t{row[1]}\t{row[2]}\t{labels[int(row[0]) % 3]}" for row in rows)]
        (data / "MNLI-dev" / name).write_text("\n".join(lines) + "\n")
    write_qa(data)
    (data / "QA").rename(data / "QNLI-v1-ranking")
    for name in ("train.tsv", "dev.tsv"):
        path = data / "QNLI-v1-ranking" / name
        path.write_text(path.read_text().replace("\tanswer\t", "\tsentence\t", 1).replace("\tright", "\tentailment").replace("\twrong", "\tnot_entailment"))
    small = ["--set", f"model={json.dumps(str(tiny_model))}", "--set", "max_length=32", "--set", "student.epochs=1", "--set", "teacher.epochs=1"]
    stage1, stage2 = tmp_path / "mt-dnn", tmp_path / "mt-dnn-finetuned"
    result = bam("distill", REPOSITORY / "recipes" / "mt-dnn-mini.toml", "--data-dir", data, "--out", stage1, *small)
    assert result.exit_code == 0, result.output
    config = json.loads((stage1 / "config.json").read_text())
    assert config["student"]["step_sampler"] == "epoch-shuffle" and config["student"]["anneal"] == "none"
    assert config["custom_tasks"]["mnli-dev"]["head"] == "san" and config["custom_tasks"]["qnli_v1_ranking"]["type"] == "ranking"
    assert set(json.loads((stage1 / "metrics.json").read_text())["tasks"]) == {"rte", "mrpc", "stsb", "cola", "mnli-dev", "qnli_v1_ranking"}
    result = bam("finetune", stage1, "--tasks", "rte,qnli_v1_ranking", "--data-dir", data, "--out", stage2, *small[-2:])
    assert result.exit_code == 0, result.output
    assert {"rte", "qnli_v1_ranking"} <= {path.name for path in stage2.iterdir()}


def test_adaptation_subsets_of_a_ranking_task_hold_whole_groups_numbered_again(tmp_path):
    from bam.adapt import training_subset

    write_qa(tmp_path)
    train = read_split(tmp_path / "QA" / "train.tsv", qa_task().spec)
    for fraction, draw in ((0.1, 0), (0.5, 3), (1.0, 1)):
        subset = training_subset(train, fraction, draw)
        groups = subset["group"][:]
        assert sorted(set(groups)) == list(range(max(groups) + 1)) and len(set(groups)) == max(1, math.ceil(fraction * 20))
        assert all(groups.count(group) == 2 for group in set(groups)) and sum(subset["label"][:]) == len(set(groups))
        Units.of(subset.add_column("length", [5] * len(subset)))  # no gap: every number is a unit with rows


def test_units_refuse_group_numbers_with_a_gap():
    with pytest.raises(BamError, match="group numbers must run 0, 1, ... without gaps \\(1 has no rows\\)"):
        Units.of(_Rows([0, 0, 2, 2], [3, 3, 3, 3]))


@pytest.mark.parametrize("invalid_groups", ["refuse", "drop"])
def test_predict_scores_a_file_as_the_task_scores_its_dev_set(tmp_path, caplog, invalid_groups):
    """`bam predict` answers every row and scores the groups the task's own dev set would: a group with two
    positives is refused in one line naming its first row, or (invalid_groups = "drop") answered, not scored, and counted."""
    from bam.predict import choose_columns, read_rows

    write_qa(tmp_path, extra="g7b\twhere\tthe first\tright\ng7b\twhere\tthe second\tright\n")
    path, task = tmp_path / "QA" / "dev.tsv", qa_task(invalid_groups=invalid_groups)
    if invalid_groups == "refuse":
        with pytest.raises(BamError, match=r"dev.tsv:22: the group starting here has 2 positive candidates"):
            read_rows(path, task, choose_columns(task, (), None, None))
        return
    with caplog.at_level("INFO"):
        rows = read_rows(path, task, choose_columns(task, (), None, None))
    assert len(rows.ids) == 22 and rows.scored == list(range(20)) and rows.labels.tolist().count(1) == 10
    assert "left out 1 of 11 group(s) (2 rows)" in caplog.text


def test_scoring_a_group_without_exactly_one_positive_is_one_line():
    with pytest.raises(BamError, match="group 1 .* has 2 positive candidates"):
        Task("qa", SPEC).score(torch.tensor([1, 0, 1, 1]), torch.zeros(4, 1), torch.tensor([0, 0, 1, 1]))


def test_an_empty_group_value_is_refused_naming_the_row(tmp_path):
    write_qa(tmp_path)
    path = tmp_path / "QA" / "train.tsv"
    lines = path.read_text().splitlines()
    lines[3] = "\t" + lines[3].split("\t", 1)[1]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BamError, match=r"train.tsv:4: the group column 'group' is empty"):
        read_split(path, qa_task().spec)


def test_plot_training_refuses_a_log_whose_values_are_not_numbers(tmp_path):
    from bam.train_log import plot_training, read_train_log, write_train_log

    records = [{"step": step, "tasks": {"qa": {"loss": 0.5, "gold_weight": 0.0, "loss_weight": 1.0}}} for step in range(1, 30)]
    records[10]["tasks"]["qa"]["loss"] = "x"
    write_train_log(tmp_path / "train_log.jsonl", records)
    with pytest.raises(BamError, match=r"train_log.jsonl:12: task 'qa''s loss is 'x', not a finite number"):
        read_train_log(tmp_path / "train_log.jsonl")
    with pytest.raises(BamError, match="records no step of any task"):
        plot_training([{"step": 1, "tasks": {}}], tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


def test_an_ensemble_of_ranking_stores_without_groups_is_refused(tmp_path):
    from safetensors.torch import save_file

    from bam.ensemble import ensemble_teachers
    from bam.teacher_store import write_teacher

    task = qa_task()
    for seed in (0, 1):
        rows = Predictions(torch.tensor([0, 1]), torch.tensor([[0.1 + seed], [0.2]]), torch.tensor([1, 0]), torch.tensor([0, 0]))
        from bam.config import Recipe, to_dict

        recipe = to_dict(Recipe(model="m", tasks=("qa",), custom_tasks={"qa": task.spec}))
        write_teacher(tmp_path / f"store{seed}", task, predictions={"train": rows, "dev": rows}, train_fingerprint="f", details={"recipe": recipe, "seed": seed}, save_model=None)
    for seed in (0, 1):  # as another tool (or a hand edit) might leave them: the outputs without their groups
        folder = tmp_path / f"store{seed}" / "qa"
        manifest = json.loads((folder / "manifest.json").read_text())
        for split in ("train", "dev"):
            stored = read_predictions(folder / f"{split}.safetensors")
            save_file({"ids": stored.ids, "outputs": stored.outputs.contiguous(), "labels": stored.labels}, folder / f"{split}.safetensors")
            import hashlib

            manifest["files"][split]["sha256"] = hashlib.sha256((folder / f"{split}.safetensors").read_bytes()).hexdigest()
        write_json(folder / "manifest.json", manifest)
    with pytest.raises(BamError, match="its predictions hold no groups"):
        ensemble_teachers([tmp_path / "store0", tmp_path / "store1"], tmp_path / "ensemble")
    assert not (tmp_path / "ensemble").exists()


def test_a_teacher_is_read_only_with_the_ranking_scale_it_was_trained_with(tmp_path):
    """Stored scores become targets through softmax(scale * score): a student, or an ensemble member, with another scale
    would learn another distribution than the teacher's own, so it is refused; a store from before bam recorded the
    scale is read through its recorded recipe, and one that records neither is refused."""
    from bam.config import Recipe, to_dict
    from bam.ensemble import ensemble_teachers
    from bam.teacher_store import read_teacher, write_teacher

    rows = Predictions(torch.tensor([0, 1, 2, 3]), torch.tensor([[0.1], [0.2], [0.4], [0.3]]), torch.tensor([1, 0, 0, 1]), torch.tensor([0, 0, 1, 1]))
    for name, scale in (("three", 3.0), ("one", 1.0)):
        task = Task("qa", TaskSpec(**{**vars(qa_task().spec), "ranking_scale": scale}))
        recipe = to_dict(Recipe(model="m", tasks=("qa",), custom_tasks={"qa": task.spec}))
        write_teacher(tmp_path / name, task, predictions={"train": rows, "dev": rows}, train_fingerprint="f", details={"recipe": recipe}, save_model=None)
    assert json.loads((tmp_path / "three" / "qa" / "manifest.json").read_text())["target_settings"] == {"ranking_scale": 3.0}
    three = Task("qa", TaskSpec(**{**vars(qa_task().spec), "ranking_scale": 3.0}))
    assert read_teacher(tmp_path / "three", three, rows.ids, "f").outputs.tolist() == rows.outputs.tolist()
    with pytest.raises(BamError, match=r"three, task 'qa': teacher was trained with ranking_scale = 3.0, the task has 1.0"):
        read_teacher(tmp_path / "three", qa_task(), rows.ids, "f")
    with pytest.raises(BamError, match="its recorded recipe gives the task another ranking_scale"):
        ensemble_teachers([tmp_path / "one", tmp_path / "three"], tmp_path / "ensemble")

    manifest_path = tmp_path / "three" / "qa" / "manifest.json"
    older = {key: value for key, value in json.loads(manifest_path.read_text()).items() if key != "target_settings"}
    write_json(manifest_path, older)  # as bam wrote it before recording target settings: the recipe still says 3
    with pytest.raises(BamError, match="teacher was trained with ranking_scale = 3.0, the task has 1.0"):
        read_teacher(tmp_path / "three", qa_task(), rows.ids, "f")
    write_json(manifest_path, {key: value for key, value in older.items() if key != "recipe"})
    with pytest.raises(BamError, match="the manifest does not record the teacher's ranking_scale"):
        read_teacher(tmp_path / "three", three, rows.ids, "f")
