"""Hostile batches for `digits add`: each is refused with a DataError (exit 4) naming the file
or folder at fault, before anything is decoded past the limits in BatchChecks."""

import io
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from digits.checks.settings import BatchChecks
from digits.data import images
from digits.data.images import read_grayscale
from digits.data.intake import read_source
from digits.data.normalize import normalize_image
from digits.errors import DataError

LIMITS = BatchChecks()


def npy_bytes(shape, dtype="u1", data: bytes | None = None) -> bytes:
    """A .npy file's bytes whose header claims `shape`, followed by `data` (default: none)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return header.getvalue() + (data or b"")


def write_npz(path, images: bytes, labels: bytes):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images.npy", images)
        archive.writestr("labels.npy", labels)
    return path


def digit_png(path, size=(64, 48), **save):
    digit = np.zeros(size[::-1], np.uint8)
    digit[size[1] // 6 : size[1] * 5 // 6, size[0] // 3 : size[0] // 3 + max(2, size[0] // 8)] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(digit).save(path, **save)
    return path


# --- .npz bombs ---------------------------------------------------------------


def test_an_npz_claiming_a_billion_images_is_refused_from_its_header(tmp_path):
    path = write_npz(tmp_path / "bomb.npz", npy_bytes((10**9, 28, 28)),
                     npy_bytes((10**9,), "<i8"))
    with pytest.raises(DataError, match=r"bomb\.npz: 1000000000 images, over the limit of "
                                         rf"{LIMITS.max_rows} \(max_rows\)"):
        read_source(path)


def test_a_deflated_npz_over_max_rows_is_refused_before_loading(tmp_path, monkeypatch):
    rows = 51
    np.savez_compressed(tmp_path / "zeros.npz", images=np.zeros((rows, 28, 28), np.uint8),
                        labels=np.zeros(rows, np.uint8))
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("loaded before the check"))
    with pytest.raises(DataError, match=r"zeros\.npz: 51 images, over the limit of 50"):
        read_source(tmp_path / "zeros.npz", BatchChecks(max_rows=50))


def test_an_npz_member_larger_than_its_header_says_is_refused(tmp_path):
    # 3 images claimed, a million bytes of deflated zeros behind them.
    path = write_npz(tmp_path / "padded.npz", npy_bytes((3, 28, 28), data=bytes(10**6)),
                     npy_bytes((3,), "|u1", bytes(3)))
    with pytest.raises(DataError, match=r"padded\.npz: images\.npy holds 1\d{6} bytes, its "
                                         r"header says \d+"):
        read_source(path)


@pytest.mark.parametrize("member, match", [
    (b"not numpy at all", "not a readable .npz"),
    (npy_bytes((3, 28, 28), "<f8", bytes(3 * 784 * 8)), r"images must be \(N, 28, 28\) uint8"),
])
def test_an_npz_with_a_bad_images_member_is_named(tmp_path, member, match):
    path = write_npz(tmp_path / "bad.npz", member, npy_bytes((3,), "|u1", bytes(3)))
    with pytest.raises(DataError, match=rf"bad\.npz: {match}"):
        read_source(path)


def test_a_zip_without_images_is_named(tmp_path):
    with zipfile.ZipFile(tmp_path / "empty.npz", "w") as archive:
        archive.writestr("labels.npy", npy_bytes((3,), "|u1", bytes(3)))
    with pytest.raises(DataError, match=r"empty\.npz: no array 'images'"):
        read_source(tmp_path / "empty.npz")


def test_a_folder_over_max_rows_is_refused_before_decoding(tmp_path):
    for i in range(3):
        digit_png(tmp_path / "batch" / "1" / f"{i}.png")
    with pytest.raises(DataError, match=r"batch: 3 images, over the limit of 2 \(max_rows\)"):
        read_source(tmp_path / "batch", BatchChecks(max_rows=2))


# --- label folders and links -------------------------------------------------


@pytest.mark.parametrize("name", ["²", "--3", "99999999999999999999", "٣", "007", "10", "-1",
                                  "seven"])
def test_only_0_to_9_name_a_label_folder(tmp_path, name):
    for label in ("1", name):
        digit_png(tmp_path / "batch" / label / "a.png")
    with pytest.raises(DataError, match=rf"batch/{name}: not a label folder \(subfolders "
                                         r"must be named 0\.\.9\)"):
        read_source(tmp_path / "batch")


def test_a_symlinked_label_folder_is_refused(tmp_path):
    digit_png(tmp_path / "elsewhere" / "secret.png")
    digit_png(tmp_path / "batch" / "1" / "a.png")
    os.symlink(tmp_path / "elsewhere", tmp_path / "batch" / "3")
    with pytest.raises(DataError, match=r"batch/3: a symbolic link \(refused: only the "
                                         r"batch's own files are read\)"):
        read_source(tmp_path / "batch")


def test_a_symlinked_image_is_refused(tmp_path):
    digit_png(tmp_path / "elsewhere" / "secret.png")
    digit_png(tmp_path / "batch" / "1" / "a.png")
    os.symlink(tmp_path / "elsewhere" / "secret.png", tmp_path / "batch" / "1" / "b.png")
    with pytest.raises(DataError, match=r"batch/1/b\.png: a symbolic link"):
        read_source(tmp_path / "batch")


# --- images: formats, pixel cap, early shrink -------------------------------------


def test_an_image_that_is_not_png_or_jpeg_is_unreadable_whatever_its_name(tmp_path):
    digit_png(tmp_path / "batch" / "1" / "a.png")
    digit_png(tmp_path / "batch" / "1" / "b.png", format="GIF")  # Pillow reads GIF too
    source = read_source(tmp_path / "batch")
    assert len(source.images) == 1
    assert len(source.unreadable) == 1 and "b.png: not a PNG or JPEG image" in source.unreadable[0]


def test_an_image_over_the_pixel_cap_is_unreadable_without_decoding(tmp_path):
    side = 4097  # just over the default cap (4096x4096), far under Pillow's warning (89M)
    digit_png(tmp_path / "batch" / "1" / "big.png", size=(side, side))
    digit_png(tmp_path / "batch" / "1" / "a.png")
    source = read_source(tmp_path / "batch")
    assert len(source.images) == 1
    [reason] = source.unreadable
    assert LIMITS.max_image_pixels == 4096 * 4096
    assert f"big.png: {side}x{side} pixels, over the limit of {LIMITS.max_image_pixels}" in reason


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_large_images_shrink_before_normalising_and_read_the_same(tmp_path, fmt):
    path = digit_png(tmp_path / f"big.{fmt.lower()}", size=(2400, 1800), format=fmt)
    small = read_grayscale(path, min_side=images.SHRINK_MIN_SIDE)
    assert images.SHRINK_MIN_SIDE <= min(small.shape) < 2 * images.SHRINK_MIN_SIDE
    full = read_grayscale(path)
    assert full.shape == (1800, 2400)
    # The same digit, though centring may round its place to the next whole pixel.
    small, full = normalize_image(small).astype(int), normalize_image(full).astype(int)
    assert min(np.abs(np.roll(small, shift, axis=(0, 1)) - full).mean()
               for shift in [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]) < 1


# --- provenance: a file cannot say it is feedback (issue 28) -----------------------------


def write_members(path, **members: bytes):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


def saved(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def plain_members(rows=3) -> dict[str, bytes]:
    return {"images": saved(np.zeros((rows, 28, 28), np.uint8)),
            "labels": saved(np.arange(rows, dtype=np.int64))}


@pytest.mark.parametrize("claims", [
    # Repro 2 of issue 28: the claim that once moved label agreement to the (zero)
    # confirmed rows, and so let half the labels be wrong.
    {"origin": saved(np.array("feedback")), "confirmed": saved(np.zeros(3, bool))},
    {"origin": saved(np.array("file"))},
    {"confirmed": saved(np.zeros(3, bool))},
    # Refused by name, before its header is read: however it is shaped.
    {"origin": npy_bytes((), "<U100000000")},
])
def test_an_npz_that_claims_an_origin_is_refused_naming_the_member(tmp_path, claims):
    path = write_members(tmp_path / "fb.npz", **plain_members(), **claims)
    first = next(iter(claims))
    with pytest.raises(DataError, match=rf"fb\.npz: holds {first!r}: a file cannot say where "
                                        r"its labels came from \(feedback is added from the "
                                        r"prediction log: `digits feedback export --add`\); "
                                        rf"remove {first!r} to add it as a plain batch"):
        read_source(path)


def test_an_npz_and_a_folder_are_file_batches(tmp_path):
    source = read_source(write_members(tmp_path / "plain.npz", **plain_members(),
                                       notes=saved(np.array("other members are not read"))))
    assert (source.origin, source.answers) == ("file", None)
    assert not source.confirmed_rows().any()
    digit_png(tmp_path / "batch" / "1" / "a.png")
    assert read_source(tmp_path / "batch").origin == "file"


def test_a_feedback_source_confirms_the_rows_whose_label_is_the_answer_given():
    from digits.data.intake import FEEDBACK, Source

    labels, answers = np.array([3, 5, 8, 9]), np.array([3, 3, 8, 4])
    source = Source("log", np.zeros((4, 28, 28), np.uint8), labels, [], FEEDBACK, answers)
    # A correction is a label other than the answer it corrects, a confirmation is the
    # answer itself: nothing else can say which a row is.
    assert source.confirmed_rows().tolist() == [True, False, True, False]
