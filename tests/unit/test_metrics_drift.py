"""The last verdict of `digits drift` on the service's prediction log, kept in the log's
folder (digits.monitoring.verdict) and shown by the service's /metrics (digits_drift_*):
what a dashboard and an alert read beside the traffic."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from digits.monitoring.log import PredictionLog
from digits.monitoring.verdict import VERDICT_FILE, read_verdict, write_verdict
from digits.serving.app import create_app

DRIFTED = {"verdict": "drift", "images": 150, "since": "2026-01-01T00:00:00+00:00",
           "versions": {"v1": 150}, "failed": ["ink", "domain-auc"], "checks": {}}


def drift_samples(client: TestClient) -> dict[tuple[str, tuple], float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    families = {family.name: family for family in text_string_to_metric_families(answer.text)}
    names = ("digits_drift_verdict", "digits_drift_judged_timestamp_seconds",
             "digits_drift_images")
    assert set(names) <= set(families)  # declared, samples or not
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for name in names for sample in families[name].samples}


@pytest.fixture
def log_dir(tmp_path):
    folder = tmp_path / "log"
    PredictionLog(folder).close()  # a prediction log, as `digits serve --log-dir` makes
    return folder


@pytest.fixture
def client(tmp_path, log_dir):
    # No model needed: /metrics answers before one is loaded.
    with TestClient(create_app(tmp_path / "registry", log_dir=log_dir),
                    base_url="http://127.0.0.1:8000") as client:
        yield client


def test_the_metrics_show_the_last_verdict_from_the_log_folder(client, log_dir):
    assert drift_samples(client) == {}  # no verdict yet
    before = time.time()
    write_verdict(log_dir, DRIFTED)
    samples = drift_samples(client)

    assert {labels[0][1]: value for (name, labels), value in samples.items()
            if name == "digits_drift_verdict"} == {"drift": 1, "no drift": 0,
                                                   "not enough traffic": 0}
    assert samples[("digits_drift_images", ())] == 150
    judged = samples[("digits_drift_judged_timestamp_seconds", ())]
    assert before - 1 <= judged <= time.time() + 1

    write_verdict(log_dir, {**DRIFTED, "verdict": "no drift", "failed": []})
    assert drift_samples(client)[("digits_drift_verdict", (("verdict", "no drift"),))] == 1


def test_a_verdict_file_that_holds_none_is_no_verdict_and_the_scrape_answers(client, log_dir):
    (log_dir / VERDICT_FILE).write_text('{"verdict": "maybe"')
    assert drift_samples(client) == {}


def test_without_a_log_the_drift_metrics_are_declared_without_samples(tmp_path):
    with TestClient(create_app(tmp_path / "registry"), base_url="http://127.0.0.1:8000") as client:
        assert drift_samples(client) == {}


def test_the_verdict_is_kept_whole_and_read_back(log_dir):
    write_verdict(log_dir, DRIFTED)
    verdict = read_verdict(log_dir)

    assert (verdict.verdict, verdict.images) == ("drift", 150)
    assert abs((datetime.now(UTC) - verdict.judged_at).total_seconds()) < 5
    assert sorted(path.name for path in log_dir.iterdir() if "drift" in path.name) == [VERDICT_FILE]


def test_a_folder_without_a_verdict_has_none(tmp_path):
    assert read_verdict(tmp_path) is None
