"""The service's OpenAPI document (GET /openapi.json), true to what each route answers.

The routes read their bodies themselves, bounded and within a decode slot (digits.serving.
inputs and documents), so FastAPI sees no body to describe: a route declares its body with
`body(...)` (its `openapi_extra`, a schema of digits.serving.schemas) and the refusals it
answers with `errors(...)` (its `responses`), each in the one shape of every refusal,
{"error": "..."} (digits.serving.errors). `describe` adds what middleware answers around the
routes: a foreign Host (400), a cross-site write (403), a body over the limit (413),
FastAPI's own parameter check (422, answered in that shape too), and GET /metrics.
tests/integration/test_serve.py runs schemathesis on the document of a real `digits serve`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from digits.serving.schemas import COMPONENTS, JSON
from digits.serving.settings import DEFAULT_MAX_IMAGES

ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR = {
    "type": "object", "required": ["error"], "additionalProperties": False,
    "properties": {"error": {"type": "string", "description": "one line naming the problem"}},
}
WRITES = ("post", "put", "patch", "delete")
# What each refusal means, in every route's document; a route names the ones it answers.
REASONS = {
    400: "bad request: a Host this service does not answer to, content that is not what the "
         "route reads, or a version of the registry that is not the one served (the error "
         "names it)",
    401: "the Authorization header is not a valid bearer token",
    403: "a write from another site's page",
    404: "no such model, version, file or answer",
    409: "the service keeps no prediction log",
    413: f"over a limit: the body's bytes, {DEFAULT_MAX_IMAGES} images a request, an "
         "image's pixels",
    415: "a Content-Type or Content-Encoding the route does not read",
    422: "the content is well formed but not valid (the error names the field)",
    503: "no verified model in service yet, every decode slot busy (Retry-After), or the "
         "registry or log unreadable",
    507: "the log's room for labels awaiting export or review is full",
}
# A ref in a path: a version vN, or an alias name that is not v and digits
# (digits.registry.aliases.check_ref), without lookahead, which Hypothesis' regex
# strategies (schemathesis) cannot generate from.
REF_PATTERN = r"^(v[1-9][0-9]*|v|[a-uw-z][a-z0-9_-]*|v[0-9]*[a-z_-][a-z0-9_-]*)$"
# Path parameters' schemas by name: the routes take them as plain strings and answer a
# malformed one with their own 400.
PATH_PARAMETERS = {
    "ref": {"type": "string", "pattern": REF_PATTERN,
            "description": "a version (v3) or an alias (production)"},
    # digits.serving.versions: anything else is a 404 "versions are vN or N".
    "version": {"type": "string", "pattern": r"^v?[1-9][0-9]{0,8}$",
                "description": "the served version, as vN or N: another one is a 400 (in the "
                               "registry) or a 404"},
}
# --- declaring them -------------------------------------------------------------------


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's `responses`: each status it may refuse with, as {"error": "..."}."""
    return {status: {"description": REASONS[status], "content": {JSON: {"schema": ERROR_REF}}}
            for status in statuses}


def texts(*kinds: str, png: str | None = None) -> dict[str, Any]:
    """A response's content: text in each of `kinds` (parameters such as charset dropped),
    and a binary image of type `png`."""
    content: dict[str, Any] = {kind.split(";")[0]: {"schema": {"type": "string"}} for kind in kinds}
    if png:
        content[png] = {"schema": {"type": "string", "format": "binary"}}
    return content


def body(content: dict[str, dict[str, Any]], description: str = "",
         headers: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A route's `openapi_extra`: the body it reads itself, by media type -> schema (or a
    media type object, with "encoding"), and the optional `headers` that say how to read it,
    by name -> parameter object (schema, description)."""
    media = {kind: value if "schema" in value else {"schema": value}
             for kind, value in content.items()}
    request = {"required": True, "content": media}
    extra = {"requestBody": {**request, "description": description} if description else request}
    if headers:  # FastAPI adds these to the operation's own parameters
        extra["parameters"] = [{"name": name, "in": "header", "required": False, **parameter}
                               for name, parameter in headers.items()]
    return extra


def json_body(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return body({JSON: schema}, description)


def describe(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The app's `openapi`: FastAPI's document of the routes, completed once and kept."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, summary=app.summary,
                                   description=app.description, routes=app.routes,
                                   openapi_version=app.openapi_version)
            app.openapi_schema = complete(document)
        return app.openapi_schema

    return openapi


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with the middleware's answers on every operation, FastAPI's 422 in the
    service's error shape, the path parameters' and bodies' schemas and GET /metrics."""
    for operations in document["paths"].values():
        for method, operation in operations.items():
            add_middleware_refusals(method, operation["responses"])
            for parameter in operation.get("parameters", ()):
                if parameter["in"] == "path" and parameter["name"] in PATH_PARAMETERS:
                    parameter["schema"] = PATH_PARAMETERS[parameter["name"]]
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)  # answered as Error by the app's handler
    components.update({"Error": ERROR, **COMPONENTS})
    document["paths"]["/metrics"] = {"get": METRICS_OPERATION}
    return document


def add_middleware_refusals(method: str, responses: dict[str, Any]) -> None:
    """What HostCheck, SameOrigin and BodyLimit answer before a route runs; FastAPI's own
    422 (a parameter it could not convert) is answered as Error by the app's handler."""
    refusals = (400, 403, 413) if method in WRITES else (400,)
    for status, response in errors(*refusals).items():
        responses.setdefault(str(status), response)
    validation = responses.get("422", {}).get("content", {}).get(JSON, {})
    if validation.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
        responses["422"] = errors(422)[422]


METRICS_OPERATION = {
    "summary": "Metrics",
    "description": "Prometheus' text format: requests, latency, predictions, not a digit, "
                   "confidence, the model in service, alias swaps, the last drift verdict "
                   "(README, \"Monitoring\")",
    "operationId": "metrics",
    "responses": {
        "200": {"description": "the service's metrics",
                "content": {"text/plain": {"schema": {"type": "string"}}}},
        **{str(status): response for status, response in errors(400).items()},
    },
}
