"""The JSON Schemas of what the routes read, for the OpenAPI document (digits.serving.openapi).

Each is as strict as the route's own check wherever JSON Schema can say it, so that a
schema-valid request is taken and an invalid one refused; what it cannot say (a tensor's
shape agreeing with its data, a data frame's records having the same columns) is said in a
description, and named in tests/integration/schemathesis.toml. A limit on images is said,
not declared as maxItems: 1,000 images of JSON are over the body's byte limit already, so a
list at maxItems would be valid to the schema and refused (413).
"""

from __future__ import annotations

from typing import Any

from digits.config import IMAGE_SHAPE, NUM_CLASSES
from digits.serving.oip_request import DATATYPES, HEADER_LENGTH, IMAGE_SIZE, OUTPUTS
from digits.serving.settings import DEFAULT_MAX_IMAGES

JSON = "application/json"
BINARY = "application/octet-stream"
ROWS, COLUMNS = IMAGE_SHAPE
PIXEL = {"type": "number", "minimum": 0, "maximum": 255}
PROBABILITIES = {"type": "array", "minItems": NUM_CLASSES, "maxItems": NUM_CLASSES,
                 "items": {"type": "number", "minimum": 0, "maximum": 1}}
NOT_A_DIGIT = {"type": "boolean", "description": "the served version's rule flags the image as "
               "not a digit (its spread under the version's threshold); never for a "
               "version published without a rule"}
TF_SIGNATURE = "serving_default"  # digits.serving.tfserving.SIGNATURE (which imports this)


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def listed(items: dict[str, Any], description: str = "") -> dict[str, Any]:
    """A non-empty list of `items`, one per image."""
    schema = {"type": "array", "minItems": 1, "items": items}
    return {**schema, "description": description} if description else schema


def named(value: dict[str, Any]) -> dict[str, Any]:
    """{input name: value}: the model has one input, by whatever name."""
    return {"type": "object", "minProperties": 1, "maxProperties": 1,
            "additionalProperties": value}


def one_of_lists(*items: dict[str, Any], description: str) -> dict[str, Any]:
    """A list of images all of one form (numpy refuses a ragged batch: 400), each list
    `items`: a schema, or a pair of the first item's and the others'."""
    lists = [{"type": "array", "minItems": 1, "prefixItems": [item[0]], "items": item[1]}
             if isinstance(item, tuple) else listed(item) for item in items]
    return {"anyOf": lists,
            "description": f"{description} (at most {DEFAULT_MAX_IMAGES}: 413 beyond)"}


# Schemas the bodies refer to, added to the document's components.
COMPONENTS: dict[str, dict[str, Any]] = {
    "Image": {
        "description": f"{ROWS} rows of {COLUMNS} pixels, 0 (background) to 255 (ink), as MNIST",
        "type": "array", "minItems": ROWS, "maxItems": ROWS,
        "items": {"type": "array", "minItems": COLUMNS, "maxItems": COLUMNS, "items": PIXEL},
    },
    "FlatImage": {
        "description": f"an image's {IMAGE_SIZE} pixels 0..255, row-major",
        "type": "array", "minItems": IMAGE_SIZE, "maxItems": IMAGE_SIZE, "items": PIXEL,
    },
    "Pixels": {
        "description": "pixel values 0..255, flat or nested to any depth",
        "type": "array",
        "items": {"anyOf": [PIXEL, ref("Pixels")]},
    },
    # TF Serving's two formats, which MLflow's client sends for arrays and dicts too.
    # A first row of {name: image} makes every row either (digits.serving.tfserving).
    "Instances": one_of_lists(
        ref("Image"), ref("FlatImage"),
        *[(named(ref(image)), {"anyOf": [named(ref(image)), ref(image)]})
          for image in ("Image", "FlatImage")],
        description="the row format: each image, or {name: image}"),
    "Inputs": {"anyOf": [ref("Images"), named(ref("Images"))],
               "description": "the columnar format: the images, or {name: images}"},
    "Images": one_of_lists(ref("Image"), ref("FlatImage"), description="the images"),
}

# --- /v1/predict, /v1/feedback, /readyz ---------------------------------------------------

PREDICT_BODY = {
    JSON: {"type": "object", "required": ["instances"],
           "properties": {"instances": listed(ref("Image"), "the images, as pixel arrays "
                                              f"(at most {DEFAULT_MAX_IMAGES}: 413 beyond)")}},
    "multipart/form-data": {
        "schema": {"type": "object", "required": ["file"], "properties": {"file": {
            "type": "array", "minItems": 1, "description": "PNG or JPEG images, any size up "
            "to the pixel limit, either polarity", "items": {"type": "string", "format": "binary"},
        }}},
        "encoding": {"file": {"contentType": "image/png, image/jpeg"}},
    },
}
PREDICTION = {
    "type": "object", "required": ["digit", "probabilities", "not_a_digit"],
    "properties": {
        "digit": {"type": "integer", "minimum": 0, "maximum": NUM_CLASSES - 1},
        "probabilities": PROBABILITIES,
        "not_a_digit": NOT_A_DIGIT,
        "id": {"type": "string", "description": "the answer's id in the prediction log, for "
               "/v1/feedback (only when the service keeps a log)"},
    },
}
PREDICT_OK = {"description": "each image's answer, in the order sent", "content": {JSON: {
    "schema": {"type": "object", "required": ["model", "predictions"], "properties": {
        "model": {"type": "object", "required": ["version", "ref"],
                  "properties": {"version": {"type": "string"}, "ref": {"type": "string"}}},
        "predictions": {"type": "array", "minItems": 1, "items": PREDICTION},
    }}}}}
FEEDBACK_BODY = {
    "type": "object", "required": ["id", "label"], "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "description": "an answer's id (X-Request-ID, or each "
               "prediction's \"id\" from /v1/predict)"},
        "label": {"type": "integer", "minimum": 0, "maximum": 9},
    },
}
# GET /readyz answers its status with 200 or 503 alike (holder.status() and "log").
READY = {
    "type": "object", "required": ["ready", "model", "problem", "log"],
    "properties": {
        "ready": {"type": "boolean"},
        "model": {"type": ["object", "null"], "description": "version, ref, backend, loaded_at"},
        "problem": {"type": ["string", "null"], "description": "why the alias's target is not "
                    "served (the old model may still be)"},
        "log": {"type": "boolean", "description": "whether answers carry ids for /v1/feedback"},
    },
}
READY_RESPONSES = {
    status: {"description": description, "content": {JSON: {"schema": READY}}}
    for status, description in ((200, "a verified model is in service"),
                                (503, "no verified model in service yet: `problem` says why"))
}

# --- the Open Inference Protocol v2 (digits.serving.oip_request) ----------------------------

COUNT = {"type": "integer", "minimum": 1, "maximum": DEFAULT_MAX_IMAGES}
PARAMETERS = {"type": ["object", "null"]}  # KServe's client may send null for none
TENSOR = {
    "type": "object", "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"anyOf": [
            {"type": "array", "minItems": 3, "items": False,
             "prefixItems": [COUNT, {"const": ROWS}, {"const": COLUMNS}]},
            {"type": "array", "minItems": 2, "items": False,
             "prefixItems": [COUNT, {"const": IMAGE_SIZE}]},
        ]},
        "datatype": {"enum": list(DATATYPES)},
        "data": {**ref("Pixels"), "description": f"shape[0] x {IMAGE_SIZE} values, flat or "
                 "nested; integers for an integer datatype"},
        "parameters": {**PARAMETERS, "description": 'in a binary request, {"binary_data_size": '
                       'its bytes after the JSON} in place of "data"'},
    },
}
OUTPUT = {
    "type": "object", "required": ["name"],
    "properties": {
        "name": {"enum": list(OUTPUTS)},
        "parameters": {**PARAMETERS, "description": "binary_data: this output's data as raw "
                       "bytes after the JSON (the classification extension is refused)",
                       "properties": {"binary_data": {"type": "boolean"}}},
    },
}
INFER_REQUEST = {
    "type": "object", "required": ["inputs"],
    "properties": {
        "id": {"type": ["string", "null"], "description": "echoed in the answer"},
        "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": TENSOR},
        "outputs": {"type": ["array", "null"], "items": OUTPUT,
                    "description": "the outputs to answer (all of them if none is named)"},
        "parameters": {**PARAMETERS, "description": "binary_data_output: every output's data "
                       "as raw bytes after the JSON",
                       "properties": {"binary_data_output": {"type": "boolean"}}},
    },
}
INFER_BODY = {
    JSON: INFER_REQUEST,
    BINARY: {"type": "string", "format": "binary", "description": "the binary tensor data "
             f"extension: the JSON request, its length in bytes in {HEADER_LENGTH}, the "
             'tensor naming {"binary_data_size": N} in its "parameters" in place of "data", '
             "then the tensor's N bytes, little-endian"},
}
INFER_HEADERS = {HEADER_LENGTH: {
    "schema": {"type": "integer", "minimum": 1},
    "description": f"with {BINARY}: the length of the JSON that starts the body",
}}
INFER_ANSWER_HEADERS = {HEADER_LENGTH: {
    "schema": {"type": "integer", "minimum": 1},
    "description": f"with {BINARY}: the length of the JSON that starts the answer",
}}
INFER_OUTPUT = {
    "type": "object", "required": ["name", "datatype", "shape"],
    "properties": {"name": {"enum": list(OUTPUTS)},
                   "datatype": {"enum": ["FP32", "INT64", "BOOL"]}},
    "description": "probabilities (FP32 [N, 10]), digit (INT64 [N]) and not_a_digit (BOOL [N], "
                   "the served version's rule), each asked for or all; in binary, BOOL is one "
                   "byte an element",
}
INFER_ANSWER = {
    JSON: {"schema": {"type": "object", "required": ["model_name", "model_version", "outputs"],
                      "properties": {"outputs": {"type": "array", "items": INFER_OUTPUT}}}},
    BINARY: {"schema": {"type": "string", "format": "binary", "description": "the JSON answer "
             f"({HEADER_LENGTH} bytes), then the raw bytes of the outputs asked for in binary"}},
}

# --- MLflow's scoring protocol and TF Serving's predict ------------------------------------


def frame_split(row: dict[str, Any], columns: int) -> dict[str, Any]:
    """pandas' split orient, each row an image as `row`: "columns", if any, name each value."""
    return {"type": "object", "required": ["data"], "properties": {
        "data": listed(row), "index": {"description": "ignored"},
        "columns": {"type": ["array", "null"], "minItems": columns, "maxItems": columns},
    }}


RECORD = {
    "type": "object", "minProperties": 1,
    "additionalProperties": {"anyOf": [PIXEL, {"$ref": "#/components/schemas/Pixels"}]},
    "description": f"one image: {IMAGE_SIZE} pixel columns, {ROWS} columns of a row each, or "
                   "one column holding the image; every record has the first's columns",
}
DATAFRAME_SPLIT = {
    "anyOf": [frame_split(ref("FlatImage"), IMAGE_SIZE), frame_split(ref("Image"), ROWS),
              frame_split({"type": "array", "minItems": 1, "maxItems": 1, "items": ref("Image")},
                          1),
              frame_split({"type": "array", "minItems": 1, "maxItems": 1,
                           "items": ref("FlatImage")}, 1)],
    "description": "pandas' to_dict(orient='split'), a row per image: MLflow's default for a "
                   f"DataFrame (at most {DEFAULT_MAX_IMAGES} rows: 413 beyond)",
}
MLFLOW_INPUTS = {
    "dataframe_split": DATAFRAME_SPLIT,
    "dataframe_records": listed(RECORD, "pandas' to_dict(orient='records'), a record per image"),
    "instances": ref("Instances"),
    "inputs": ref("Inputs"),
}
INVOCATIONS_OK = {"description": "each image's probabilities, and beside them its flag",
                  "content": {JSON: {"schema": {
                      "type": "object", "required": ["predictions", "not_a_digit"],
                      "properties": {"predictions": {"type": "array", "items": PROBABILITIES},
                                     "not_a_digit": {"type": "array", "items": NOT_A_DIGIT}},
                  }}}}
INVOCATIONS_BODY = {"oneOf": [
    {"type": "object", "required": [key], "additionalProperties": False,
     "properties": {key: schema, "params": {"type": "object", "description": "accepted and "
                                            "ignored: the model takes no parameters"}}}
    for key, schema in MLFLOW_INPUTS.items()
]}
PREDICT_TF_BODY = {"oneOf": [
    {"type": "object", "required": [key], "additionalProperties": False,
     "properties": {key: ref(key.title()), "signature_name": {"const": TF_SIGNATURE}}}
    for key in ("instances", "inputs")
]}
