"""RandomStrokeWidth (issue 30's stroke-width lever): bolder or thinner strokes per training
image, between the grey erosion and the dilations it interpolates, and the identity at
inference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import grey_dilation, grey_erosion

from digits.model.layers import RandomStrokeWidth


@pytest.fixture(scope="module")
def strokes() -> np.ndarray:
    """Eight images (N, 28, 28, 1) of 0..1: a 2-pixel bar and a ring, anti-aliased edges."""
    images = np.zeros((8, 28, 28, 1), np.float32)
    images[:4, 6:22, 13:15] = 1.0
    images[:4, 6:22, [12, 15]] = 0.4
    yy, xx = np.mgrid[:28, :28]
    ring = np.abs(np.hypot(yy - 14, xx - 14) - 7) < 1.2
    images[4:, ring] = 1.0
    return images


def run(layer: RandomStrokeWidth, images: np.ndarray, training: bool = True) -> np.ndarray:
    return np.asarray(layer(images, training=training))


def test_bolder_strokes_lie_between_the_image_and_its_dilations(strokes):
    bolder = run(RandomStrokeWidth(thicker=2.0, thinner=0.0, seed=3), strokes)
    twice = grey_dilation(grey_dilation(strokes, size=(1, 3, 3, 1)), size=(1, 3, 3, 1))
    assert (bolder >= strokes - 1e-6).all() and (bolder <= twice + 1e-6).all()
    # Each image draws its own amount: the ink added differs from image to image.
    added = (bolder - strokes).sum(axis=(1, 2, 3))
    assert added.min() >= 0 and np.unique(added.round(3)).size == len(strokes)


def test_thinner_strokes_lie_between_the_image_and_half_an_erosion(strokes):
    thinner = run(RandomStrokeWidth(thicker=0.0, thinner=0.5, seed=3), strokes)
    eroded = grey_erosion(strokes, size=(1, 3, 3, 1))
    assert (thinner <= strokes + 1e-6).all()
    assert (thinner >= (strokes + eroded) / 2 - 1e-6).all()  # never past half way
    assert (thinner[strokes > 0] < strokes[strokes > 0]).any()
    # A 2-pixel bar keeps half its ink at the most: the stroke is fainter, not gone.
    assert (thinner[:4].max(axis=(1, 2, 3)) >= 0.5 - 1e-6).all()


def test_a_share_of_the_images_keeps_its_strokes_as_drawn(strokes):
    many = np.concatenate([strokes] * 8)
    changed = run(RandomStrokeWidth(thicker=2.0, share=0.5, seed=3), many)
    kept = (changed == many).all(axis=(1, 2, 3))
    assert 0.2 < kept.mean() < 0.8  # about half of the 64, each image on its own dice
    every = run(RandomStrokeWidth(thicker=2.0, seed=3), many)  # share 1: none kept
    assert not (every == many).all(axis=(1, 2, 3)).any()


def test_it_is_the_identity_at_inference_and_repeats_with_its_seed(strokes):
    layer = RandomStrokeWidth(thicker=2.0, seed=5)
    np.testing.assert_array_equal(run(layer, strokes, training=False), strokes)
    first = run(RandomStrokeWidth(thicker=2.0, seed=5), strokes)
    np.testing.assert_allclose(run(RandomStrokeWidth(thicker=2.0, seed=5), strokes), first)
    assert np.abs(run(RandomStrokeWidth(thicker=2.0, seed=6), strokes) - first).max() > 0.1
