"""The protocols' pure parsing (digits.serving.oip_request, mlflow_protocol, tfserving): the
binary tensor data extension's split of a body, and the data frames and named tensors MLflow
and TF Serving clients send, each read into the same (N, 28, 28) images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from digits.serving.errors import ApiError
from digits.serving.mlflow_protocol import parse_invocation
from digits.serving.oip_request import Output, parse_infer_body, parse_outputs, split_body
from digits.serving.tfserving import parse_predict
from tests.helpers.serving import mnist_like

PIXELS = mnist_like(2, seed=3)
MAX = 10


def binary_request(values: np.ndarray, datatype: str, **document) -> tuple[bytes, int]:
    """A body as tritonclient sends a binary tensor: the JSON, then the values' bytes."""
    tensor = {"name": "images", "shape": [len(values), 28, 28], "datatype": datatype,
              "parameters": {"binary_data_size": values.nbytes}}
    header = json.dumps({"inputs": [tensor], **document}).encode()
    return header + values.tobytes(), len(header)


@pytest.mark.parametrize("dtype, datatype", [("<f4", "FP32"), ("u1", "UINT8"),
                                             ("<f8", "FP64"), ("<i8", "INT64")])
def test_a_binary_tensor_is_read_from_the_bytes_after_the_json(dtype, datatype):
    body, length = binary_request(PIXELS.astype(dtype), datatype)
    request = parse_infer_body(body, length, MAX)
    np.testing.assert_array_equal(request.batch, PIXELS.astype(np.float32))
    assert request.outputs == (Output("probabilities", False), Output("digit", False),
                               Output("not_a_digit", False))


def test_the_header_length_splits_the_body():
    assert split_body(b'{"a": 1}xyz', 8) == (b'{"a": 1}', b"xyz")
    assert split_body(b"{}", None) == (b"{}", b"")
    for length in (0, 12):
        with pytest.raises(ApiError, match="does not fit"):
            split_body(b'{"a": 1}xyz', length)


def inline_then_bytes() -> tuple[bytes, int]:
    header = json.dumps({"inputs": [{"name": "x", "shape": [1, 28, 28], "datatype": "UINT8",
                                     "data": [0] * 784}]}).encode()
    return header + b"\0", len(header)


BODY, LENGTH = binary_request(PIXELS.astype("<f4"), "FP32")  # 6272 bytes of pixels
BAD_BINARY = {
    "too few bytes": ((BODY[:-1], LENGTH), "binary_data_size is 6272 bytes but 6271"),
    "too many bytes": ((BODY + b"\0", LENGTH), "6273 follow"),
    "bytes after inline data": (inline_then_bytes(), "binary data but no input"),
    "no JSON at its length": ((BODY, LENGTH - 1), "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_BINARY))
def test_binary_data_that_does_not_add_up_is_a_400(case):
    (body, length), message = BAD_BINARY[case]
    with pytest.raises(ApiError, match=message) as error:
        parse_infer_body(body, length, MAX)
    assert error.value.status == 400


def test_binary_pixels_out_of_range_or_nan_are_refused():
    for bad in (np.full((1, 28, 28), np.nan, "<f4"), np.full((1, 28, 28), 300, "<f4")):
        body, length = binary_request(bad, "FP32")
        with pytest.raises(ApiError, match="0..255"):
            parse_infer_body(body, length, MAX)


def test_outputs_are_binary_where_asked():
    asked = {"parameters": {"binary_data_output": True},
             "outputs": [{"name": "digit"}, {"name": "probabilities",
                                             "parameters": {"binary_data": False}}]}
    assert parse_outputs(asked) == (Output("digit", True), Output("probabilities", False))
    assert parse_outputs({"parameters": {"binary_data_output": True}}) == (
        Output("probabilities", True), Output("digit", True), Output("not_a_digit", True))
    with pytest.raises(ApiError, match="classification"):
        parse_outputs({"outputs": [{"name": "digit", "parameters": {"classification": 3}}]})
    with pytest.raises(ApiError, match="true or false"):
        parse_outputs({"parameters": {"binary_data_output": "yes"}})


# --- MLflow's data frames and TF Serving's named tensors ----------------------------------

FLAT = PIXELS.reshape(2, 784).tolist()
COLUMNS = [f"pixel{i}" for i in range(784)]
SAME_IMAGES = {
    "dataframe_split, 784 columns": {"dataframe_split": {"columns": COLUMNS, "index": [0, 1],
                                                         "data": FLAT}},
    "dataframe_split, an image a cell": {
        "dataframe_split": {"columns": ["image"], "data": [[i] for i in PIXELS.tolist()]}},
    "dataframe_split, a flat image a cell": {"dataframe_split": {"data": [[row] for row in FLAT]}},
    "dataframe_records, 784 columns": {"dataframe_records": [dict(zip(COLUMNS, row))
                                                             for row in FLAT]},
    "dataframe_records, an image a cell": {"dataframe_records": [{"image": i}
                                                                 for i in PIXELS.tolist()]},
    "inputs, one named tensor": {"inputs": {"images": PIXELS.tolist()}},
    "inputs, flat images, with params": {"inputs": FLAT, "params": {"top_k": 3}},
    "instances, named": {"instances": [{"images": i} for i in PIXELS.tolist()]},
}


@pytest.mark.parametrize("case", sorted(SAME_IMAGES))
def test_mlflow_bodies_give_the_images(case):
    np.testing.assert_array_equal(parse_invocation(SAME_IMAGES[case], MAX), PIXELS)


def test_records_are_read_in_the_first_records_column_order():
    shuffled = [dict(reversed(list(dict(zip(COLUMNS, row)).items()))) for row in FLAT]
    shuffled[0] = dict(zip(COLUMNS, FLAT[0]))
    np.testing.assert_array_equal(parse_invocation({"dataframe_records": shuffled}, MAX), PIXELS)
    shuffled[1].pop("pixel3")
    with pytest.raises(ApiError, match=r"\[1\] has other columns"):
        parse_invocation({"dataframe_records": shuffled}, MAX)


@pytest.mark.parametrize("body, message", [
    ({"dataframe_split": {"columns": ["a"], "data": FLAT}}, "a value for each"),
    ({"dataframe_split": {"data": [[1, 2, 3]]}}, "rows of 784 pixel columns"),
    ({"dataframe_split": [FLAT]}, 'with "data"'),
    ({"dataframe_records": FLAT}, "list of objects"),
    ({"dataframe_split": {"data": FLAT * 6}}, "12 images: over the limit of 10"),
])
def test_bad_data_frames_are_a_400_naming_it(body, message):
    with pytest.raises(ApiError, match=message) as error:
        parse_invocation(body, MAX)
    assert error.value.status in (400, 413)


def test_tf_serving_rows_and_columns():
    assert parse_predict({"instances": FLAT}, MAX)[0] == "instances"
    key, batch = parse_predict({"signature_name": "serving_default",
                                "inputs": {"images": PIXELS.tolist()}}, MAX)
    assert key == "inputs"
    np.testing.assert_array_equal(batch, PIXELS)
    for body, message in [({"signature_name": "predict", "instances": FLAT}, "signature_name"),
                          ({"instances": FLAT, "inputs": FLAT}, "one of"),
                          ({"instances": [{"a": FLAT[0], "b": FLAT[0]}]}, "name one input")]:
        with pytest.raises(ApiError, match=message):
            parse_predict(body, MAX)
