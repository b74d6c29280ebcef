"""An Open Inference Protocol v2 inference request, as Triton's and KServe's clients send it:
JSON, or a JSON header followed by the tensors' raw bytes (the binary tensor data extension:
`Inference-Header-Content-Length` says where the JSON ends, each input's
`parameters.binary_data_size` how many bytes after it are its own).

One input tensor of shape [N, 28, 28] (or [N, 784]), pixels 0..255 in any numeric datatype;
bad content is a 400 naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from digits.config import IMAGE_SHAPE
from digits.serving.documents import check_count, check_pixels, parse_json, pixel_array
from digits.serving.errors import ApiError

HEADER_LENGTH = "Inference-Header-Content-Length"
# OIP's numeric datatypes as numpy reads their bytes: little-endian, as the protocol says.
DATATYPES = {
    "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}
OUTPUTS = ("probabilities", "digit", "not_a_digit")  # the model's outputs (digits.serving.oip)
OUTPUT_NAMES = ", ".join(repr(name) for name in OUTPUTS)
IMAGE_SIZE = math.prod(IMAGE_SHAPE)
SHAPES = f"[N, {IMAGE_SHAPE[0]}, {IMAGE_SHAPE[1]}] or [N, {IMAGE_SIZE}]"


@dataclass(frozen=True)
class Output:
    name: str
    binary: bool  # its data as raw bytes after the JSON, not in it


@dataclass(frozen=True)
class InferRequest:
    batch: np.ndarray  # (N, 28, 28) float32
    outputs: tuple[Output, ...]
    id: str | None


def header_length(value: str | None) -> int | None:
    """The JSON's length that the binary extension's header gives; None without one."""
    if value is None:
        return None
    if not value.strip().isdigit():
        raise ApiError(400, f"{HEADER_LENGTH} must be a number of bytes, got {value!r}")
    return int(value)


def split_body(body: bytes, json_length: int | None) -> tuple[bytes, bytes]:
    """The JSON part of a body and the raw tensor bytes after it."""
    if json_length is None:
        return body, b""
    if not 0 < json_length <= len(body):
        raise ApiError(400, f"{HEADER_LENGTH} {json_length} does not fit the body of "
                       f"{len(body)} bytes")
    return body[:json_length], body[json_length:]


def parse_infer_body(body: bytes, json_length: int | None, max_images: int) -> InferRequest:
    """An inference request's body, JSON alone or with binary tensor data after it."""
    text, binary = split_body(body, json_length)
    return parse_infer(parse_json(text, max_images), binary, max_images)


def parse_infer(document: Any, binary: bytes, max_images: int) -> InferRequest:
    """The request's one tensor of images (its data inline, or `binary` when it names its
    binary_data_size), the outputs it asks for and its id."""
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise ApiError(400, 'body must be an object with "inputs": [one tensor of images]')
    inputs = document["inputs"]
    if len(inputs) != 1:
        raise ApiError(400, f'"inputs" must hold one tensor (the images), got {len(inputs)}')
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise ApiError(400, 'inputs[0] must be an object with "name", "shape", "datatype" '
                       'and "data"')
    for key in ("name", "shape", "datatype"):
        if key not in tensor:
            raise ApiError(400, f'inputs[0] has no "{key}"')
    if not isinstance(tensor["name"], str):
        raise ApiError(400, 'inputs[0] "name" must be a string')
    shape = check_shape(tensor["shape"], max_images)
    data = read_tensor(tensor, binary, shape)
    return InferRequest(data.reshape(shape[0], *IMAGE_SHAPE), parse_outputs(document),
                        parse_id(document))


def check_shape(shape: Any, max_images: int) -> list[int]:
    valid = (isinstance(shape, list) and all(type(side) is int for side in shape)
             and tuple(shape[1:]) in (IMAGE_SHAPE, (IMAGE_SIZE,)) and shape[0] >= 1)
    if not valid:
        raise ApiError(400, f'inputs[0] "shape" must be {SHAPES} with N >= 1, got {shape!r}')
    check_count(shape[0], max_images)
    return shape


def read_tensor(tensor: dict, binary: bytes, shape: list[int]) -> np.ndarray:
    """The tensor's pixels as float32, from its "data" or from the binary part."""
    datatype = tensor["datatype"]
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise ApiError(400, f'inputs[0] "datatype" must be a numeric one ({", ".join(DATATYPES)}'
                       f"), got {datatype!r}")
    size = binary_size(tensor)
    if size is None:
        if binary:
            raise ApiError(400, f"{len(binary)} bytes of binary data but no input names "
                           '"binary_data_size" in its "parameters"')
        if "data" not in tensor:
            raise ApiError(400, 'inputs[0] has no "data" (nor "parameters": '
                           '{"binary_data_size": ...})')
        data = pixel_array(tensor["data"], 'inputs[0] "data"', 400,
                           integers=np.dtype(DATATYPES[datatype]).kind in "iu")
    else:
        if "data" in tensor:
            raise ApiError(400, 'inputs[0] has both "data" and a "binary_data_size"')
        data = binary_pixels(binary, size, DATATYPES[datatype])
    needed = math.prod(shape)
    if data.size != needed:
        raise ApiError(400, f"inputs[0] holds {data.size} values; shape {shape} needs {needed}")
    return data


def binary_size(tensor: dict) -> int | None:
    """The tensor's `binary_data_size` parameter: its bytes after the JSON; None if inline."""
    parameters = parameters_of(tensor, 'inputs[0] "parameters"')
    size = parameters.get("binary_data_size")
    if size is not None and (type(size) is not int or size < 0):
        raise ApiError(400, f'inputs[0] "binary_data_size" must be a number of bytes, got {size!r}')
    return size


def binary_pixels(binary: bytes, size: int, dtype: str) -> np.ndarray:
    """One tensor's raw little-endian values, which must be all of the binary part."""
    if size != len(binary):
        raise ApiError(400, f"inputs[0] binary_data_size is {size} bytes but {len(binary)} "
                       "follow the JSON")
    item = np.dtype(dtype).itemsize
    if size % item:
        raise ApiError(400, f"inputs[0]: {size} bytes are no whole number of {item}-byte values")
    return check_pixels(np.frombuffer(binary, dtype), "inputs[0] binary data", 400)


def parse_outputs(document: dict) -> tuple[Output, ...]:
    """The outputs a request asks for, by name (all of them when it names none), each as
    JSON or binary: an output's `binary_data` parameter, else the request's
    `binary_data_output`."""
    binary = parameter(document, "binary_data_output", '"parameters"')
    wanted = document.get("outputs")
    if wanted is None:
        return tuple(Output(name, binary) for name in OUTPUTS)
    if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
        raise ApiError(400, f'"outputs" must be a list of {{"name": one of {OUTPUT_NAMES}}}')
    outputs = []
    for index, output in enumerate(wanted):
        name = output.get("name")
        if name not in OUTPUTS:
            raise ApiError(400, f"unknown output {name!r}: the model answers {OUTPUT_NAMES}")
        own = parameter(output, "binary_data", f'outputs[{index}] "parameters"')
        parameters = parameters_of(output, f'outputs[{index}] "parameters"')
        if parameters.get("classification"):
            raise ApiError(400, "the classification extension is not supported: ask for "
                           f"{OUTPUT_NAMES}")
        outputs.append(Output(name, own if "binary_data" in parameters else binary))
    return tuple(outputs)


def parameter(holder: dict, name: str, where: str) -> bool:
    """A boolean parameter of a request or output; False when absent."""
    parameters = parameters_of(holder, where)
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(400, f'{where} "{name}" must be true or false, got {value!r}')
    return value


def parameters_of(holder: dict, where: str) -> dict:
    """The "parameters" object of a request, tensor or output: none if absent or null (as
    KServe's client may send it), a 400 if it is anything else but an object."""
    parameters = holder.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ApiError(400, f"{where} must be an object")
    return parameters


def parse_id(document: dict) -> str | None:
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ApiError(400, '"id" must be a string')
    return request_id
