"""One training per run directory: an exclusive lock on <run>/.lock, released when the process dies.

fcntl.flock locks belong to the open file, so the kernel drops them when the process exits for any
reason (SIGKILL included): a stale .lock file left behind never blocks the next training.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import ConfigError

LOCK_FILE = ".lock"

try:  # POSIX; elsewhere (Windows) trainings are not guarded against each other
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


class RunLock:
    """`lock = RunLock(run_dir).acquire()` ... `lock.release()`; a second holder gets a ConfigError."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if fcntl is None or self._fd is not None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"process {holder}" if holder else "another process"
                raise ConfigError(
                    f"{self.path.parent} is being trained by {who} (it holds {self.path}); "
                    "wait for it to finish or train into another --out"
                ) from exc
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file itself may stay
            self._fd = None

    def __del__(self) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


# What `--overwrite` removes: the files a training writes (and an evaluation of it), nothing else.
RUN_OUTPUTS = (
    "config.json",
    "checkpoints",
    "metrics.jsonl",
    "samples",
    "samples.png",
    "loss_curves.png",
    "eval.json",
    "eval.md",
)


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool, lock: RunLock, console=None) -> bool:
    """Create and lock run_dir, and check it suits the request; returns whether it holds a checkpoint.

    New training into a run: an error offering --resume or --overwrite (with --overwrite, the old run's
    files go). --resume of a run killed before its first checkpoint: True is not returned, and the
    caller starts it over from its saved config."""
    from ..errors import CheckpointError
    from .checkpoint import CONFIG_FILE

    if resume and overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it: pass one of them")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file, not a folder")
    if resume and not (run_dir / CONFIG_FILE).is_file():  # before creating anything
        raise CheckpointError(f"cannot resume: {run_dir} is not a genlab run directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    lock.acquire()
    has_run = (run_dir / CONFIG_FILE).is_file()
    checkpointed = has_run and has_checkpoint(run_dir)
    if has_run and not resume:
        if not overwrite:
            what = (
                "a run" if checkpointed else "a run that never finished its first checkpoint (killed early?)"
            )
            action = "continue it" if checkpointed else "start it over with its settings"
            raise ConfigError(
                f"{run_dir} already holds {what}: pass --resume to {action}, "
                "--overwrite to replace it, or another --out"
            )
        import shutil

        for name in RUN_OUTPUTS:
            target = run_dir / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    if resume and not checkpointed and console is not None:
        console.print(f"note: {run_dir} has no checkpoint yet (stopped in its first epoch): starting it over")
    return checkpointed


def has_checkpoint(run_dir: Path) -> bool:
    """Whether run_dir holds at least one finished checkpoint (its state.json is written last)."""
    from .checkpoint import CHECKPOINT_DIR, STATE_FILE

    return any((run_dir / CHECKPOINT_DIR).glob(f"step-*/{STATE_FILE}"))
