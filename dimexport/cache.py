"""Content-addressed folders (export artifacts, engines): reuse a complete one, write into a scratch folder,
publish it with one rename, and keep a failed one as `<name>.failed` for inspection."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, TypeVar

from .errors import InputError

T = TypeVar("T")


def reuse(folder: Path, read: Callable[[Path], T], force: bool, status: Callable[[str], None]) -> T | None:
    """`read(folder)` if the folder exists, is complete and `force` is off; None means build it."""
    if folder.exists() and not force:
        try:
            return read(folder)
        except InputError:
            status(f"rebuilding incomplete {folder}")
    return None


def scratch(folder: Path) -> Path:
    """An empty folder beside `folder`, private to this process."""
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def keep_failed(tmp: Path, folder: Path) -> Path:
    """Move a failed build to `<folder>.failed`; the cache-key folder stays absent."""
    failed = folder.with_name(folder.name + ".failed")
    shutil.rmtree(failed, ignore_errors=True)
    tmp.rename(failed)
    return failed
