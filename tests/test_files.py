"""Writes that must look complete only when they are: folders, files, locks and one-line errors."""

import json
import os

from pathlib import Path

import pandas as pd
import pytest

import bam.files
from bam.errors import BamError
from bam.files import atomic_directory, check_writable, exclusive, read_json, write_csv, write_json


def test_a_folder_appears_only_when_its_block_finishes(tmp_path):
    final = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with atomic_directory(final) as partial:
            (partial / "metrics.json").write_text("{}")
            raise RuntimeError("killed half way")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with atomic_directory(final) as partial:
        (partial / "metrics.json").write_text('{"average": 1}')
    assert json.loads((final / "metrics.json").read_text()) == {"average": 1}


def test_a_finished_folder_is_replaced_whole(tmp_path):
    final = tmp_path / "run"
    with atomic_directory(final) as partial:
        (partial / "old.txt").write_text("old")
    with atomic_directory(final) as partial:
        (partial / "new.txt").write_text("new")
    assert sorted(path.name for path in final.iterdir()) == ["new.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]  # no partial or retired folder left


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "results.csv"
    write_csv(pd.DataFrame({"task": ["rte"], "score": [60.0]}), path)
    before = path.read_text()

    class Unwritable:
        def to_csv(self, target, index):
            with open(target, "w") as handle:
                handle.write("task,sc")  # cut off, as by a full disk
            raise OSError("no space left on device")

    with pytest.raises(BamError, match=r"results.csv: could not write \(no space left on device\)"):
        write_csv(Unwritable(), path)
    assert path.read_text() == before and sorted(os.listdir(tmp_path)) == ["results.csv"]


def test_json_round_trip_and_a_bad_file_named_in_one_line(tmp_path):
    write_json(tmp_path / "a.json", {"tasks": ["rte"], "score": 1.5})
    assert read_json(tmp_path / "a.json") == {"tasks": ["rte"], "score": 1.5}
    (tmp_path / "b.json").write_text('{"tasks": [')
    with pytest.raises(BamError, match=r"b\.json: not valid JSON"):
        read_json(tmp_path / "b.json")


def test_a_file_where_a_folder_should_go_is_refused(tmp_path):
    (tmp_path / "run").write_text("not a folder")
    with pytest.raises(BamError, match="run: exists and is not a folder"):
        check_writable(tmp_path / "run")
    check_writable(tmp_path / "deeper" / "run")  # missing parents are made
    assert (tmp_path / "deeper").is_dir()


def test_a_held_lock_refuses_a_second_holder_and_is_free_after(tmp_path):
    lock = tmp_path / "sweep.lock"
    with exclusive(lock, "folder x"):
        with pytest.raises(BamError, match=rf"folder x is in use by another bam process \(pid {os.getpid()}"):
            with exclusive(lock, "folder x"):
                pass
    with exclusive(lock, "folder x"):
        pass



def test_the_code_fingerprint_covers_every_module_but_the_reading_and_launching_layers():
    package = Path(bam.files.__file__).parent
    covered = {path.name for path in bam.files.numeric_sources()}
    every = {path.name for path in package.iterdir() if path.suffix in (".py", ".toml")}
    assert covered == every - {"__init__.py", "cli.py", "sweep.py", "report.py", "statistics.py"}
    assert {"task_types.py", "heads.py", "sampling.py", "weighting.py", "training.py", "glue_tasks.toml"} <= covered


def test_a_lock_file_that_is_a_symbolic_link_is_refused_and_its_target_left_alone(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (tmp_path / ".run.lock").symlink_to(precious)
    with pytest.raises(BamError, match=r"\.run\.lock is a symbolic link; bam does not follow links it writes through \(remove it\)"):
        with exclusive(tmp_path / ".run.lock", "run"):
            pass
    assert precious.read_text() == "keep me"


def test_a_planted_temporary_file_link_is_replaced_not_written_through(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (tmp_path / ".results.json.tmp").symlink_to(precious)
    write_json(tmp_path / "results.json", {"a": 1})
    assert precious.read_text() == "keep me" and json.loads((tmp_path / "results.json").read_text()) == {"a": 1}


def test_a_planted_partial_folder_link_is_removed_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mine.txt").write_text("keep me")
    (tmp_path / ".run.partial").symlink_to(elsewhere, target_is_directory=True)
    with atomic_directory(tmp_path / "run") as partial:
        (partial / "metrics.json").write_text("{}")
    assert (elsewhere / "mine.txt").read_text() == "keep me" and sorted(path.name for path in elsewhere.iterdir()) == ["mine.txt"]
    assert (tmp_path / "run" / "metrics.json").is_file() and not (tmp_path / "run").is_symlink()


def test_a_failed_write_is_one_line_naming_the_path_and_leaves_nothing_finished(tmp_path, monkeypatch):
    def full_disk(path, *args, **kwargs):
        raise OSError(28, "No space left on device", str(path))

    with pytest.raises(BamError, match=r"run: could not write .*metrics.json \(No space left on device\)"):
        with atomic_directory(tmp_path / "run") as partial:
            monkeypatch.setattr(Path, "write_text", full_disk)
            (partial / "metrics.json").write_text("{}")
    monkeypatch.undo()
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_a_failed_safetensors_write_is_one_line_too(tmp_path):
    from safetensors import SafetensorError

    with pytest.raises(BamError, match=r"run: could not write its weights \(Error while serializing: I/O error: No space left on device"):
        with atomic_directory(tmp_path / "run"):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert list(tmp_path.iterdir()) == []
