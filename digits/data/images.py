"""MNIST's image facts and the reading that turns any image into MNIST-format input.

PNG/JPEG images (any size, polarity, bit depth or alpha) are normalised the way MNIST made
its digits; `.npy` arrays are taken as MNIST-format pixels already. `digits predict`, the
HTTP service, `digits add` and the batch checks all read images through this module, so a
digit looks the same to the model wherever it came from. numpy and Pillow only, no scipy:
each import costs every cold `digits predict`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from digits.config import IMAGE_SHAPE
from digits.errors import DataError, UsageError

BATCH_SHAPE = "(N, {}, {})".format(*IMAGE_SHAPE)  # a batch's shape, as messages write it

# MNIST fitted each digit into a 20x20 box (aspect kept, anti-aliased), then placed it in
# 28x28 with its centre of mass at the centre: (14, 14) in index coordinates, measured.
DIGIT_BOX = 20
CENTRE = np.array(IMAGE_SHAPE) / 2
MIN_CONTRAST = 0.05  # below this share of the brightest value an image counts as blank
NOISE_FLOOR = 0.15  # ink fainter than this after background removal is paper grain or JPEG ringing
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601, the weights Pillow's "L" conversion uses


def median(values: np.ndarray) -> float:
    """np.median of finite values, without the numpy.ma import it triggers (25 ms cold)."""
    ordered = np.sort(values, axis=None)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def extract_ink(image: np.ndarray) -> np.ndarray:
    """Ink intensity 0..1 on a zero background, whatever the input's range and polarity."""
    pixels = image.astype(np.float64)
    if not np.isfinite(pixels).all():
        raise ValueError("image has non-finite pixel values")
    low, high = pixels.min(), pixels.max()
    if high - low <= MIN_CONTRAST * max(abs(low), abs(high)):
        raise ValueError("image is blank (no contrast)")
    pixels = (pixels - low) / (high - low)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
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
    digit = centre_by_mass(fit_box(extract_ink(image)))
    return np.round(digit * 255).astype(np.uint8)


def flatten_alpha(image: Image.Image) -> np.ndarray:
    """Composite on a background that contrasts with the strokes: drawing apps export dark
    or light strokes on a transparent background, which plain conversion would lose."""
    pixels = np.asarray(image.convert("RGBA"), dtype=np.float64)
    alpha = pixels[..., 3] / 255
    luma = pixels[..., :3] @ LUMA
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


def read_grayscale(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            # Phone photos store their rotation in EXIF rather than in the pixels.
            return to_grayscale(ImageOps.exif_transpose(image))
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image format Pillow can read (PNG, JPEG, ...)") from None
    except (OSError, Image.DecompressionBombError) as error:
        raise DataError(f"{path}: corrupt or unreadable image ({error})") from None


def read_array(path: Path) -> np.ndarray:
    """A .npy of MNIST-format pixels, used as is: (28, 28) or (N, 28, 28), values 0..255."""
    try:
        array = np.load(path, allow_pickle=False)  # a pickle could run code
    except (OSError, ValueError, EOFError):
        raise DataError(f"{path}: not a readable .npy array") from None
    if not isinstance(array, np.ndarray):  # np.load returns an archive for .npz content
        raise DataError(f"{path}: not a single .npy array")
    batch = array[None] if array.ndim == 2 else array
    if batch.ndim != 3 or batch.shape[1:] != IMAGE_SHAPE or len(batch) == 0:
        raise DataError(f"{path}: expected shape {IMAGE_SHAPE} or {BATCH_SHAPE}, got {array.shape}")
    if batch.dtype.kind not in "uif":
        raise DataError(f"{path}: expected numeric pixels, got dtype {array.dtype}")
    if not np.isfinite(batch).all() or batch.min() < 0 or batch.max() > 255:
        raise DataError(f"{path}: pixel values must lie in 0..255 (MNIST format)")
    return batch.astype(np.float32)


def load_image(path: Path) -> np.ndarray:
    """(N, 28, 28) float32 pixels 0..255: N = 1 for an image, N rows for a batch .npy."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        return read_array(path)
    try:
        return normalize_image(read_grayscale(path))[None].astype(np.float32)
    except ValueError as error:
        raise DataError(f"{path}: {error}") from None


def load_inputs(paths: list[Path]) -> tuple[list[str], np.ndarray]:
    """A name per row ("a.png", or "b.npy[3]" for rows of a batch) and the (N, 28, 28) batch."""
    if not paths:
        raise UsageError("no input files given")
    names, batches = [], []
    for path in paths:
        batch = load_image(path)
        rows = [f"{path.name}[{i}]" for i in range(len(batch))]
        names += rows if len(batch) > 1 else [path.name]
        batches.append(batch)
    return names, np.concatenate(batches)
