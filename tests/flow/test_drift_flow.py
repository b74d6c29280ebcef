"""`digits drift` and the drift flow on generated digits under the Prefect harness: a tiny
registry model answers images into a real prediction log, and the flow compares them with
the generated MNIST look-alike."""

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from digits.checks.drift import STATS
from digits.monitoring.log import PredictionLog
from digits.monitoring.verdict import read_verdict
from digits.registry.load import load_predictor
from digits.registry.store import Registry
from flows.drift import drift  # Prefect sets up its logging here, before Keras (see `service`)
from tests.helpers.processes import wait_for
from tests.helpers.serving import publish_model
from tests.helpers.synth import make_digits, make_prototypes, noise_images, write_dataset

LIKE_MNIST = 200  # images answered: over DriftChecks.min_images (100)


def save_sequential_model(path, seed):
    """A 784-10 softmax model with raw 0..255 input, Sequential as the registry's models are:
    digits.checks.drift.penultimate_features walks a Sequential's layers (a functional
    model's InputLayer takes no call)."""
    import keras

    keras.utils.set_random_seed(seed)
    keras.Sequential([keras.Input((28, 28)), keras.layers.Rescaling(1 / 255),
                      keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
                     ).save(path)
    return path


@pytest.fixture
def service(tmp_path):
    """A registry with a production model, MNIST look-alike IDX files, and `answer(images)`
    that has the model answer them into a prediction log, as `digits serve --log-dir` does.

    Keras loads here, outside any command: had Prefect not set up its logging yet (it does
    on `import prefect.main`, clearing the root logger's handlers), its first command would
    close absl's handler, whose stream is pytest's captured stderr."""
    registry = Registry(tmp_path / "registry")
    version = publish_model(registry, save_sequential_model(tmp_path / "tiny.keras", seed=0))
    predictor = load_predictor(version, registry)
    mnist = write_dataset(tmp_path / "mnist")
    folder = tmp_path / "log"

    def answer(images):
        with PredictionLog(folder) as log:
            log.record(version, "production", images, predictor.predict(images))
        return folder

    answer.options = ["--data-dir", mnist, "--registry", registry.root]
    answer.flow_params = {"data_dir": mnist, "registry": registry.root}
    return answer


def like_mnist(n=LIKE_MNIST):
    return make_digits(n, seed=7, prototypes=make_prototypes())[0]  # train used seed 1


def last_line(text):
    return text.strip().splitlines()[-1]


def drift_events(folder):
    event_filter = EventFilter(event=EventNameFilter(name=["digits.serving.drift"]),
                               resource=EventResourceFilter(id=[f"digits.serving.{folder}"]))
    with get_client(sync_client=True) as client:
        return client.read_events(filter=event_filter, limit=50).events


def artifacts_of(state):
    artifact_filter = ArtifactFilter(
        key=ArtifactFilterKey(any_=["serving-drift"]),
        flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=artifact_filter)


def test_traffic_like_mnist_is_no_drift_even_with_fail_on_drift(cli, service):
    folder = service(like_mnist())
    code, out, err = cli("drift", "--log-dir", folder, "--fail-on-drift", *service.options)
    assert code == 0, err
    line = last_line(out)
    assert line.startswith(f"no drift: {LIKE_MNIST} images answered since "), line
    assert line.endswith("all 8 statistics within their bounds")


def test_inverted_traffic_drifts_with_artifact_and_event(service):
    folder = service(255 - like_mnist())  # black digits on white: ink everywhere
    state = drift(log_dir=folder, **service.flow_params, return_state=True)
    report = state.result()
    assert state.is_completed() and report.verdict == "drift", state.message
    failed = {row.name for row in report.rows if not row.passed}
    assert {"ink", "intensity", "domain-auc"} <= failed, report.line()

    [artifact] = artifacts_of(state)
    table = "| statistic | served | reference | gap | bound | verdict | note |"
    assert table in artifact.data and f"**{report.line()}**" in artifact.data
    for name in (*STATS, "domain-auc", "class-shares", "confidence"):
        assert f"\n| {name} | " in artifact.data
    assert "| ink | " in artifact.data and "| DRIFT |" in artifact.data
    assert "![histograms](data:image/png;base64," in artifact.data

    [event] = wait_for(lambda: drift_events(folder), 30, "the digits.serving.drift event")
    assert event.payload["verdict"] == "drift" and event.payload["images"] == LIKE_MNIST
    assert event.payload["versions"] == {"v1": LIKE_MNIST}
    assert set(event.payload["failed"]) == failed
    assert event.payload["checks"]["ink"]["passed"] is False
    flow_run = f"prefect.flow-run.{state.state_details.flow_run_id}"
    assert flow_run in {related.id for related in event.related}
    assert read_verdict(folder).verdict == "drift"  # what the service's /metrics shows


def test_noise_with_fail_on_drift_exits_4_with_the_verdict(cli, service):
    folder = service(noise_images(150, seed=3))
    code, out, err = cli("drift", "--log-dir", folder, "--fail-on-drift", *service.options)
    assert code == 4, err
    assert last_line(out).startswith("drift: 150 images answered since "), out
    assert "domain-auc" in last_line(out)
    code, out, err = cli("drift", "--log-dir", folder, *service.options)  # reported, not failed
    assert code == 0, err
    assert last_line(out).startswith("drift: 150 images")


def test_too_little_traffic_is_not_judged(cli, service):
    folder = service(noise_images(10, seed=3))  # drifted, but too few to tell
    code, out, err = cli("drift", "--log-dir", folder, "--fail-on-drift", *service.options)
    assert code == 0, err
    assert last_line(out).startswith("not enough traffic: 10 images answered since ")
    assert last_line(out).endswith(", 100 needed to judge")
    [event] = wait_for(lambda: drift_events(folder), 30, "the digits.serving.drift event")
    assert event.payload["verdict"] == "not enough traffic" and event.payload["checks"] == {}


def test_since_leaves_out_earlier_answers(cli, service):
    folder = service(noise_images(150, seed=3))
    code, out, err = cli("drift", "--log-dir", folder, "--since", "2999-01-01",
                         *service.options)
    assert code == 0, err
    assert last_line(out) == ("not enough traffic: 0 images answered since 2999-01-01 00:00 UTC, "
                              "100 needed to judge")


def test_a_missing_log_is_a_data_error_before_prefect_starts(cli, tmp_path):
    code, _, err = cli("drift", "--log-dir", tmp_path / "nowhere")
    assert code == 4
    assert last_line(err) == f"error: prediction log {tmp_path / 'nowhere'} does not exist"


def test_no_log_and_a_bad_since_are_usage_errors(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("DIGITS_LOG_DIR", raising=False)
    code, _, err = cli("drift")
    assert code == 2 and "no prediction log: pass --log-dir DIR or set DIGITS_LOG_DIR" in err
    code, _, err = cli("drift", "--log-dir", tmp_path, "--since", "last tuesday")
    assert code == 2 and "--since 'last tuesday'" in err


def test_the_log_dir_defaults_to_digits_log_dir(cli, service, monkeypatch):
    """As on a worker running the daily deployment: no --log-dir, the environment's."""
    folder = service(like_mnist(20))
    monkeypatch.setenv("DIGITS_LOG_DIR", str(folder))
    state = drift(**service.flow_params, return_state=True)
    assert state.result().images == 20 and state.result().verdict == "not enough traffic"
