"""Reading a batch a user hands to `digits add`: a folder of `0`..`9` subfolders of
PNG/JPEG, or an .npz of images and labels, into a `Source` the checks then judge.

Bounded before anything is decoded (`BatchChecks.max_rows`, `max_image_pixels`): only
`0`..`9` name label folders, links are refused, and an .npz's shapes come from its
members' headers.

What a user hands over is a "file" batch, always: a file cannot say where its labels came
from, so an .npz holding `origin`, `confirmed` or `credentials` (what `digits feedback
export` writes, and what earlier versions read as a claim to be feedback) is refused, naming
the member. A "feedback" batch is built from the prediction log's trusted labels only
(digits.monitoring.feedback), with the answer the service gave each image and the credential
that gave each label; the checks judge the two differently (digits.checks.batch).
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digits.checks.settings import BatchChecks
from digits.config import DIGITS, IMAGE_SHAPE
from digits.data.batches import batch_id
from digits.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FILE, FEEDBACK = "file", "feedback"  # a batch's origin: set by the code that reads it
# .npz members that would say where its labels came from (`digits feedback export --out`)
CLAIMS = ("origin", "confirmed", "credentials")


@dataclass(frozen=True)
class Source:
    """A batch as read from the user's folder or .npz, before any check."""

    path: str
    images: np.ndarray  # (N, 28, 28) uint8, normalised as `digits predict` does
    labels: np.ndarray  # (N,) int64 as given: the labels check decides if they are 0..9
    unreadable: list[str]  # "file: why" for each image that could not be read
    origin: str = FILE  # or FEEDBACK: labels people gave the service's answers
    answers: np.ndarray | None = None  # (N,) int for FEEDBACK: the digit the service answered
    credentials: np.ndarray | None = None  # (N,) str for FEEDBACK: who gave each label

    def confirmed_rows(self) -> np.ndarray:
        """(N,) bool: the rows people confirmed (none for a file batch). A label is a
        confirmation exactly when it is the answer given, as the service records it: so a
        correction always disagrees with the answer it corrects, and nothing else decides."""
        if self.answers is None:
            return np.zeros(len(self.labels), dtype=bool)
        return np.asarray(self.labels) == np.asarray(self.answers)


LABEL_FOLDERS = {str(digit): digit for digit in DIGITS}  # exactly "0".."9": not "007", "٣"


def read_source(path: Path, config: BatchChecks | None = None) -> Source:
    """A folder of `0`..`9` subfolders of PNG/JPEG, or an .npz with images and labels, within
    the read limits of `config`."""
    path, config = Path(path), config or BatchChecks()
    if path.is_dir():
        return read_folder(path, config)
    if path.is_file() and path.suffix.lower() == ".npz":
        return read_npz(path, config.max_rows)
    raise DataError(f"{path}: not a folder of digit subfolders nor an .npz file")


def read_folder(folder: Path, config: BatchChecks) -> Source:
    from digits.data.images import SHRINK_MIN_SIDE, read_grayscale
    from digits.data.normalize import normalize_image

    files = [(file, LABEL_FOLDERS[sub.name]) for sub in label_folders(folder)
             for file in sorted(image_files(sub))]
    if len(files) > config.max_rows:
        raise DataError(f"{folder}: {len(files)} images, over the limit of {config.max_rows} "
                        "(max_rows)")
    images, labels, unreadable = [], [], []
    for file, label in files:
        try:
            gray = read_grayscale(file, config.max_image_pixels, min_side=SHRINK_MIN_SIDE)
            images.append(normalize_image(gray))
            labels.append(label)
        except (DataError, ValueError) as error:
            unreadable.append(f"{file}: {str(error).removeprefix(f'{file}: ')}")
    if not images and not unreadable:
        raise DataError(f"{folder}: no images in subfolders 0..9")
    stacked = np.stack(images) if images else np.zeros((0, *IMAGE_SHAPE), np.uint8)
    return Source(str(folder), stacked, np.array(labels, dtype=np.int64), unreadable)


def label_folders(folder: Path) -> list[Path]:
    """The subfolders `0`..`9`; any other visible subfolder, or a link, is a data error naming
    it, before any image is read (a typo must not merge classes or drop one)."""
    subs = sorted(p for p in folder.iterdir() if not p.name.startswith(".")
                  and (p.is_dir() or p.is_symlink()))
    for sub in subs:
        refuse_link(sub)
        if sub.name not in LABEL_FOLDERS:
            raise DataError(f"{sub}: not a label folder (subfolders must be named 0..9)")
    return subs


def refuse_link(path: Path) -> None:
    # A link would let any file on the machine, or another user's, enter the store.
    if path.is_symlink():
        raise DataError(f"{path}: a symbolic link (refused: only the batch's own files are read)")


def image_files(folder: Path) -> list[Path]:
    # Only images count: a notes.txt or Thumbs.db beside them is not an unreadable digit
    # (which would quarantine the batch); hidden files are the OS's, not the user's.
    files = [p for p in folder.iterdir() if not p.name.startswith(".")
             and p.suffix.lower() in IMAGE_SUFFIXES]
    for file in files:
        refuse_link(file)
    return [p for p in files if p.is_file()]


def read_npz(path: Path, max_rows: int) -> Source:
    """An .npz's `images` and `labels`, their shapes and sizes checked from the members'
    headers first: a few MB of deflated zeros can claim billions of images. Other members
    are not read, but for a claim of origin, which is refused."""
    try:
        with zipfile.ZipFile(path) as archive:
            refuse_claims(path, archive)
            members = check_headers(path, archive, max_rows)
        with np.load(path, allow_pickle=False) as loaded:  # a pickle could run code
            arrays = {name: loaded[name] for name in members}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz ({error})") from None
    return Source(str(path), arrays["images"], arrays["labels"].astype(np.int64), [])


def refuse_claims(path: Path, archive: zipfile.ZipFile) -> None:
    # Refused rather than ignored: judged as a file, an export's corrections would be
    # quarantined, and for good (the id is the arrays' hash), so the same labels could not
    # come in from the log either; a refusal says so before anything is stored.
    for name in CLAIMS:
        if f"{name}.npy" in archive.namelist():
            raise DataError(f"{path}: holds {name!r}: a file cannot say where its labels came "
                            "from (feedback is added from the prediction log: `digits feedback "
                            f"export --add`); remove {name!r} to add it as a plain batch")


def check_headers(path: Path, archive: zipfile.ZipFile, max_rows: int) -> list[str]:
    """The names of the members to load, each checked from its header and the zip's
    directory: shape, type, row count and size."""
    from digits.data.images import BATCH_SHAPE

    images = member_header(path, archive, "images")
    if len(images.shape) != 3 or images.shape[1:] != IMAGE_SHAPE or images.dtype != np.uint8:
        raise DataError(f"{path}: images must be {BATCH_SHAPE} uint8, got "
                        f"{images.shape} {images.dtype}")
    rows = images.shape[0]
    if rows > max_rows:
        raise DataError(f"{path}: {rows} images, over the limit of {max_rows} (max_rows)")
    labels = member_header(path, archive, "labels")
    if labels.shape != (rows,) or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: labels must be ({rows},) integers, got "
                        f"{labels.shape} {labels.dtype}")
    members = [images, labels]
    for member in members:
        member.check_size(path)
    return [member.name.removesuffix(".npy") for member in members]


@dataclass(frozen=True)
class Member:
    """An .npz member as its header and the zip's directory describe it, nothing inflated."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    size: int  # uncompressed bytes, from the zip's directory
    claimed: int  # header plus data bytes, from the header

    def check_size(self, path: Path) -> None:
        # Anything but exactly the header's array is padding a bomb could hide in.
        if self.size != self.claimed:
            raise DataError(f"{path}: {self.name} holds {self.size} bytes, its header says "
                            f"{self.claimed}")


def member_header(path: Path, archive: zipfile.ZipFile, name: str) -> Member:
    from digits.data.images import npy_header

    member = f"{name}.npy"
    if member not in archive.namelist():
        raise DataError(f"{path}: no array {name!r} (needs 'images' and 'labels')")
    with archive.open(member) as file:
        shape, dtype = npy_header(file)
        claimed = file.tell() + math.prod(shape) * dtype.itemsize
    return Member(member, shape, dtype, archive.getinfo(member).file_size, claimed)


def source_id(source: Source) -> str:
    # Labels outside 0..9 are stored (in quarantine) as given; the id wraps them to bytes.
    return batch_id(source.images, source.labels.astype(np.uint8))


