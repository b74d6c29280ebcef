"""MNIST's image facts and the reading that turns any image into MNIST-format input.

PNG/JPEG images (any size, polarity, bit depth or alpha) are normalised the way MNIST made
its digits; `.npy` arrays are taken as MNIST-format pixels already. `digits predict`, the
HTTP service, `digits add` and the batch checks all read images through this module, so a
digit looks the same to the model wherever it came from. numpy and Pillow only, no scipy:
each import costs every cold `digits predict`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from digits.config import IMAGE_SHAPE, MAX_IMAGE_PIXELS, MAX_INPUT_ROWS
from digits.errors import DataError, UsageError

BATCH_SHAPE = "(N, {}, {})".format(*IMAGE_SHAPE)  # a batch's shape, as messages write it
IMAGE_FORMATS = ["PNG", "JPEG"]  # the only decoders Pillow may try: each one is attack surface
# `digits add`, `digits predict` and the HTTP service shrink a larger image by a whole factor
# while both sides stay at least this, before normalising, so a digit reads the same anywhere
# (JPEG decoded at 1/2..1/8 scale, others box-reduced):
# fit_box brings the digit down to 20 px with Lanczos, which keeps nothing of the detail
# above this size, while a 12 MP photo costs half a GB of float64 copies at full size.
SHRINK_MIN_SIDE = 256
# Modes Image.reduce refuses, and the one each is widened to first (same pixels).
UNREDUCIBLE = {"1": "L", "P": "RGBA", "I;16": "I", "I;16L": "I", "I;16B": "I", "I;16N": "I"}

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


def flatten_alpha(image: Image.Image) -> np.ndarray:
    """Composite on a background that contrasts with the strokes: drawing apps export dark
    or light strokes on a transparent background, which plain conversion would lose."""
    if image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema() == (255, 255):
        # Opaque, as a browser canvas's PNG: nothing to composite, and the plain conversion
        # gives the same luma in a third of the time.
        return np.asarray(image.convert("L"))
    # Luma and alpha only, in float32: 8 bytes a pixel, where RGBA in float64 took 32.
    pixels = np.asarray(image.convert("LA"), dtype=np.float32)
    luma, alpha = pixels[..., 0], pixels[..., 1] / 255
    stroke = np.average(luma, weights=alpha) if alpha.any() else 0.0
    background = 255.0 if stroke < 128 else 0.0
    return luma * alpha + background * (1 - alpha)


def to_grayscale(image: Image.Image) -> np.ndarray:
    # 16-bit and float images keep their precision: extract_ink rescales any range.
    if image.mode in ("I", "I;16", "F"):
        return np.asarray(image)
    if image.has_transparency_data:
        return flatten_alpha(image)
    return np.asarray(image.convert("L"))


def read_grayscale(path: Path, max_pixels: int = MAX_IMAGE_PIXELS,
                   min_side: int | None = None) -> np.ndarray:
    """A PNG or JPEG as a 2-D array. Over `max_pixels` it is refused from its header, before
    any pixel is decoded; with `min_side` it is shrunk while both sides stay that long."""
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as image:
            if image.width * image.height > max_pixels:
                raise DataError(f"{path}: {image.width}x{image.height} pixels, over the limit "
                                f"of {max_pixels}")
            small = shrink(image, min_side) if min_side else image
            # Phone photos store their rotation in EXIF rather than in the pixels.
            return to_grayscale(ImageOps.exif_transpose(small))
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a PNG or JPEG image") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{path}: corrupt or unreadable image ({error})") from None


def shrink(image: Image.Image, min_side: int) -> Image.Image:
    """`image` divided by the largest whole factor that keeps both sides >= `min_side`."""
    if min(image.size) // min_side < 2:
        return image
    # A JPEG decodes straight at 1/2, 1/4 or 1/8 scale; draft does nothing for a PNG.
    image.draft(image.mode, (image.width * min_side // min(image.size),
                             image.height * min_side // min(image.size)))
    factor = min(image.size) // min_side
    if factor < 2:
        return image
    if image.mode in UNREDUCIBLE:
        image = image.convert(UNREDUCIBLE[image.mode])
    return image.reduce(factor)


def npy_header(file) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the .npy at `file`'s position, from its header alone (numpy's
    format module), so a claimed size is checked before anything is allocated for it; the
    file is left at the first data byte."""
    version = np.lib.format.read_magic(file)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(file)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(file)
    else:
        raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
    return shape, dtype


def read_array(path: Path, max_rows: int = MAX_INPUT_ROWS, used: int = 0) -> np.ndarray:
    """A .npy of MNIST-format pixels, used as is: (28, 28) or (N, 28, 28), values 0..255, with
    `used` + N at most `max_rows`; shape, dtype and size are checked from its header first."""
    try:
        with open(path, "rb") as file:
            shape, dtype = npy_header(file)
            check_array_header(path, shape, dtype, max_rows, used)
            expected = file.tell() + math.prod(shape) * dtype.itemsize
            if os.fstat(file.fileno()).st_size < expected:
                raise DataError(f"{path}: truncated ({os.fstat(file.fileno()).st_size} bytes, "
                                f"its header says {expected})")
        array = np.load(path, allow_pickle=False)  # a pickle could run code
    except (OSError, ValueError, EOFError):
        raise DataError(f"{path}: not a readable .npy array") from None
    batch = array[None] if array.ndim == 2 else array
    if not np.isfinite(batch).all() or batch.min() < 0 or batch.max() > 255:
        raise DataError(f"{path}: pixel values must lie in 0..255 (MNIST format)")
    return batch.astype(np.float32)


def check_array_header(path: Path, shape: tuple[int, ...], dtype: np.dtype, max_rows: int,
                       used: int) -> None:
    batch = (1, *shape) if len(shape) == 2 else shape
    if len(batch) != 3 or batch[1:] != IMAGE_SHAPE or batch[0] == 0:
        raise DataError(f"{path}: expected shape {IMAGE_SHAPE} or {BATCH_SHAPE}, got {shape}")
    if dtype.kind not in "uif":
        raise DataError(f"{path}: expected numeric pixels, got dtype {dtype}")
    if used + batch[0] > max_rows:
        before = f" ({used} in the files before it)" if used else ""
        raise DataError(f"{path}: {batch[0]} rows, over the limit of {max_rows} rows{before}")


def load_image(path: Path, max_rows: int = MAX_INPUT_ROWS, used: int = 0) -> np.ndarray:
    """(N, 28, 28) float32 pixels 0..255: N = 1 for an image, N rows for a batch .npy (with
    `used` rows before it, at most `max_rows` in all)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        return read_array(path, max_rows, used)
    try:
        # Shrunk as `digits add` and the HTTP service shrink: a digit reads the same anywhere.
        return normalize_image(read_grayscale(path, min_side=SHRINK_MIN_SIDE))[None].astype(
            np.float32
        )
    except ValueError as error:
        raise DataError(f"{path}: {error}") from None


def load_inputs(paths: list[Path], max_rows: int = MAX_INPUT_ROWS) -> tuple[list[str], np.ndarray]:
    """A name per row ("a.png", or "b.npy[3]" for rows of a batch) and the (N, 28, 28) batch;
    the rows of all .npy files together at most `max_rows`."""
    if not paths:
        raise UsageError("no input files given")
    names, batches, array_rows = [], [], 0
    for path in paths:
        batch = load_image(path, max_rows, array_rows)
        if path.suffix.lower() == ".npy":
            array_rows += len(batch)
        rows = [f"{path.name}[{i}]" for i in range(len(batch))]
        names += rows if len(batch) > 1 else [path.name]
        batches.append(batch)
    return names, np.concatenate(batches)
