"""Typeset digits (digits.data.typeset): what `typeset_digits` adds to training."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import ImageFont

from digits.config import PRESETS
from digits.data.negatives import matplotlib_file
from digits.data.typeset import TYPESET_FONTS, draw_typeset, with_typeset

BENCHMARK_FONTS = "/usr/share/fonts"  # what benchmarks/other_writers.py renders


def test_typeset_digits_are_mnist_format_labelled_and_repeat_with_their_seed():
    images, labels = draw_typeset(60, seed=3)
    again, same = draw_typeset(60, seed=3)
    other, _ = draw_typeset(60, seed=4)

    assert images.shape == (60, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))
    assert (images.max(axis=(1, 2)) == 255).all()  # each holds a digit at full ink
    assert np.array_equal(images, again) and np.array_equal(labels, same)
    assert not np.array_equal(images, other)


def test_each_typeface_draws_ten_distinct_digits_and_none_is_the_benchmarks():
    for name in TYPESET_FONTS:
        path = matplotlib_file("fonts/ttf", name)
        assert BENCHMARK_FONTS not in str(path)
        font = ImageFont.truetype(str(path), 40)
        glyphs = {bytes(font.getmask(str(digit))) for digit in range(10)}
        assert len(glyphs) == 10, name  # no digit drawn as another's or a missing box


def test_training_gains_the_share_asked_for_scaled_as_training_takes_images():
    config = replace(PRESETS["cnn"], typeset_digits=0.05)
    images, labels = np.zeros((40, 28, 28), np.float32), np.full(40, 10, np.int64)

    more, more_labels = with_typeset(images, labels, config, digits_trained=400)

    assert more.shape == (60, 28, 28) and more.dtype == images.dtype
    assert 0.99 <= more[40:].max() <= 1.0 and (more_labels[40:] < 10).all()
    unchanged = with_typeset(images, labels, replace(config, typeset_digits=0.0), 400)
    assert unchanged[0] is images and unchanged[1] is labels
