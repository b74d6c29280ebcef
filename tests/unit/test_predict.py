"""Turning user images into MNIST-format input: size, polarity, centring, file errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from digits.data.images import load_image, load_inputs
from digits.data.normalize import (
    NOISE_FLOOR,
    center_of_mass,
    median,
    normalize_image,
    remove_shading,
    shift_whole,
)
from digits.errors import DataError, UsageError
from digits.registry.load import Predictor, predict_files

SIZES = [(28, 28), (100, 60), (300, 300)]  # (width, height)


def draw_digit(shape: str, size: tuple[int, int], dark_ink: bool = False) -> Image.Image:
    """A "1" (an off-centre bar) or a "0" (a ring), in grayscale, white ink unless dark_ink."""
    width, height = size
    ink, paper = (0, 255) if dark_ink else (255, 0)
    image = Image.new("L", size, paper)
    draw = ImageDraw.Draw(image)
    stroke = max(2, min(size) // 10)
    if shape == "1":
        left = width // 3  # off-centre, so centring has work to do
        draw.rectangle([left, height // 6, left + stroke, height * 5 // 6], fill=ink)
    else:
        draw.ellipse(
            [width // 5, height // 6, width * 4 // 5, height * 5 // 6], outline=ink, width=stroke
        )
    return image


def assert_mnist_like(digit: np.ndarray) -> None:
    assert digit.shape == (28, 28) and digit.dtype == np.uint8
    assert digit.max() >= 250, "ink reaches full brightness"
    border = np.concatenate([digit[0], digit[-1], digit[:, 0], digit[:, -1]])
    assert not border.any(), "background is black to the edge"
    rows, cols = np.nonzero(digit)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 <= 20, "digit fits the 20x20 box"
    assert np.allclose(ndimage.center_of_mass(digit.astype(float)), (14, 14), atol=1.0)


@pytest.mark.parametrize("shape", ["1", "0"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dark_ink", [False, True])
def test_normalize_any_size_and_polarity(shape, size, dark_ink):
    assert_mnist_like(normalize_image(np.asarray(draw_digit(shape, size, dark_ink))))


@pytest.mark.parametrize("size", SIZES)
def test_normalize_ignores_polarity(size):
    light = np.asarray(draw_digit("0", size))
    dark = np.asarray(draw_digit("0", size, dark_ink=True))
    difference = normalize_image(light).astype(int) - normalize_image(dark).astype(int)
    assert np.abs(difference).max() <= 2


def test_normalize_any_range_and_dtype():
    digit = np.asarray(draw_digit("0", (100, 60)))
    as_float = normalize_image(digit / 255.0)
    as_uint16 = normalize_image(digit.astype(np.uint16) * 257)
    assert np.abs(as_float.astype(int) - as_uint16.astype(int)).max() <= 1
    assert_mnist_like(as_float)


def test_normalize_leaves_mnist_format_alone():
    digit = normalize_image(np.asarray(draw_digit("0", (300, 300))))
    difference = np.abs(normalize_image(digit).astype(int) - digit.astype(int))
    assert difference.mean() < 2
    assert difference.max() <= NOISE_FLOOR * 255 + 1, "only sub-floor anti-aliasing is dropped"


def test_normalize_keeps_aspect_ratio():
    digit = normalize_image(np.asarray(draw_digit("1", (300, 300))))
    rows, cols = np.nonzero(digit)
    assert np.ptp(rows) + 1 == 20 and np.ptp(cols) + 1 < 10  # a tall thin bar stays tall and thin


def photographed(digit: Image.Image, light: str) -> np.ndarray:
    """`digit` (dark ink on white) as a photo of grey paper whose light falls off: across
    the page ("ramp") or towards its corners ("vignette"), in uint8 as a JPEG decodes."""
    height, width = digit.height, digit.width
    y, x = np.mgrid[-1 : 1 : height * 1j, -1 : 1 : width * 1j]
    shade = 35 * (x + 0.6 * y) if light == "ramp" else -45 * (x**2 + y**2)
    ink = 1 - np.asarray(digit, dtype=np.float64) / 255
    return np.clip(190 + shade - ink * 120, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("light", ["ramp", "vignette"])
@pytest.mark.parametrize("shape", ["1", "0"])
def test_normalize_reads_a_digit_through_uneven_light(light, shape):
    # Issue 30's photo set: with the paper's shading kept as ink, the crop took in the dark
    # side of the page and the digit came out small in a corner (half the photos misread).
    clean = draw_digit(shape, (300, 300), dark_ink=True)
    expected = normalize_image(np.asarray(clean))
    digit = normalize_image(photographed(clean, light))
    assert_mnist_like(digit)
    # The same digit, the same size, up to a whole pixel of centring (a ring's centre of
    # mass sits on a half pixel, which the light's last trace may round either way).
    moved = [np.roll(digit.astype(int), (dy, dx), axis=(0, 1))
             for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    assert min(np.abs(m - expected.astype(int)).mean() for m in moved) < 2


@pytest.mark.parametrize("size", SIZES)
def test_a_flat_page_reads_as_it_did_before_shading_was_removed(size):
    # Evenly lit paper (every MNIST digit, the page's canvas, a scan) takes the same path as
    # before, to the bit: only a page whose light changes by a tenth of its range is flattened.
    image = np.asarray(draw_digit("0", size, dark_ink=True))
    assert remove_shading(image) is image
    grey = np.clip(image.astype(np.float64) * 0.5 + 100, 0, 255).astype(np.uint8)
    assert remove_shading(grey) is grey


@pytest.mark.parametrize("image", [np.zeros((40, 40)), np.full((28, 28), 255, dtype=np.uint8)])
def test_normalize_refuses_blank(image):
    with pytest.raises(ValueError, match="blank"):
        normalize_image(image)


@pytest.mark.parametrize(
    "fmt, mode", [("PNG", "L"), ("PNG", "RGB"), ("PNG", "P"), ("JPEG", "L"), ("JPEG", "RGB")]
)
@pytest.mark.parametrize("dark_ink", [False, True])
def test_load_image_files(tmp_path, fmt, mode, dark_ink):
    path = tmp_path / f"digit.{fmt.lower()}"
    draw_digit("0", (100, 60), dark_ink).convert(mode).save(path, fmt)
    batch = load_image(path)
    assert batch.shape == (1, 28, 28) and batch.dtype == np.float32
    assert_mnist_like(batch[0].astype(np.uint8))


@pytest.mark.parametrize("stroke", [(0, 0, 0, 255), (255, 255, 255, 255)])
def test_load_transparent_png(tmp_path, stroke):
    """Canvas exports draw dark or light strokes on a transparent background."""
    image = Image.new("RGBA", (120, 120), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse([30, 20, 90, 100], outline=stroke, width=10)
    image.save(tmp_path / "canvas.png")
    assert_mnist_like(load_image(tmp_path / "canvas.png")[0].astype(np.uint8))


def test_load_npy_used_as_is(tmp_path):
    single = np.random.default_rng(0).integers(0, 256, (28, 28)).astype(np.uint8)
    np.save(tmp_path / "one.npy", single)
    np.save(tmp_path / "batch.npy", np.stack([single] * 3).astype(np.float64))
    assert np.array_equal(load_image(tmp_path / "one.npy"), single[None])
    assert load_image(tmp_path / "batch.npy").shape == (3, 28, 28)


def npy_claiming(path, shape, dtype="<f8"):
    """A .npy whose header claims `shape` and holds no data: a bomb if loaded blindly."""
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(
            file, {"descr": dtype, "fortran_order": False, "shape": shape})
    return path


def test_npy_claiming_a_billion_rows_is_refused_from_its_header(tmp_path):
    path = npy_claiming(tmp_path / "bomb.npy", (10**9, 28, 28))
    with pytest.raises(DataError, match=r"bomb\.npy: 1000000000 rows, over the limit of "
                                         r"\d+ rows$") as error:
        load_image(path)
    assert error.value.exit_code == 4


def test_npy_rows_are_bounded_across_all_inputs(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, 28, 28), np.uint8))
    np.save(tmp_path / "b.npy", np.zeros((3, 28, 28), np.uint8))
    assert load_inputs([tmp_path / "a.npy"], max_rows=5)[1].shape == (3, 28, 28)
    with pytest.raises(DataError, match=r"b\.npy: 3 rows, over the limit of 5 rows \(3 in the files before it\)"):
        load_inputs([tmp_path / "a.npy", tmp_path / "b.npy"], max_rows=5)


def test_a_truncated_npy_is_named(tmp_path):
    np.save(tmp_path / "cut.npy", np.zeros((3, 28, 28), np.uint8))
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) - 100])
    with pytest.raises(DataError, match=r"cut\.npy: truncated"):
        load_image(tmp_path / "cut.npy")


def write_bad_files(tmp_path):
    np.save(tmp_path / "wrong_shape.npy", np.zeros((27, 28)))
    np.save(tmp_path / "too_many_dims.npy", np.zeros((2, 1, 28, 28)))
    np.save(tmp_path / "out_of_range.npy", np.full((28, 28), 300.0))
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "garbage.npy").write_bytes(b"not numpy")
    (tmp_path / "random.png").write_bytes(np.random.default_rng(0).bytes(500))
    png = tmp_path / "whole.png"
    Image.effect_noise((100, 100), 64).save(png)  # noise: too big to fit in the first half
    (tmp_path / "truncated.png").write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    Image.new("L", (50, 50), 255).save(tmp_path / "blank.png")


@pytest.mark.parametrize(
    "name",
    [
        "wrong_shape.npy",
        "too_many_dims.npy",
        "out_of_range.npy",
        "notes.txt",
        "garbage.npy",
        "random.png",
        "truncated.png",
        "blank.png",
        "missing.png",
    ],
)
def test_bad_files_raise_data_error_naming_the_file(tmp_path, name):
    write_bad_files(tmp_path)
    with pytest.raises(DataError, match=name) as error:
        load_image(tmp_path / name)
    assert error.value.exit_code == 4
    assert "\n" not in str(error.value)


@pytest.fixture
def digit_files(tmp_path):
    draw_digit("1", (100, 60)).save(tmp_path / "one.png")
    draw_digit("0", (300, 300), dark_ink=True).convert("RGB").save(tmp_path / "zero.jpg")
    np.save(tmp_path / "batch.npy", np.zeros((3, 28, 28), dtype=np.uint8))
    return [tmp_path / "one.png", tmp_path / "zero.jpg", tmp_path / "batch.npy"]


def test_load_inputs_names_every_row(digit_files):
    names, batch = load_inputs(digit_files)
    assert names == ["one.png", "zero.jpg", "batch.npy[0]", "batch.npy[1]", "batch.npy[2]"]
    assert batch.shape == (5, 28, 28) and batch.dtype == np.float32


def test_load_inputs_needs_files():
    with pytest.raises(UsageError):
        load_inputs([])


@pytest.mark.slow  # builds a Keras model
def test_predict_files(digit_files):
    import keras

    # Weights that make the output depend on the input: a row-order, argmax or
    # probability mix-up in predict_files changes what it reports.
    model = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    rng = np.random.default_rng(0)
    model.layers[-1].set_weights([rng.normal(0, 0.5, (784, 10)), rng.normal(0, 1, 10)])
    names, batch = load_inputs(digit_files)
    # The rows differ, so each must get its own answer: the image files and the batch rows.
    batch[2:] = rng.integers(0, 256, (3, 28, 28))
    np.save(digit_files[2], batch[2:].astype(np.uint8))
    expected = model.predict(batch, verbose=0)
    assert len(set(expected.argmax(axis=1).tolist())) > 1, "rows must not all agree"

    predictor = Predictor("v1", "v1", "keras", lambda rows: model.predict(rows, verbose=0))
    predictions = predict_files(predictor, digit_files)

    assert [answer["file"] for answer in predictions] == names
    for answer, row in zip(predictions, expected):
        name, digit = answer["file"], answer["digit"]
        assert isinstance(digit, int) and digit == int(row.argmax()), name
        assert answer["probability"] == pytest.approx(float(row.max()), abs=1e-6), name
        assert answer["probabilities"] == pytest.approx(row.tolist(), abs=1e-6), name
        assert answer["not_a_digit"] is False, name  # a manifest without the rule


def test_centring_and_median_match_scipy_and_numpy_exactly():
    # digits.data.images does without scipy (a quarter second of every cold start); its two
    # helpers must give the same pixels scipy.ndimage gave, or predictions would drift.
    rng = np.random.default_rng(4)
    for _ in range(200):
        image = rng.random((28, 28)) * (rng.random((28, 28)) > 0.7)
        assert np.array_equal(center_of_mass(image), ndimage.center_of_mass(image))
        offset = rng.integers(-30, 31, 2).astype(float)
        expected = ndimage.shift(image, offset, order=0, mode="constant", cval=0.0)
        assert np.array_equal(shift_whole(image, offset), expected), offset
        border = image[rng.integers(0, 28, rng.integers(1, 120)), 0]
        assert median(border) == np.median(border)
