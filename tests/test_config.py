import dataclasses
from pathlib import Path

import pytest

from bam.config import Recipe, StudentConfig, load_recipe
from bam.errors import BamError
from bam.tasks import registry, resolve

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))


def test_there_are_recipes():
    assert {path.name for path in RECIPES} >= {"glue.toml", "glue-mini.toml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.name)
def test_every_recipe_loads_and_names_known_tasks(path):
    recipe = load_recipe(path)
    assert recipe.model and recipe.tasks
    assert [task.name for task in resolve(recipe)] == list(recipe.tasks)
    # Each recipe opens with a comment giving the exact command.
    assert path.read_text().startswith("#") and "bam " in path.read_text()


def test_paper_defaults_for_teacher_and_student():
    recipe = Recipe()
    assert (recipe.teacher.learning_rate, recipe.teacher.batch_size, recipe.teacher.epochs) == (5e-5, 32, 3.0)
    assert (recipe.student.learning_rate, recipe.student.batch_size, recipe.student.epochs) == (1e-4, 128, 6.0)
    assert recipe.student.layerwise_lr_decay == 0.9 and recipe.student.task_sampling_alpha == 0.75
    assert recipe.max_length == 128


def write(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text('model = "m"\ntasks = ["rte"]\n' + text)
    return path


def test_a_partial_table_keeps_the_other_defaults_of_its_section(tmp_path):
    recipe = load_recipe(write(tmp_path, "[student]\nepochs = 3\n"))
    assert recipe.student.epochs == 3.0
    assert recipe.student.learning_rate == StudentConfig().learning_rate == 1e-4


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(BamError, match=r"unknown key 'student.learning_rat' \(did you mean \"learning_rate\"\?\)"):
        load_recipe(write(tmp_path, "[student]\nlearning_rat = 1e-4\n"))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(BamError, match=r"teacher.batch_size: expected an integer, got a string '32'"):
        load_recipe(write(tmp_path, '[teacher]\nbatch_size = "32"\n'))
    with pytest.raises(BamError, match=r"teacher.learning_rate: expected a number, got true$"):
        load_recipe(write(tmp_path, "[teacher]\nlearning_rate = true\n"))
    with pytest.raises(BamError, match=r"precision: 'bf17' is not one of"):
        load_recipe(write(tmp_path, 'precision = "bf17"\n'))


def test_overrides_are_type_checked(tmp_path):
    path = write(tmp_path, "")
    recipe = load_recipe(path, ["student.learning_rate=3e-5", "seed=7", "pooling=mean", 'student.anneal="none"'])
    assert (recipe.student.learning_rate, recipe.seed, recipe.pooling, recipe.student.anneal) == (3e-5, 7, "mean", "none")
    with pytest.raises(BamError, match=r"seed: expected an integer"):
        load_recipe(path, ["seed=seven"])
    with pytest.raises(BamError, match=r"unknown key 'studnet'"):
        load_recipe(path, ["studnet.epochs=1"])
    with pytest.raises(BamError, match="expected key=value"):
        load_recipe(path, ["seed"])


def test_broken_toml_and_missing_recipe_are_one_clear_error(tmp_path):
    with pytest.raises(BamError, match="not valid TOML"):
        load_recipe(write(tmp_path, "[student\n"))
    with pytest.raises(BamError, match="recipe not found"):
        load_recipe(tmp_path / "absent.toml")


def test_a_task_can_be_declared_in_the_recipe(tmp_path):
    path = tmp_path / "custom.toml"
    path.write_text(
        'model = "m"\ntasks = ["sarcasm"]\n'
        "[custom_tasks.sarcasm]\n"
        'labels = ["plain", "sarcastic"]\nmetrics = ["f1", "accuracy"]\n'
        'local = { folder = "Sarcasm", text_columns = ["text"], label_column = "tag" }\n'
    )
    (task,) = resolve(load_recipe(path))
    assert task.name == "sarcasm" and task.output_size == 2
    assert task.spec.local.text_columns == ("text",) and task.spec.local.train == "train.tsv"


def test_a_custom_task_named_like_a_registry_task_changes_only_the_keys_it_gives(tmp_path):
    path = tmp_path / "heads.toml"
    path.write_text(
        'model = "m"\ntasks = ["rte", "stsb"]\n'
        '[custom_tasks.rte]\nhead = "sequence-classification"\n'
        '[custom_tasks.stsb]\nlocal = { folder = "STSB-copy" }\n'
    )
    rte, stsb = resolve(load_recipe(path))
    assert rte.spec == dataclasses.replace(registry()["rte"], head="sequence-classification")
    # Nested tables too: only `local.folder` changes, STS-B's columns and type stay the registry's.
    assert stsb.spec == dataclasses.replace(registry()["stsb"], local=dataclasses.replace(registry()["stsb"].local, folder="STSB-copy"))
    with pytest.raises(BamError, match=r"unknown key 'custom_tasks.rte.haed' \(did you mean \"head\"\?\)"):
        load_recipe(path, ['custom_tasks.rte.haed="linear"'])


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("teacher.batch_size=0", "teacher.batch_size = 0 must be greater than 0"),
        ("eval_batch_size=0", "eval_batch_size = 0 must be greater than 0"),
        ("student.teacher_weight=2", "student.teacher_weight = 2.0 must be between 0 and 1"),
        ("student.layerwise_lr_decay=1.5", "must be in (0, 1]"),
        ("student.warmup_fraction=1", "must be in [0, 1)"),
        ("max_length=2", "max_length = 2 must be at least 8"),
        ("seed=-1", "seed = -1 must be between 0 and 2**32 - 1"),
        ("student.epochs=inf", "student.epochs = inf must be in (0, 10000]"),
        ("teacher.learning_rate=inf", "teacher.learning_rate = inf must be greater than 0 and finite"),
        ("student.task_sampling_alpha=inf", "student.task_sampling_alpha = inf must be at least 0 and finite"),
        ("student.weight_decay=inf", "student.weight_decay = inf must be at least 0 and finite"),
        ("teacher.learning_rate=nan", "teacher.learning_rate: expected a number, got nan"),
        ("student.epochs=1e30", "student.epochs = 1e+30 must be in (0, 10000]"),
    ],
)
def test_out_of_range_values_are_refused_with_the_key(tmp_path, setting, message):
    with pytest.raises(BamError) as error:
        load_recipe(write(tmp_path, ""), [setting])
    assert message in str(error.value)


def test_infinite_gradient_norm_turns_clipping_off_and_loads(tmp_path):
    assert load_recipe(write(tmp_path, ""), ["student.max_grad_norm=inf"]).student.max_grad_norm == float("inf")


def test_a_recipe_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'model = "m"\ntasks = ["rte"]\n')
    assert load_recipe(path).tasks == ("rte",)


def test_a_task_named_twice_is_refused(tmp_path):
    path = tmp_path / "twice.toml"
    path.write_text('model = "m"\ntasks = ["rte", "rte"]\n')
    with pytest.raises(BamError, match="names a task twice"):
        load_recipe(path)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('student.step_sampler="epoch_shuffle"', r"student.step_sampler = 'epoch_shuffle' is not one of proportional, epoch-shuffle, all-tasks \(did you mean \"epoch-shuffle\"\?\)"),
        ('teacher.loss_weighting="equals"', r"teacher.loss_weighting = 'equals' is not one of equal, fixed, uncertainty, dwa, dtp, gradnorm, mgda, pcgrad, famo \(did you mean \"equal\"\?\)"),
    ],
)
def test_samplers_and_weightings_are_checked_against_their_registries(tmp_path, setting, message):
    path = tmp_path / "r.toml"
    path.write_text('model = "m"\ntasks = ["rte"]\n')
    with pytest.raises(BamError, match=message):
        load_recipe(path, [setting])
