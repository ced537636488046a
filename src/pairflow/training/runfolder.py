"""A run folder has one owner: the checks and the lock ``pairflow train`` takes before training.

``open_run_folder(out, resume, overwrite)`` is a context manager that

- refuses an ``out`` that is a file, or that already holds a run when neither ``--resume`` nor
  ``--overwrite`` was given (a second ``train`` must never write over the first one's results);
- takes the folder's lock, ``out/.lock``: an exclusive ``fcntl.flock`` on a file that holds the
  owner's PID. The kernel drops the lock when its process ends, however it ends (even
  ``kill -9``), so a lock file left behind by a dead process is simply taken over; a live
  owner's PID is named in the refusal;
- with ``--overwrite``, deletes the old run's files (and only those, see ``RUN_FILES``);
- removes the temporary files of checkpoint writes a killed process left (``.last.pt.*.tmp``);
- on ``--resume`` without ``last.pt`` but with ``best.pt`` (a kill during the first write of
  ``last.pt``), restores ``last.pt`` from ``best.pt``: both are complete checkpoints;
- when training fails before anything worth keeping exists (no checkpoint, no metrics
  record), removes what it wrote and the folder if it created it: a bad ``--set`` or missing
  data leaves nothing behind.

Example:
    >>> with open_run_folder("runs/a", resume=False, overwrite=False):  # doctest: +SKIP
    ...     train(config)
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["RunFolderError", "RunLock", "open_run_folder", "RUN_FILES"]

# What a training run writes into its folder (``eval_*.json`` are evaluate's reports of it).
RUN_FILES = (
    "config.json", "metrics.jsonl", "last.pt", "best.pt", "curves.png", "samples", "tensorboard",
)  # fmt: skip
RUN_GLOBS = ("eval_*.json",)
# A run folder "holds a run" when any of these exist.
_RUN_MARKERS = ("last.pt", "best.pt", "metrics.jsonl", "config.json")
LOCK_NAME = ".lock"


class RunFolderError(ValueError):
    """The run folder cannot be used as asked; the message says why and what to do."""


class RunLock:
    """Exclusive ownership of a run folder: ``flock`` on ``out/.lock``, which holds the PID.

    Arguments:
        folder: the run folder (must exist).

    Raises:
        RunFolderError: on ``acquire``, when a live process holds the lock (named by PID).
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _read_pid(fd)
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                who = f"PID {holder}" if holder else "another process"
                raise RunFolderError(
                    f"run folder {self.path.parent} is in use by another pairflow train "
                    f"({who}, lock {self.path}); wait for it to finish or use another --out"
                ) from None
            # The previous owner may have unlinked the file between our open and flock: then
            # we hold a lock on a deleted file. Retry until the locked file is the one on disk.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked: nobody can be between open and flock
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds (part of) a training run."""
    return any((folder / name).exists() for name in _RUN_MARKERS)


def run_files(folder: Path) -> list[Path]:
    """The files and folders of a run in ``folder`` that exist (what ``--overwrite`` deletes)."""
    found = [folder / name for name in RUN_FILES if (folder / name).exists()]
    for pattern in RUN_GLOBS:
        found += sorted(folder.glob(pattern))
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete ``.NAME.*.tmp`` files of atomic writes that a killed process left behind.

    Only safe while holding the folder's lock (no live writer can own them)."""
    stale = [p for name in RUN_FILES for p in folder.glob(f".{name}.*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an ``out`` that cannot be used as asked (before anything is written)."""
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other: continue or start over")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a run folder; choose a folder path")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunFolderError(f"--out {out}: {parent} is a file, not a folder")
            break
    if not resume and not overwrite and out.is_dir() and holds_run(out):
        raise RunFolderError(
            f"--out {out} already holds a run; continue it with --resume, start over with "
            "--overwrite (deletes its checkpoints, metrics and samples), or use another --out"
        )


@contextmanager
def open_run_folder(
    out: str | os.PathLike, resume: bool = False, overwrite: bool = False, log=print
) -> Iterator[Path]:
    """Own run folder ``out`` for one training run (see the module docstring).

    Arguments:
        out: the run folder.
        resume: the run continues from ``out/last.pt``.
        overwrite: delete the old run's files first.
        log: where notices go (removed temporaries, restored ``last.pt``).

    Raises:
        RunFolderError: ``out`` is a file, holds a run (without resume/overwrite), is in use,
            or cannot be created.
    """
    out = Path(out)
    check_out(out, resume, overwrite)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(f"--out {out}: cannot create the run folder ({err.strerror})") from err
    try:
        lock = RunLock(out).acquire()
    except (OSError, RunFolderError) as err:
        _cleanup_created(out, created)
        if isinstance(err, RunFolderError):
            raise
        raise RunFolderError(f"--out {out}: cannot write there ({err.strerror})") from err
    succeeded = False
    try:
        stale = remove_stale_temporaries(out)
        if stale:
            log(f"removed {len(stale)} temporary file(s) of an interrupted write in {out}")
        if overwrite:
            for path in run_files(out):
                _remove(path)
        if resume and (out / "metrics.jsonl").is_file():
            # A metrics.jsonl that cannot be continued is named before anything changes (the
            # logger warns about a torn last line when it reads the file again).
            import warnings

            from pairflow.training.logger import read_metrics

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                read_metrics(out / "metrics.jsonl")
        if resume and not (out / "last.pt").is_file() and (out / "best.pt").is_file():
            from pairflow.utils import atomic_write_bytes

            atomic_write_bytes(out / "last.pt", (out / "best.pt").read_bytes())
            log(
                f"{out / 'last.pt'} is missing (a crash during its first write); "
                f"resuming from {out / 'best.pt'}"
            )
        yield out
        succeeded = True
    finally:
        if not succeeded and not resume and not _worth_keeping(out):
            for path in run_files(out):
                _remove(path)
            lock.release()  # removes the lock file, so that an empty folder can go too
            _cleanup_created(out, created)
        lock.release()


def _worth_keeping(out: Path) -> bool:
    """A failed run's folder is worth keeping once it has a checkpoint or a metrics record."""
    if (out / "last.pt").exists() or (out / "best.pt").exists():
        return True
    metrics = out / "metrics.jsonl"
    return metrics.is_file() and metrics.stat().st_size > 0


def _cleanup_created(out: Path, created: bool) -> None:
    if created:
        try:
            out.rmdir()  # only if empty: never delete what someone else put there
        except OSError:
            pass
