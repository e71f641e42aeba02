"""Exact resume: a stage killed with SIGKILL, then run again, ends with the numbers of an uninterrupted run.

The kill happens in a child process at a chosen point (the n-th batch built
during training, or during the prediction on the training set), through a
patched `collate`: a real `kill -9`, not an exception. The second run is the
ordinary stage function; it must pick up the checkpoint (its first reported
step shows where it resumed) and end with byte-identical outputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from bam.checkpoints import Checkpointing, checkpoint_folder, latest_checkpoint, load_checkpoint, run_key, save_checkpoint
from bam.config import load_recipe
from bam.errors import BamError
from bam.student import distill
from bam.tasks import resolve
from bam.teacher_store import read_predictions
from bam.teachers import train_teachers
from bam.train_log import read_train_log
from conftest import GLUE_FIXTURE

# Runs a CLI command, SIGKILLing itself at a chosen batch: argv = when, count, threads, then the CLI arguments.
# when = "training": at the count-th batch of training; "prediction": at the count-th batch of the
# training-set prediction that follows evaluation; "saving": while writing the finished output.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    import bam.teachers, bam.training
    from bam.cli import main

    when, count, arguments = sys.argv[1], int(sys.argv[2]), sys.argv[4:]
    torch.set_num_threads(int(sys.argv[3]))
    built, predicting = [0], [False]
    original_collate, original_predict = bam.training.collate, bam.teachers.predict

    def collate(*args, **kwargs):
        if when == "training" or predicting[0]:
            built[0] += 1
            if built[0] == count:
                os.kill(os.getpid(), signal.SIGKILL)
        return original_collate(*args, **kwargs)

    def predict(*args, **kwargs):
        predicting[0] = True
        return original_predict(*args, **kwargs)

    bam.training.collate = collate
    bam.teachers.predict = predict
    if when == "training":
        bam.training.predict = lambda *args, **kwargs: sys.exit("training should have been killed before prediction")
    if when == "saving":  # killed inside the output's partial folder, just before the file that marks it finished
        import bam.student, bam.teacher_store
        for module in (bam.student, bam.teacher_store):
            def write_json(path, data, original=module.write_json):
                if path.name in ("metrics.json", "manifest.json"):
                    os.kill(os.getpid(), signal.SIGKILL)
                return original(path, data)
            module.write_json = write_json
    main(arguments)
    """
)


def _kill(when: str, count: int, *arguments) -> None:
    # Same thread count as this process: results are bit-identical only per thread count.
    command = [
        sys.executable, "-c", KILLER, when, str(count), str(torch.get_num_threads()),
        *map(str, arguments), "--data-dir", str(GLUE_FIXTURE), "--set", "checkpoint_every=3",
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == -9, finished.stderr[-2000:]


def _recipe(path):
    # The tiny recipe: 40 rows per task, batch 8, 2 epochs, so a teacher trains 10 steps (checkpoints at 3, 6, 9, 10).
    return load_recipe(path, ["checkpoint_every=3"])


def _teacher_outputs(store):
    return read_predictions(store / "rte" / "train.safetensors").outputs.clone()


@pytest.mark.parametrize(("when", "count", "resumed_from"), [("training", 5, 3), ("prediction", 2, None), ("saving", 0, None)])
def test_killed_teacher_resumes_and_matches(tmp_path, tiny_recipe, when, count, resumed_from):
    recipe = _recipe(tiny_recipe)
    tasks = resolve(recipe, "rte")
    uninterrupted = train_teachers(recipe, tasks, data_dir=GLUE_FIXTURE, store=tmp_path / "once")

    store = tmp_path / "killed"
    _kill(when, count, "train-teachers", tiny_recipe, "--tasks", "rte", "--out", store)
    assert not (store / "rte").exists()  # nothing that looks finished
    assert latest_checkpoint_step(checkpoint_folder(store / "rte")) == (3 if when == "training" else 10)
    pretend_training_took(checkpoint_folder(store / "rte"), EARLIER_SECONDS)

    steps = []
    resumed = train_teachers(recipe, tasks, data_dir=GLUE_FIXTURE, store=store, progress=lambda name: lambda report: steps.append(report.step))
    wall_seconds = json.loads((store / "rte" / "manifest.json").read_text())["wall_seconds"]
    assert EARLIER_SECONDS < wall_seconds < EARLIER_SECONDS + 600  # the killed attempt's training counts
    if resumed_from is None:
        assert steps == []  # training had finished: only prediction is redone
    else:
        assert steps[0] == resumed_from + 1 and steps[-1] == 10
    assert resumed == uninterrupted
    assert torch.equal(_teacher_outputs(store), _teacher_outputs(tmp_path / "once"))
    assert not checkpoint_folder(store / "rte").exists()  # removed once the teacher is written


@pytest.mark.parametrize(
    ("sampler", "resumed_from", "last_step", "head", "weighting"),
    [
        # 3 tasks x 40 rows x 2 epochs / 8 = 30 steps of one batch: killed at the 14th batch, after the checkpoint of step 12.
        ("proportional", 12, 30, "linear", "equal"),
        ("epoch-shuffle", 12, 30, "linear", "equal"),  # 3 x 5 batches per epoch, 2 epochs
        # 10 steps of three batches: the 14th batch is in step 5, after the checkpoint of step 3.
        ("all-tasks", 3, 10, "linear", "equal"),
        # RTE through MT-DNN's SAN, whose stochastic prediction dropout draws random numbers every step.
        ("proportional", 12, 30, "san", "equal"),
        # Each loss weighting with state of its own (learned, or tracked over steps and epochs); mgda keeps none.
        ("proportional", 12, 30, "linear", "uncertainty"),
        ("proportional", 12, 45, "linear", "dwa"),  # 3 epochs: DWA's weights move from the third
        ("proportional", 12, 30, "linear", "dtp"),
        ("all-tasks", 3, 10, "linear", "gradnorm"),
        ("all-tasks", 3, 10, "linear", "pcgrad"),
        ("all-tasks", 3, 10, "linear", "famo"),
    ],
)
def test_killed_student_resumes_and_matches(tmp_path, tiny_recipe, sampler, resumed_from, last_step, head, weighting):
    if head != "linear":
        with tiny_recipe.open("a") as recipe_file:
            recipe_file.write(f'[custom_tasks.rte]\nhead = "{head}"\n')
    sampler_setting = f'student.step_sampler="{sampler}"'
    settings = [sampler_setting, f'student.loss_weighting="{weighting}"', *(["student.epochs=3"] if weighting == "dwa" else [])]
    recipe = load_recipe(tiny_recipe, ["checkpoint_every=3", *settings])
    tasks = resolve(recipe, None)
    store = tmp_path / "teachers"
    train_teachers(recipe, tasks, data_dir=GLUE_FIXTURE, store=store)
    uninterrupted = distill(recipe, tasks, data_dir=GLUE_FIXTURE, teacher_store=store, out=tmp_path / "once")

    out = tmp_path / "killed"
    # FAMO scores each step's three batches again after the update: its 20th batch is in step 4.
    killed_at = 20 if weighting == "famo" else 14
    _kill("training", killed_at, "distill", tiny_recipe, "--anneal", "linear", "--teachers", store, "--out", out, *(option for setting in settings for option in ("--set", setting)))
    assert not out.exists()
    pretend_training_took(checkpoint_folder(out), EARLIER_SECONDS)

    steps = []
    resumed = distill(recipe, tasks, data_dir=GLUE_FIXTURE, teacher_store=store, out=out, progress=lambda report: steps.append(report.step))
    assert EARLIER_SECONDS < json.loads((out / "run.json").read_text())["wall_seconds"] < EARLIER_SECONDS + 600
    assert steps[0] == resumed_from + 1 and steps[-1] == last_step
    assert resumed == uninterrupted
    assert json.loads((out / "metrics.json").read_text()) == json.loads((tmp_path / "once" / "metrics.json").read_text())
    # The log carries on from the checkpoint: every step once, the same losses as the uninterrupted run.
    assert read_train_log(out / "train_log.jsonl") == read_train_log(tmp_path / "once" / "train_log.jsonl")
    assert [record["step"] for record in read_train_log(out / "train_log.jsonl")] == list(range(1, last_step + 1))
    for once in (tmp_path / "once" / "predictions").iterdir():
        assert torch.equal(read_predictions(out / "predictions" / once.name).outputs, read_predictions(once).outputs)
    if weighting not in ("equal", "pcgrad"):  # the weights moved, and the log records them per task
        recorded = {values["loss_weight"] for record in read_train_log(out / "train_log.jsonl") for values in record["tasks"].values()}
        assert len(recorded) > 3


# What the killed attempts' training is said to have taken: far more than the tiny runs really take,
# so that the resumed run's wall time shows whether it was counted.
EARLIER_SECONDS = 10_000.0


def pretend_training_took(folder, seconds: float) -> None:
    for path in folder.glob("step-*/checkpoint.json"):
        about = json.loads(path.read_text())
        assert about["seconds"] > 0
        path.write_text(json.dumps({**about, "seconds": seconds}))


def latest_checkpoint_step(folder) -> int | None:
    steps = [json.loads((path / "checkpoint.json").read_text())["step"] for path in folder.glob("step-*")]
    return max(steps) if steps else None


def test_checkpoint_of_another_run_is_not_resumed(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    mine = Checkpointing(tmp_path, every=1, key=run_key({"seed": 0}, "rte", "data-a"))
    save_checkpoint(mine, 4, model, optimizer, scheduler, [{"cpu": torch.get_rng_state()}])
    assert latest_checkpoint(mine).name == "step-00000004"
    for other in (run_key({"seed": 1}, "rte", "data-a"), run_key({"seed": 0}, "rte", "data-b")):
        assert latest_checkpoint(Checkpointing(tmp_path, every=1, key=other)) is None
    # The checkpoint interval and the recipe's task list do not change what a run is.
    assert run_key({"seed": 0, "checkpoint_every": 9, "tasks": ["rte", "mrpc"]}, "rte", "data-a") == mine.key
    save_checkpoint(mine, 8, model, optimizer, scheduler, [{"cpu": torch.get_rng_state()}])
    assert [path.name for path in tmp_path.iterdir()] == ["step-00000008"]  # only the newest is kept


def _saved(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    checkpointing = Checkpointing(tmp_path / "checkpoints", every=1, key="k")
    log = [{"step": step, "tasks": {"rte": {"loss": 0.5, "gold_weight": 1.0, "loss_weight": 1.0}}} for step in range(1, 5)]
    save_checkpoint(checkpointing, 4, model, optimizer, scheduler, [{"cpu": torch.get_rng_state()}], log=log)
    return checkpointing, model, optimizer, scheduler


def test_a_checkpoint_gives_back_its_step_log_and_seconds(tmp_path):
    checkpointing, model, optimizer, scheduler = _saved(tmp_path)
    resumed = load_checkpoint(latest_checkpoint(checkpointing), model, optimizer, scheduler)
    assert resumed.step == 4 and [record["step"] for record in resumed.log] == [1, 2, 3, 4] and resumed.seconds == 0.0


def test_a_checkpoint_whose_log_does_not_reach_its_step_is_refused(tmp_path):
    checkpointing, model, optimizer, scheduler = _saved(tmp_path)
    path = checkpointing.folder / "step-00000004" / "train_log.jsonl"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")  # the record of step 4 lost
    with pytest.raises(BamError, match=r"step-00000004: its training log does not hold steps 1 to 4"):
        load_checkpoint(latest_checkpoint(checkpointing), model, optimizer, scheduler)


@pytest.mark.parametrize("about", [[1, 2], {"key": "k", "step": "4"}, {"key": "k"}, {"key": "k", "step": 4, "seconds": None}])
def test_a_checkpoint_json_of_the_wrong_shape_is_not_resumed(tmp_path, about):
    checkpointing, *_ = _saved(tmp_path)
    (checkpointing.folder / "step-00000004" / "checkpoint.json").write_text(json.dumps(about))
    assert latest_checkpoint(checkpointing) is None


@pytest.mark.parametrize(
    ("name", "content"),
    [("state.pt", b""), ("state.pt", b"garbage"), ("model.safetensors", b"garbage"), ("state.pt", None), ("train_log.jsonl", None), ("train_log.jsonl", b"{}")],
)
def test_a_damaged_checkpoint_file_is_one_clear_error(tmp_path, name, content):
    checkpointing, model, optimizer, scheduler = _saved(tmp_path)
    path = checkpointing.folder / "step-00000004" / name
    path.unlink() if content is None else path.write_bytes(content)
    with pytest.raises(BamError, match=r"step-00000004: a damaged checkpoint \(.+\); delete .*checkpoints to start the run over"):
        load_checkpoint(latest_checkpoint(checkpointing), model, optimizer, scheduler)


def test_a_student_killed_while_saving_resumes_to_the_same_run(tmp_path, tiny_recipe):
    recipe = _recipe(tiny_recipe)
    tasks = resolve(recipe, None)
    store = tmp_path / "teachers"
    train_teachers(recipe, tasks, data_dir=GLUE_FIXTURE, store=store)
    uninterrupted = distill(recipe, tasks, data_dir=GLUE_FIXTURE, teacher_store=store, out=tmp_path / "once")

    out = tmp_path / "killed"
    _kill("saving", 0, "distill", tiny_recipe, "--anneal", "linear", "--teachers", store, "--out", out)
    assert not out.exists() and (tmp_path / ".killed.partial").is_dir()  # a hidden scratch folder, never read as a run
    steps = []
    resumed = distill(recipe, tasks, data_dir=GLUE_FIXTURE, teacher_store=store, out=out, progress=lambda report: steps.append(report.step))
    assert steps == [] and resumed == uninterrupted  # training had finished: its last checkpoint is resumed
    assert read_train_log(out / "train_log.jsonl") == read_train_log(tmp_path / "once" / "train_log.jsonl")
    for once in (tmp_path / "once" / "predictions").iterdir():
        assert torch.equal(read_predictions(out / "predictions" / once.name).outputs, read_predictions(once).outputs)
    assert not (tmp_path / ".killed.partial").exists()


def test_a_checkpoint_that_cannot_be_written_is_one_line_and_leaves_no_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    checkpointing = Checkpointing(tmp_path / "checkpoints", every=1, key="k")

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(BamError, match=r"step-00000004: could not write the checkpoint \(.*PytorchStreamWriter failed writing file"):
        save_checkpoint(checkpointing, 4, model, optimizer, scheduler, [{"cpu": torch.get_rng_state()}])
    assert latest_checkpoint(checkpointing) is None and list(checkpointing.folder.iterdir()) == []
