"""benchmarks/other_writers.py's font rendering, with Pillow's own font (no apt fonts, so it
runs anywhere): MNIST-format images, one label per digit, the same set for the same seed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import other_writers


def pillow_font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):
        pytest.skip("Pillow without FreeType: load_default has no sizes")
    return font


def test_rendered_digits_are_mnist_format_with_their_labels():
    images, labels = other_writers.render_font(pillow_font, 2, np.random.default_rng(0))

    assert images.shape == (20, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [digit for digit in range(10) for _ in range(2)]
    assert (images.max(axis=(1, 2)) == 255).all()  # each holds a digit, at full ink
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], 1)
    assert border.max() == 0  # white on black, inside MNIST's 20x20 box


def test_the_same_seed_renders_the_same_images_and_another_seed_others():
    first, _ = other_writers.render_font(pillow_font, 1, other_writers.font_rng(0, "pillow"))
    again, _ = other_writers.render_font(pillow_font, 1, other_writers.font_rng(0, "pillow"))
    other, _ = other_writers.render_font(pillow_font, 1, other_writers.font_rng(1, "pillow"))

    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_pillow_font_passes_the_usability_check():
    assert other_writers.unusable_reason(pillow_font) is None


def test_a_saved_set_loads_without_pickle(tmp_path):
    images, labels = other_writers.render_font(pillow_font, 1, np.random.default_rng(0))
    out = tmp_path / "set.npz"
    other_writers.save_set(out, images, labels, np.array(["pillow"] * 10), np.zeros(10, bool))

    loaded = other_writers.load_set(out)
    assert set(loaded) == {"images", "labels", "fonts", "handwriting"}
    assert loaded["labels"].dtype == np.int64 and loaded["fonts"][0] == "pillow"
    parts = other_writers.subsets("set", {**loaded, "handwriting": np.arange(10) < 4})
    assert [(p.name, int(p.rows.sum())) for p in parts] == [
        ("set", 10), ("set (handwriting)", 4), ("set (printed)", 6)]


def test_a_photographed_digit_is_a_small_grey_jpeg_of_dark_ink():
    ink = other_writers.draw_ink(pillow_font, 4, np.random.default_rng(2))
    photo = other_writers.photograph(ink, np.random.default_rng(3))

    low, high = other_writers.PHOTO_SIDE
    assert photo.ndim == 2 and photo.dtype == np.uint8 and low <= photo.shape[0] < high
    paper_low, paper_high = other_writers.PHOTO_PAPER
    corners = [photo[:4, :4], photo[:4, -4:], photo[-4:, :4], photo[-4:, -4:]]
    assert all(paper_low - 40 < np.median(c) < paper_high + 40 for c in corners)  # grey paper
    assert photo.min() < other_writers.PHOTO_INK[1] + 40  # and darker ink on it
    again = other_writers.photograph(ink, np.random.default_rng(3))
    assert np.array_equal(photo, again)  # the same dice, the same photo, JPEG included


def test_the_photo_set_reads_each_photo_as_an_upload_is_read():
    images, labels = other_writers.render_font(
        pillow_font, 1, np.random.default_rng(0), photographed=True)
    plain, _ = other_writers.render_font(pillow_font, 1, np.random.default_rng(0))

    assert images.shape == (10, 28, 28) and labels.tolist() == list(range(10))
    assert (images.max(axis=(1, 2)) == 255).all() and not np.array_equal(images, plain)
