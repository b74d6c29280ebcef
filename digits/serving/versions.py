"""The model and version a protocol request names, checked against the one in service.

The service serves one model, `digits`, at the version its ref points at. A request may name
that version as the registry does (`v3`) or as Triton and TF Serving number theirs (`3`);
another version of the registry is a 400 that says which one is served, one that is not in
the registry a 404.
"""

from __future__ import annotations

import re

from digits.errors import RegistryError
from digits.serving.errors import ApiError
from digits.serving.holder import Loaded
from digits.serving.scorer import Scorer

MODEL_NAME = "digits"  # the one model name protocol clients address
VERSION_RE = re.compile(r"v?([1-9][0-9]{0,8})")


def check_model(name: str, hint: str = "") -> None:
    if name != MODEL_NAME:
        raise ApiError(404, f"unknown model {name!r}: this service serves {MODEL_NAME!r}{hint}")


def served(scorer: Scorer, name: str, version: str = "", hint: str = "") -> Loaded:
    """The model in service for a request naming `name` and `version` ("": the served one)."""
    check_model(name, hint)
    loaded = scorer.loaded()
    serving = loaded.predictor.version
    if version in ("", serving, serving[1:]):
        return loaded
    match = VERSION_RE.fullmatch(version)
    if match is None:
        raise ApiError(404, f"unknown version {version!r}: versions are vN or N")
    wanted = f"v{match.group(1)}"
    try:
        scorer.holder.registry.resolve(wanted)
    except RegistryError:
        raise ApiError(404, f"unknown version {version!r}: the registry has no {wanted}; "
                       f"this service serves {serving}") from None
    raise ApiError(400, f"{wanted} is not served here: this service serves {serving} (its ref "
                   f"{scorer.holder.ref!r}); promote {wanted} or serve it with "
                   f"`digits serve --ref {wanted}`")
