"""The ready-made monitoring (monitoring/: Prometheus rules, a Grafana dashboard) and
promtool, for the tests that check them.

promtool comes with Prometheus (Debian's `prometheus` package); without it the tests skip,
unless DIGITS_REQUIRE_PROMTOOL=1 (as .ci/run sets, after installing it), where a missing
promtool fails them instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.processes import REPO

MONITORING = REPO / "monitoring"
RULES = MONITORING / "prometheus" / "alerts.yml"
RULE_TESTS = MONITORING / "prometheus" / "alerts.test.yml"
CONFIG = MONITORING / "prometheus" / "prometheus.yml"
DASHBOARD = MONITORING / "grafana" / "digits-serve.json"
# Grafana's variables, as Prometheus would see them once Grafana substituted them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m"}
METRIC_NAME_RE = re.compile(r"\b(digits_[a-z_]+|up)\b(?!\s*\()")
# The samples each metric type's family writes (prometheus_client's text format).
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "info": ("_info",),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created")}
MISSING = ("promtool is not installed (Debian: apt-get install prometheus); "
           "DIGITS_REQUIRE_PROMTOOL=1 makes this a failure")


def promtool() -> str:
    path = shutil.which("promtool")
    if path:
        return path
    if os.environ.get("DIGITS_REQUIRE_PROMTOOL") == "1":
        pytest.fail(MISSING)
    pytest.skip(MISSING)


def run_promtool(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    """promtool ARGS; the test fails with its output unless it exits 0."""
    command = [promtool(), *map(str, args)]
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}{result.stderr}"
    return result


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the dashboard's panels, with Grafana's variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    for name, value in GRAFANA_VARIABLES.items():
        exprs = [expr.replace(name, value) for expr in exprs]
    return exprs


def rule_exprs() -> list[str]:
    import yaml

    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The metrics an expression selects: the service's (digits_*) and Prometheus' `up`."""
    return set(METRIC_NAME_RE.findall(expr))


def exposed_names(text: str) -> set[str]:
    """Every sample name a /metrics text can hold, its families' whether or not a labelled
    one has samples yet, and `up`, which Prometheus adds to each scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    names = {"up"}
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names
