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
from digits.serving.openapi import REF_PATTERN
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
                           "POST /v2/models/{name}/infer"}
    for name, operation in writes.items():
        assert operation["requestBody"]["required"] is True, name
    predict = writes["POST /v1/predict"]["requestBody"]["content"]
    assert set(predict) == {"application/json", "multipart/form-data"}


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
        ("/invocations", {"inputs": pixels}, {"instances": pixels, "inputs": pixels}),
        ("/v1/feedback", {"id": "0" * 32, "label": 7}, {"id": "0" * 32, "label": 10}),
    ]
    for path, taken, refused in cases:
        validator = body_schema(document, path)
        assert validator.is_valid(taken), path
        assert not validator.is_valid(refused), path


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
