"""Small generated MNIST look-alikes, written as real IDX files, for fast tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from digits.config import IDX_FILES


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array in IDX format: big-endian magic, dimension sizes, data."""
    magic = (0x08 << 8) | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    data = idx_bytes(array)
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_digits(n: int, seed: int, prototypes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Balanced classes; each image is its class prototype with jitter, so a model can learn it."""
    rng = np.random.default_rng(seed)
    labels = np.resize(np.arange(10, dtype=np.uint8), n)
    rng.shuffle(labels)
    keep = rng.random((n, 28, 28)) > 0.15  # drop some ink
    speckle = rng.random((n, 28, 28)) > 0.97  # add a little noise
    images = (prototypes[labels] & keep) | speckle
    shade = rng.integers(180, 256, size=(n, 1, 1))
    return (images * shade).astype(np.uint8), labels


def make_prototypes(seed: int = 0) -> np.ndarray:
    """Ten distinct random strokes patterns inside the central 20x20 box, like MNIST's."""
    rng = np.random.default_rng(seed)
    prototypes = np.zeros((10, 28, 28), dtype=bool)
    prototypes[:, 4:24, 4:24] = rng.random((10, 20, 20)) > 0.75
    return prototypes


def write_dataset(
    folder: Path,
    n_train: int = 1200,
    n_test: int = 300,
    shuffle_test_labels: bool = False,
    compress: bool = False,
) -> Path:
    """Write the four standard IDX files; `shuffle_test_labels` makes a model fail the gate."""
    folder.mkdir(parents=True, exist_ok=True)
    prototypes = make_prototypes()
    train_x, train_y = make_digits(n_train, 1, prototypes)
    test_x, test_y = make_digits(n_test, 2, prototypes)
    if shuffle_test_labels:  # same class counts, labels unrelated to images
        test_y = np.random.default_rng(3).permutation(test_y)
    arrays = {
        "train_images": train_x,
        "train_labels": train_y,
        "test_images": test_x,
        "test_labels": test_y,
    }
    for kind, array in arrays.items():
        write_idx(folder / IDX_FILES[kind], array, compress=compress)
    return folder


def snapshot_tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes, to prove a failed run changed nothing."""
    if not root.exists():
        return {}
    files = sorted(path for path in root.rglob("*") if path.is_file())
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in files}


# --- New batches for `digits add`: other writers, other domains ------------------------


def distort(images: np.ndarray, seed: int, max_degrees: float = 12.0) -> np.ndarray:
    """Other writers: each digit rotated, sheared and scaled a little, its pen thinner or
    thicker, then put back into MNIST's format (20x20 box, centred by mass)."""
    from scipy import ndimage

    from digits.data.normalize import normalize_image

    rng = np.random.default_rng(seed)
    out = []
    for image in images:
        angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees))
        shear, zoom = rng.uniform(-0.15, 0.15), rng.uniform(0.85, 1.15)
        rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        matrix = rotate @ np.array([[1, shear], [0, 1]]) / zoom
        centre = np.array([14.0, 14.0])
        canvas = np.pad(image.astype(np.float64), 14)
        warped = ndimage.affine_transform(canvas, matrix, offset=centre + 14 - matrix @ (centre + 14),
                                          order=1)
        pen = rng.integers(-1, 2)  # thinner, same or thicker pen
        if pen > 0:
            warped = ndimage.grey_dilation(warped, size=(2, 2))
        elif pen < 0:
            warped = ndimage.grey_erosion(warped, size=(2, 2)) if (warped > 128).sum() > 60 else warped
        out.append(normalize_image(warped) if warped.max() > 0 else image)
    return np.stack(out)


def noise_images(n: int, seed: int) -> np.ndarray:
    """Not digits: uniform noise."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def shape_images(n: int, seed: int) -> np.ndarray:
    """Not digits: filled rectangles and ellipses, normalised as a scanned drawing would be."""
    from digits.data.normalize import normalize_image

    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:64, :64]
    out = []
    for _ in range(n):
        top, left = rng.integers(2, 30, size=2)
        height, width = rng.integers(12, 32, size=2)
        if rng.random() < 0.5:
            mask = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
        else:
            mask = (((rows - top - height / 2) / (height / 2)) ** 2
                    + ((cols - left - width / 2) / (width / 2)) ** 2) <= 1
        out.append(normalize_image(mask * 255.0))
    return np.stack(out)
