"""The MNIST way of making a digit: any 2-D grayscale array in, (28, 28) uint8 out.

The paper's uneven light out (a photo's), then the ink (polarity from the border, the
background removed, faint grain dropped), fitted into a 20x20 box and placed by its centre
of mass, as MNIST made its digits. `digits predict`, the HTTP service, `digits add`, the
batch checks and the negatives all go through `normalize_image`, so a digit looks the same
to the model wherever it came from. numpy and Pillow only, no scipy: each import costs
every cold `digits predict`.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from digits.config import IMAGE_SHAPE

# MNIST fitted each digit into a 20x20 box (aspect kept, anti-aliased), then placed it in
# 28x28 with its centre of mass at the centre: (14, 14) in index coordinates, measured.
DIGIT_BOX = 20
CENTRE = np.array(IMAGE_SHAPE) / 2
MIN_CONTRAST = 0.05  # below this share of the brightest value an image counts as blank
NOISE_FLOOR = 0.15  # ink fainter than this after background removal is paper grain or JPEG ringing
# Light falling off across a photographed page (remove_shading): a quadratic surface is fitted
# to the paper on about SHADING_SAMPLES pixels (an even grid); a pixel within PAPER_BAND of it counts as
# paper; a page whose fitted light changes by less than MIN_SHADING of the image's range is
# left as it is (evenly lit: scans, the page's canvas, MNIST), since that is under the floor.
SHADING_SAMPLES = 1024
PAPER_BAND = 0.1
MIN_SHADING = 0.1


def median(values: np.ndarray) -> float:
    """np.median of finite values, without the numpy.ma import it triggers (25 ms cold)."""
    ordered = np.sort(values, axis=None)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def extract_ink(image: np.ndarray) -> np.ndarray:
    """Ink intensity 0..1 on a zero background, whatever the input's range and polarity."""
    if image.dtype == np.uint8:
        # Most images: each of the 256 levels goes through the same float32 arithmetic once,
        # then a lookup: the same ink as pixel by pixel, in two thirds of the time.
        low, high = np.float32(image.min()), np.float32(image.max())
        levels = np.arange(256, dtype=np.float32)
        return ink_levels(levels, low, high, border_of(image).astype(np.float32)).take(image)
    pixels = image.astype(np.float32)
    if not np.isfinite(pixels).all():
        raise ValueError("image has non-finite pixel values")
    return ink_levels(pixels, pixels.min(), pixels.max(), border_of(pixels))


def border_of(image: np.ndarray) -> np.ndarray:
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


def ink_levels(pixels: np.ndarray, low, high, border: np.ndarray) -> np.ndarray:
    """`pixels` as ink, given the image's range and its border pixels (for the polarity and
    the background): elementwise, so it maps an image or a table of its levels alike."""
    if high - low <= MIN_CONTRAST * max(abs(low), abs(high)):
        raise ValueError("image is blank (no contrast)")
    pixels, border = (pixels - low) / (high - low), (border - low) / (high - low)
    if median(border) > 0.5:  # a light border means dark ink on paper: MNIST is the reverse
        pixels, border = 1 - pixels, 1 - border
    background = median(border)  # < 0.5 here, so the division below is safe
    ink = np.clip((pixels - background) / (1 - background), 0, 1)
    ink[ink < NOISE_FLOOR] = 0
    return ink


def fit_box(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink and scale so the longer side is DIGIT_BOX pixels."""
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = DIGIT_BOX / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    digit = np.asarray(
        Image.fromarray(crop.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    )
    digit = np.clip(digit, 0, 1)  # Lanczos rings slightly below 0 and above 1
    # Thin strokes fade when a large image shrinks; MNIST digits always peak at 254..255.
    return digit / digit.max()


def center_of_mass(image: np.ndarray) -> np.ndarray:
    """(row, col) of the intensity's centre, computed as scipy.ndimage.center_of_mass does."""
    rows, cols = np.ogrid[: image.shape[0], : image.shape[1]]
    moments = [(image * rows.astype(float)).sum(), (image * cols.astype(float)).sum()]
    return np.array(moments) / image.sum()


def shift_whole(image: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Move by whole pixels, zeros coming in: scipy.ndimage.shift with order=0 for integer
    offsets, without importing scipy (a quarter second of every cold `digits predict`)."""
    dy, dx = (int(v) for v in offset)
    height, width = image.shape
    shifted = np.zeros_like(image)
    if abs(dy) < height and abs(dx) < width:
        shifted[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = image[
            max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
        ]
    return shifted


def centre_by_mass(digit: np.ndarray) -> np.ndarray:
    canvas = np.zeros(IMAGE_SHAPE)
    top, left = (np.array(IMAGE_SHAPE) - digit.shape) // 2
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    # Whole-pixel shift moves the digit without blurring it.
    return shift_whole(canvas, np.round(CENTRE - center_of_mass(canvas)))


def normalize_image(image: np.ndarray) -> np.ndarray:
    """Any 2-D grayscale array -> (28, 28) uint8, white digit on black, made the MNIST way.

    Raises ValueError when the image is not 2-D or is blank.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    digit = centre_by_mass(fit_box(extract_ink(remove_shading(image))))
    return np.round(digit * 255).astype(np.uint8)


def remove_shading(image: np.ndarray) -> np.ndarray:
    """`image` with the paper's uneven light taken out, as ink-bright float32 on a paper near
    0; `image` itself where the page is evenly lit (or blank, which extract_ink refuses).

    A phone photo's paper is darker on one side or in the corners: kept, that shading reads
    as ink, and the crop takes in the dark side of the page, leaving the digit small in a
    corner. A quadratic in x and y (a tilt and a vignette) is fitted by least squares to the
    pixels that are paper, found by refitting three times without what lies above the fit.
    """
    low, high = float(image.min()), float(image.max())
    if not high - low > MIN_CONTRAST * max(abs(low), abs(high)):  # NaN too: extract_ink's
        return image
    light_paper = median(border_of(image).astype(np.float32)) > (low + high) / 2

    def as_ink(pixels: np.ndarray) -> np.ndarray:  # 0..1, ink bright
        unit = (pixels.astype(np.float32) - low) / (high - low)
        return 1 - unit if light_paper else unit

    # The fit sees an even grid of about SHADING_SAMPLES pixels: an evenly lit image costs
    # no more than that, whatever its size.
    step = max(1, math.isqrt(image.size // SHADING_SAMPLES))
    sample = as_ink(image[::step, ::step]).ravel()
    terms = quadratic_terms(image.shape, step)
    paper = sample < 0.5
    for _ in range(3):
        if paper.sum() < 2 * terms.shape[1]:
            return image  # hardly any paper: nothing to fit the light to
        # Least squares by its normal equations (six unknowns); the tiny ridge keeps paper
        # seen only along a line or two (a digit filling the image) solvable.
        fitted = terms[paper]
        normal = fitted.T @ fitted + np.eye(terms.shape[1], dtype=np.float32) * 1e-4
        coefficients = np.linalg.solve(normal, fitted.T @ sample[paper])
        light = terms @ coefficients
        paper = sample - light < PAPER_BAND
    if np.ptp(light) < MIN_SHADING:
        return image
    return as_ink(image) - (quadratic_terms(image.shape, 1) @ coefficients).reshape(image.shape)


def quadratic_terms(shape: tuple[int, int], step: int) -> np.ndarray:
    """1, x, y, x², xy, y² at every `step`-th pixel (coordinates -1..1), one row a pixel."""
    height, width = shape
    rows, cols = np.mgrid[0:height:step, 0:width:step].astype(np.float32)
    y, x = (rows / max(height - 1, 1) * 2 - 1).ravel(), (cols / max(width - 1, 1) * 2 - 1).ravel()
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)
