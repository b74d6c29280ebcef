"""The service's OpenAPI document (GET /openapi.json; digits/serving/openapi.py) says what
the routes do: every body they read, every refusal in the one error shape, the page as HTML.
schemathesis checks the answers of a real `digits serve` against it
(tests/integration/test_serve.py); here, the document itself and its schemas."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from digits.errors import RegistryError
from digits.registry.aliases import check_ref
from digits.serving.app import create_app
from digits.serving.errors import ApiError
from digits.serving.mlflow_protocol import parse_invocation
from digits.serving.oip_request import HEADER_LENGTH, parse_infer
from digits.serving.openapi import REF_PATTERN
from digits.serving.tfserving import parse_predict
from tests.helpers.serving import mnist_like

ERROR = {"$ref": "#/components/schemas/Error"}


@pytest.fixture(scope="module")
def document(tmp_path_factory) -> dict:
    return create_app(tmp_path_factory.mktemp("openapi") / "registry").openapi()


def operations(document: dict):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def body_schema(document: dict, path: str, media: str = "application/json") -> Draft202012Validator:
    schema = document["paths"][path]["post"]["requestBody"]["content"][media]["schema"]
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator({"components": document["components"], **schema})


def test_every_write_declares_the_body_it_reads(document):
    writes = {name: operation for name, operation in operations(document)
              if name.startswith("POST")}
    assert set(writes) == {"POST /v1/predict", "POST /v1/feedback", "POST /invocations",
                           "POST /v2/models/{name}/infer",
                           "POST /v2/models/{name}/versions/{version}/infer",
                           "POST /v1/models/{name}:predict",
                           "POST /v1/models/{name}/versions/{version}:predict"}
    for name, operation in writes.items():
        assert operation["requestBody"]["required"] is True, name
    predict = writes["POST /v1/predict"]["requestBody"]["content"]
    assert set(predict) == {"application/json", "multipart/form-data"}
    for name in ("POST /v2/models/{name}/infer", "POST /v2/models/{name}/versions/{version}/infer"):
        infer = writes[name]
        assert set(infer["requestBody"]["content"]) == {"application/json",
                                                        "application/octet-stream"}
        header, = [p for p in infer["parameters"] if p["in"] == "header"]
        assert header["name"] == HEADER_LENGTH and header["required"] is False
        assert set(infer["responses"]["200"]["content"]) == {"application/json",
                                                             "application/octet-stream"}


def test_every_refusal_is_declared_in_the_one_error_shape(document):
    for name, operation in operations(document):
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")) and name != "GET /readyz":
                assert response["content"] == {"application/json": {"schema": ERROR}}, \
                    f"{name} {status}"
    assert "HTTPValidationError" not in str(document)
    assert document["components"]["schemas"]["Error"]["required"] == ["error"]


@pytest.mark.parametrize("name, statuses", [
    ("POST /v1/predict", {"200", "400", "403", "413", "415", "422", "503"}),
    ("POST /v2/models/{name}/infer", {"200", "400", "403", "404", "413", "415", "422", "503"}),
    ("POST /invocations", {"200", "400", "403", "413", "415", "503"}),
    ("POST /v1/feedback", {"200", "400", "401", "403", "404", "409", "413", "415", "422", "503",
                           "507"}),
    ("POST /v2/models/{name}/versions/{version}/infer",
     {"200", "400", "403", "404", "413", "415", "422", "503"}),
    ("GET /v2/models/{name}/versions/{version}/ready", {"200", "400", "404", "422", "503"}),
    ("GET /v2/models/{name}/config", {"200", "400", "404", "422", "503"}),
    ("GET /health", {"200", "400", "503"}),
    ("GET /version", {"200", "400"}),
    ("POST /v1/models/{name}:predict", {"200", "400", "403", "404", "413", "415", "422", "503"}),
    ("GET /v1/models/{name}/versions/{version}/metadata", {"200", "400", "404", "422", "503"}),
    ("GET /v1/registry/versions/{ref}", {"200", "400", "404", "422", "503"}),
    ("GET /healthz", {"200", "400"}),  # 400: a Host this service does not answer to
])
def test_each_route_declares_every_status_it_answers(document, name, statuses):
    assert set(dict(operations(document))[name]["responses"]) == statuses


def test_the_page_is_html_and_the_files_are_what_they_are(document):
    paths = document["paths"]
    assert set(paths["/"]["get"]["responses"]["200"]["content"]) == {"text/html"}
    assert set(paths["/static/{name}"]["get"]["responses"]["200"]["content"]) == {
        "text/html", "text/javascript", "text/css"}
    files = paths["/v1/registry/versions/{ref}/files/{name}"]["get"]["responses"]["200"]
    assert set(files["content"]) == {"text/markdown", "image/png"}
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert set(paths["/version"]["get"]["responses"]["200"]["content"]) == {"text/plain"}


def test_the_bodies_schemas_take_what_the_routes_take_and_refuse_the_rest(document):
    pixels = mnist_like(2).tolist()
    tensor = {"name": "images", "shape": [2, 28, 28], "datatype": "UINT8",
              "data": mnist_like(2).ravel().tolist()}
    cases = [
        ("/v1/predict", {"instances": pixels}, {"instances": [[[0] * 28] * 27]}),
        ("/v2/models/{name}/infer", {"inputs": [tensor], "outputs": [{"name": "digit"}]},
         {"inputs": [{**tensor, "shape": [2, 28, 27]}]}),
        ("/v2/models/{name}/infer", {"inputs": [{**tensor, "data": pixels}], "id": "a"},
         {"inputs": [{**tensor, "data": [[300]]}]}),
        ("/v1/feedback", {"id": "0" * 32, "label": 7}, {"id": "0" * 32, "label": 10}),
    ]
    for path, taken, refused in cases:
        validator = body_schema(document, path)
        assert validator.is_valid(taken), path
        assert not validator.is_valid(refused), path


IMAGES = mnist_like(2)
FLAT = IMAGES.reshape(2, 784)
COLUMNS = [f"pixel{i}" for i in range(784)]
TENSOR = {"name": "images", "shape": [2, 784], "datatype": "FP16", "data": FLAT.tolist()}
# Bodies of the protocols' routes: whether the document's schema takes each, and whether the
# route's own parser does, must agree.
BODIES = [
    ("/invocations", parse_invocation, [
        {"dataframe_split": {"columns": COLUMNS, "data": FLAT.tolist(), "index": [0, 1]}},
        {"dataframe_split": {"data": [[image] for image in IMAGES.tolist()]}, "params": {"k": 1}},
        {"dataframe_split": {"columns": ["image"], "data": [[row] for row in FLAT.tolist()]}},
        {"dataframe_records": [dict(zip(COLUMNS, row)) for row in FLAT.tolist()]},
        {"dataframe_records": [{"image": image} for image in IMAGES.tolist()]},
        {"instances": IMAGES.tolist()}, {"inputs": FLAT.tolist(), "params": {}},
        {"inputs": {"images": IMAGES.tolist()}},
        {"instances": [{"images": image} for image in FLAT.tolist()]},
    ], [
        {"instances": IMAGES.tolist(), "inputs": IMAGES.tolist()},
        {"dataframe_split": {"columns": ["a", "b"], "data": [[IMAGES[0].tolist()]]}},
        {"dataframe_split": {"data": []}}, {"dataframe_records": []},
        {"dataframe_records": [{"a": "x"}]}, {"instances": IMAGES.tolist(), "params": []},
        {"instances": [IMAGES[0].tolist(), FLAT[1].tolist()]},
        {"inputs": {"a": IMAGES.tolist(), "b": IMAGES.tolist()}}, {"params": {}},
    ]),
    ("/v1/models/{name}:predict", parse_predict, [
        {"instances": IMAGES.tolist(), "signature_name": "serving_default"},
        {"inputs": {"images": FLAT.tolist()}},
        {"instances": [{"images": IMAGES[0].tolist()}, IMAGES[1].tolist()]},
    ], [
        {"instances": IMAGES.tolist(), "signature_name": "predict"},
        {"instances": IMAGES.tolist(), "inputs": IMAGES.tolist()},
        {"instances": [IMAGES[0].tolist(), {"images": IMAGES[1].tolist()}]},
        {"instances": [[[0] * 28] * 27]}, {"inputs": []},
    ]),
    ("/v2/models/{name}/infer", lambda document, limit: parse_infer(document, b"", limit), [
        {"inputs": [TENSOR]}, {"inputs": [{**TENSOR, "parameters": None}], "outputs": None},
        {"inputs": [{**TENSOR, "shape": [2, 28, 28], "datatype": "UINT8",
                     "data": IMAGES.astype(int).tolist()}],
         "outputs": [{"name": "digit", "parameters": {"binary_data": True}}], "id": "a"},
    ], [
        {"inputs": [TENSOR, TENSOR]}, {"inputs": [{**TENSOR, "datatype": "BYTES"}]},
        {"inputs": [{**TENSOR, "shape": [2, 28, 27]}]}, {"inputs": [TENSOR], "id": 3},
        {"inputs": [TENSOR], "outputs": [{"name": "label"}]},
        {"inputs": [{**TENSOR, "parameters": False}]},
        {"inputs": [TENSOR], "parameters": {"binary_data_output": "yes"}},
    ]),
]


@pytest.mark.parametrize("path, parse, taken, refused", BODIES, ids=[b[0] for b in BODIES])
def test_the_protocols_schemas_and_their_parsers_agree(document, path, parse, taken, refused):
    validator = body_schema(document, path)
    for body in taken:
        assert validator.is_valid(body), body
        parse(body, 1000)
    for body in refused:
        assert not validator.is_valid(body), body
        with pytest.raises(ApiError):
            parse(body, 1000)


@pytest.mark.parametrize("ref", ["v1", "v12", "production", "staging-2", "v", "vx", "v1a",
                                 "v01", "v0", "V1", "1", "", "Prod", "-a", "v1/x", "a b", "_a"])
def test_the_documented_ref_pattern_is_the_registry_s_check(ref):
    import re

    try:
        check_ref(ref)
        valid = True
    except RegistryError:
        valid = False
    assert bool(re.fullmatch(REF_PATTERN, ref)) == valid


def test_readiness_is_declared_with_its_status_body_under_either_code(document):
    responses = document["paths"]["/readyz"]["get"]["responses"]
    schemas = [responses[status]["content"]["application/json"]["schema"]
               for status in ("200", "503")]
    assert schemas[0] == schemas[1] and schemas[0]["required"] == ["ready", "model", "problem",
                                                                     "log"]
