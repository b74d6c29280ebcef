"""Digits set in type, drawn offline: the printed and stencilled digits MNIST's pens never
made (a 1 with a flag and a foot, bold and hairline faces), as `typeset_digits` adds them
to training.

Each is one of 0-9 from a typeface matplotlib ships that the fonts benchmark does not
render (STIX, Computer Modern: benchmarks/other_writers.py draws /usr/share/fonts), drawn
as `digits.data.negatives` draws its letters (size, bolder strokes, stretch, slant, a
smooth bend, rotation) and read through `normalize_image` as every upload is. Nothing is
downloaded, and the same seed draws the same images.
"""

from __future__ import annotations

import numpy as np

from digits.config import TrainConfig
from digits.data.negatives import draw_glyph, load_font, matplotlib_file, retry
from digits.data.splits import scale

TYPESET_FONTS = (
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmmi10.ttf", "cmti10.ttf",
)  # not DejaVu, matplotlib's other face: the benchmark renders it from /usr/share/fonts


def draw_typeset(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` images (count, 28, 28) uint8, white on black, and their digits (int64)."""
    rng = np.random.default_rng(seed)
    fonts = [load_font(matplotlib_file("fonts/ttf", name)) for name in TYPESET_FONTS]
    labels = rng.integers(0, 10, size=count)
    images = np.zeros((count, 28, 28), np.uint8)
    for i, digit in enumerate(labels):
        font = fonts[rng.integers(len(fonts))]
        # Not thinned: a thin face's strokes break up, and the label would name fragments.
        images[i] = retry(lambda: draw_glyph(font, rng, str(digit), thin=False))
    return images, labels.astype(np.int64)


def with_typeset(images: np.ndarray, labels: np.ndarray, config: TrainConfig,
                 digits_trained: int) -> tuple[np.ndarray, np.ndarray]:
    """`images` and `labels` (0..1 images, as training takes them) and `typeset_digits` typeset
    digits per one of the `digits_trained` training digits, drawn with the run's seed."""
    count = round(config.typeset_digits * digits_trained)
    if not count:
        return images, labels
    typeset, digits = draw_typeset(count, config.seed)
    return (np.concatenate([images, scale(typeset)]),
            np.concatenate([labels, digits.astype(labels.dtype)]))
