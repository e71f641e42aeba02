"""Writes that must never look complete when they are not.

A run directory or a teacher is built under a hidden `.NAME.partial` folder
and renamed into place only when everything in it has been written, so a
killed process leaves nothing that a later reader would take as finished.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from safetensors import SafetensorError

from bam.errors import BamError, first_line


def check_writable(final: Path) -> None:
    """Fail before hours of training, not after, if `final` cannot be written."""
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise BamError(f"{final}: exists and is not a folder")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BamError(f"{final}: cannot create its parent folder ({error.strerror})") from None
    if not os.access(final.parent, os.W_OK):
        raise BamError(f"{final}: its parent folder is not writable")


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a scratch folder that replaces `final` only if the block finishes without error."""
    final = Path(final)
    partial = final.parent / f".{final.name}.partial"
    _remove(partial)
    partial.mkdir(parents=True)
    try:
        yield partial
    except OSError as error:  # a full disk, a lost permission, a file too large: one line, and nothing left behind
        _remove(partial)
        raise BamError(f"{final}: could not write {error.filename or 'its files'} ({error.strerror or error})") from None
    except SafetensorError as error:  # safetensors reports the same failures as its own error type
        _remove(partial)
        raise BamError(f"{final}: could not write its weights ({first_line(error)})") from None
    except BaseException:
        _remove(partial)
        raise
    retired = final.parent / f".{final.name}.retired"
    _remove(retired)
    if final.exists():
        final.rename(retired)
    partial.rename(final)
    _remove(retired)


def _remove(path: Path) -> None:
    """Delete a scratch file or folder; a symbolic link planted in its place is unlinked, never followed."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str) -> Iterator[None]:
    """Hold an advisory lock for the block; a second process that asks for it is refused at once.

    Two `bam sweep` commands on one folder would train the same runs twice and
    overwrite each other's checkpoints. The operating system drops the lock when
    its process ends, even by `kill -9`, so a stale lock never blocks a resume.
    """
    import fcntl  # POSIX only, like the rest of the process handling

    try:
        # O_NOFOLLOW: a lock planted as a link must not make bam truncate the file it points to.
        descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)  # the umask decides, as for any file
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise BamError(f"{lock_file} is a symbolic link; bam does not follow links it writes through (remove it)") from None
        raise BamError(f"{lock_file}: cannot create the lock file ({error.strerror})") from None
    with open(descriptor, "r+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise BamError(f"{what} is in use by another bam process (pid {holder}, lock {lock_file}); wait for it to end or use another folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


def read_json(path: Path):
    """A JSON file's contents, or one line naming the file if it is not JSON text."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BamError(f"{path}: not valid JSON ({error})") from None


def read_format(path: Path, expected: str | tuple[str, ...]) -> dict:
    """A JSON object whose `format` entry is `expected` (or one of them: a versioned bam file), or one line naming the file and what it holds."""
    content = read_json(path)
    accepted = (expected,) if isinstance(expected, str) else expected
    if not isinstance(content, dict) or content.get("format") not in accepted:
        found = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise BamError(f"{path}: format {found!r} is not {' or '.join(map(repr, accepted))}")
    return content


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces `path` only once the block has finished, so readers see all or none."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.unlink(missing_ok=True)  # a leftover, or a link planted there: writing through it would change its target
        yield temporary
        os.replace(temporary, path)
    except OSError as error:  # a full disk, a lost permission: one line, and the old file stays
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise BamError(f"{path}: could not write ({error.strerror or error})") from None
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise


def as_read_back(value):
    """`value` as a JSON file holds it once read back (tuples become lists), to compare with a recorded file."""
    return json.loads(json.dumps(value))


def write_text(path: Path, text: str) -> None:
    with replaced_atomically(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_csv(table, path: Path) -> None:
    """A pandas table as CSV, without its index."""
    with replaced_atomically(path) as temporary:
        table.to_csv(temporary, index=False)


# The layers that read runs or start them but never compute their numbers. Every other file of the package (a new
# module included, without anyone remembering to list it) is part of the code fingerprint.
_NOT_NUMERIC = frozenset({"__init__.py", "cli.py", "sweep.py", "report.py", "statistics.py"})


def numeric_sources() -> list[Path]:
    """The package's source and data files that can change a run's numbers, in a fixed order."""
    package = Path(__file__).parent
    return sorted(path for path in [*package.glob("*.py"), *package.glob("*.toml")] if path.name not in _NOT_NUMERIC)


@functools.cache
def code_fingerprint() -> str:
    """A short hash of the code that produces a run's numbers, so a sweep can tell if runs came from different code."""
    digest = hashlib.sha256()
    for path in numeric_sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]
