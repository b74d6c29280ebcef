"""Where `digits fetch` may write: a new or empty folder, filled by one rename."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from digits.errors import UsageError
from digits.files import fsync_dir


def check_dest(dest: Path) -> None:
    """Refuse a fetch destination that is not a new or empty folder (a usage error): files
    copied over another version's would leave its extra files beside this manifest."""
    for folder in (dest, *dest.parents):
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{folder}: not a folder; --dest must be a new or empty folder")
    if dest.is_dir() and any(dest.iterdir()):
        raise UsageError(
            f"{dest}: not empty; fetch into a new or empty folder (remove it to replace it)"
        )


def place(staging: Path, dest: Path) -> None:
    """Rename the staged copy to `dest` in one step: rename(2) replaces only an empty
    folder, so one filled since `check_dest` is refused, never merged into."""
    try:
        os.rename(staging, dest)
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise
        check_dest(dest)  # says what dest became
        raise
    fsync_dir(dest.parent)
