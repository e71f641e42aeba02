import pytest

from bam.config import HubDataset, LocalFiles, Recipe, TaskSpec
from bam.errors import BamError
from bam.tasks import check_spec, registry, resolve


def test_registry_holds_the_glue_tasks_with_their_official_metrics():
    tasks = registry()
    assert set(tasks) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    assert tasks["cola"].metrics == ("mcc",)
    assert tasks["mrpc"].metrics == tasks["qqp"].metrics == ("f1", "accuracy")
    assert tasks["stsb"].metrics == ("pearson", "spearman") and tasks["stsb"].type == "regression"
    assert tasks["stsb"].label_range == (0.0, 5.0)
    assert set(tasks["mnli"].local.dev) == {"matched", "mismatched"} == set(tasks["mnli"].hub.dev)
    assert all(tasks[name].metrics == ("accuracy",) for name in ("sst2", "mnli", "qnli", "rte", "wnli"))


def test_unknown_task_gets_a_did_you_mean():
    with pytest.raises(BamError, match=r"unknown task 'sts-b' \(did you mean \"stsb\"\?\)"):
        resolve(Recipe(model="m", tasks=("rte", "sts-b")))


def test_task_subset_must_come_from_the_recipe():
    recipe = Recipe(model="m", tasks=("rte", "mrpc", "cola"))
    assert [task.name for task in resolve(recipe, "cola, rte")] == ["cola", "rte"]
    with pytest.raises(BamError, match=r"--tasks: 'mnli' is not one of this recipe's tasks"):
        resolve(recipe, "mnli")


def test_a_task_subset_forgives_case_and_keeps_the_recipes_spelling():
    sarcasm = TaskSpec(labels=("plain", "sarcastic"))
    recipe = Recipe(model="m", tasks=("rte", "Sarcasm"), custom_tasks={"Sarcasm": sarcasm})
    assert [task.name for task in resolve(recipe, "sarcasm,RTE")] == ["Sarcasm", "rte"]
    assert [task.name for task in resolve(recipe, "Sarcasm")] == ["Sarcasm"]


@pytest.mark.parametrize(
    ("only", "message"), [(",", "--tasks: no task named"), ("rte, RTE", "--tasks: 'rte' is named twice")]
)
def test_a_task_subset_naming_a_task_twice_or_none_is_refused(only, message):
    with pytest.raises(BamError, match=message):
        resolve(Recipe(model="m", tasks=("rte", "cola")), only)


def test_impossible_specs_are_refused():
    with pytest.raises(BamError, match="at least two `labels`"):
        check_spec("x", TaskSpec(labels=("only",)))
    with pytest.raises(BamError, match=r"unknown metric 'acurracy' \(did you mean \"accuracy\"\?\)"):
        check_spec("x", TaskSpec(labels=("a", "b"), metrics=("acurracy",)))
    with pytest.raises(BamError, match="`labels` names a label twice"):
        check_spec("x", TaskSpec(labels=("a", "a")))
    with pytest.raises(BamError, match=r"`local.delimiter` must be one character, got ',,'"):
        check_spec("x", TaskSpec(labels=("a", "b"), local=LocalFiles(delimiter=",,")))
    with pytest.raises(BamError, match=r"`label_range` must be \[low, high\] with low < high, both finite"):
        check_spec("x", TaskSpec(type="regression", metrics=("pearson",), label_range=(0.0, float("inf"))))


@pytest.mark.parametrize("name", ["mnli/m", "../x", ".hidden", "a b", "rte+cola", ""])
def test_a_task_name_that_would_not_be_a_plain_file_name_is_refused(name):
    with pytest.raises(BamError, match="a task name is letters, digits"):
        check_spec(name, TaskSpec(labels=("a", "b")))


def test_metrics_must_fit_the_task_type():
    with pytest.raises(BamError, match="metric 'accuracy' does not fit a regression task"):
        check_spec("x", TaskSpec(type="regression", metrics=("accuracy",), local=LocalFiles(text_columns=("a",)), hub=HubDataset(text_fields=("a",))))
    with pytest.raises(BamError, match="metric 'f1' does not fit a classification task with 3 labels"):
        check_spec("x", TaskSpec(labels=("a", "b", "c"), metrics=("f1",)))


def test_no_dev_split_called_train():
    with pytest.raises(BamError, match="none called 'train'"):
        check_spec("x", TaskSpec(labels=("a", "b"), local=LocalFiles(text_columns=("t",), dev={"train": "x.tsv"}), hub=HubDataset(text_fields=("t",))))


@pytest.mark.parametrize("split", ["a/b", "", ".hidden"])
def test_a_split_name_that_would_not_be_a_plain_file_name_is_refused(split):
    with pytest.raises(BamError, match=rf"split name {split!r} in `local.dev` is not letters"):
        check_spec("x", TaskSpec(labels=("a", "b"), local=LocalFiles(text_columns=("t",), dev={split: "x.tsv"})))


def test_a_task_cannot_be_called_average():
    with pytest.raises(BamError, match="the name is taken by the average score"):
        check_spec("average", TaskSpec(labels=("a", "b")))


@pytest.mark.parametrize(
    "local, key",
    [
        ({"folder": "../elsewhere"}, "local.folder"),
        ({"folder": "/etc"}, "local.folder"),
        ({"folder": "RTE", "train": "../../train.tsv"}, "local.train"),
        ({"folder": "RTE", "dev": {"dev": "sub/../../dev.tsv"}}, "local.dev.dev"),
    ],
)
def test_task_paths_cannot_leave_the_data_directory(local, key):
    recipe = Recipe(model="m", tasks=("x",), custom_tasks={"x": TaskSpec(labels=("a", "b"), local=LocalFiles(text_columns=(0,), header=False, **local))})
    with pytest.raises(BamError, match=rf"`{key}` = .* must be a relative path inside the data directory"):
        resolve(recipe)


def test_task_paths_may_name_sub_folders():
    recipe = Recipe(model="m", tasks=("x",), custom_tasks={"x": TaskSpec(labels=("a", "b"), local=LocalFiles(folder="nli/MNLI-dev", text_columns=(0,), header=False))})
    assert resolve(recipe)[0].spec.local.folder == "nli/MNLI-dev"


@pytest.mark.parametrize(
    "local, message",
    [
        ({"text_columns": (1,), "label_column": 2}, r"`local.text_columns` gives position 1 while `local.header` is true; set header = false"),
        ({"text_columns": ("text",), "label_column": 2}, r"`local.label_column` gives position 2 while `local.header` is true"),
        ({"text_columns": ("text",), "id_column": 0}, r"`local.id_column` gives position 0 while `local.header` is true"),
        ({"format": "jsonl", "text_columns": (0,), "header": False}, r"`local.text_columns` gives position 0, but JSON lines have keys, not positions"),
        ({"text_columns": ("text",), "dev_fraction": 1.0}, r"`local.dev_fraction` = 1.0 must be in \[0, 1\)"),
        ({"text_columns": ("text",), "dev_fraction": 0.1, "dev": {"dev": "other.tsv"}}, r"`local.dev` and `local.dev_fraction` both give a dev split"),
        ({"text_columns": ("text",), "skip_labels": ("b",)}, r"'b' is both a label and in `local.skip_labels`"),
    ],
)
def test_local_settings_that_would_misread_a_file_are_refused(local, message):
    recipe = Recipe(model="m", tasks=("x",), custom_tasks={"x": TaskSpec(labels=("a", "b"), local=LocalFiles(**local))})
    with pytest.raises(BamError, match=message):
        resolve(recipe)


def test_an_unknown_metric_lists_the_metrics_that_fit_the_task():
    seven = tuple("abcdefg")
    recipe = Recipe(model="m", tasks=("x",), custom_tasks={"x": TaskSpec(labels=seven, metrics=("macro-f1",), local=LocalFiles(text_columns=("t",)))})
    with pytest.raises(BamError, match=r"unknown metric 'macro-f1' \(did you mean \"macro_f1\"\?\); metrics that fit this task: accuracy, macro_f1, micro_f1, weighted_f1, mcc$"):
        resolve(recipe)
    recipe = Recipe(model="m", tasks=("x",), custom_tasks={"x": TaskSpec(labels=seven, metrics=("f1",), local=LocalFiles(text_columns=("t",)))})
    with pytest.raises(BamError, match=r"metric 'f1' does not fit a classification task with 7 labels \(these do: accuracy, macro_f1"):
        resolve(recipe)
