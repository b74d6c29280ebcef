"""Reading the images people send: PNG/JPEG files and `.npy` arrays, bounded, into pixels.

PNG/JPEG images (any size, polarity, bit depth or alpha) are read to grayscale and made
MNIST-format by `digits.data.normalize`; `.npy` arrays are taken as MNIST-format pixels
already. Limits are checked from headers before anything is decoded. numpy and Pillow
only, no scipy: each import costs every cold `digits predict`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from digits.config import IMAGE_SHAPE, MAX_IMAGE_PIXELS, MAX_INPUT_ROWS
from digits.data.normalize import normalize_image
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
