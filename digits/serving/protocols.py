"""The standard prediction protocols beside /v1/predict, answered by the same model through
the same `Scorer` (digits.serving.scorer), each as its real clients speak it:

- the Open Inference Protocol v2 on /v2 (KServe, Triton, Seldon clients): digits.serving.oip;
- MLflow's scoring server on /invocations, /ping, /health, /version:
  digits.serving.mlflow_protocol;
- TF Serving's REST API on /v1/models/digits: digits.serving.tfserving.

Bad content is a 400 {"error": ...} naming it, as each of them answers; the transport's
refusals (403, 413, 415, 503) are the service's own.
"""

from __future__ import annotations

from fastapi import FastAPI

from digits.serving.mlflow_protocol import add_mlflow_routes
from digits.serving.oip import add_oip_routes
from digits.serving.scorer import Scorer
from digits.serving.tfserving import add_tfserving_routes


def add_protocol_routes(app: FastAPI, scorer: Scorer) -> None:
    """Every protocol's routes, on the app itself: the metrics read each route's template
    from the app's routes."""
    add_oip_routes(app, scorer)
    add_mlflow_routes(app, scorer)
    add_tfserving_routes(app, scorer)
