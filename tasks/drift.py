"""Drift tasks: read the prediction log, load MNIST, measure the traffic against it, publish."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from digits.checks.drift import reference_sample
from digits.checks.settings import BatchChecks
from digits.data.ingest import Dataset, load_mnist
from digits.environment import default_store_dir
from digits.monitoring.reader import read_log
from digits.monitoring.records import Logged
from digits.monitoring.traffic import (
    DriftChecks,
    Traffic,
    TrafficDrift,
    answers_by_version,
    compare,
    features_of,
    sample_rows,
    traffic_of,
    version_confidences,
)
from digits.monitoring.traffic_report import plot_traffic, render_markdown
from digits.monitoring.verdict import write_verdict
from digits.registry.load import load_production
from digits.registry.store import Registry
from tasks import stage

ARTIFACT_KEY = "serving-drift"


@stage("read-log")
def read_traffic(folder: Path, since: datetime) -> Logged:
    logged = read_log(folder, since)
    get_run_logger().info("%d images answered since %s in %s", len(logged), since, folder)
    return logged


@stage("load-reference")
def load_reference(data_dir: Path | None) -> Dataset:
    """MNIST (the pinned download, verified) or the IDX files in `data_dir`."""
    return load_mnist(data_dir, default_store_dir())


@stage("measure-drift")
def measure(logged: Logged, mnist: Dataset, registry: Registry, since: datetime,
            batch: BatchChecks, config: DriftChecks) -> tuple[TrafficDrift, Traffic]:
    """Every statistic of the traffic against MNIST, judged by the bounds."""
    versions = answers_by_version(logged.versions)
    confidences = version_confidences(registry, list(versions), mnist.test_images)
    images, _ = reference_sample(mnist.train_images, mnist.train_labels,
                                 batch.reference_rows)
    traffic = traffic_of(logged.images, logged.digits, logged.probabilities, logged.versions,
                         images, mnist.train_labels, confidences)
    features, on = features_of(load_production(registry))
    served = logged.images[sample_rows(len(logged), config.sample_rows)]
    report = compare(traffic, features(served), features(images), on, batch, config, since,
                     versions)
    get_run_logger().info(report.line())
    return report, traffic


@stage("publish-drift")
def publish(report: TrafficDrift, traffic: Traffic | None, folder: Path) -> None:
    """The `serving-drift` markdown artifact: verdict, table, histograms; and the verdict
    in the log's folder, where the service's /metrics shows it."""
    png = plot_traffic(traffic) if traffic is not None else None
    create_markdown_artifact(key=ARTIFACT_KEY, markdown=render_markdown(report, str(folder), png),
                             description=report.line())
    try:
        write_verdict(folder, report.payload())
    except OSError as error:  # a log folder this worker may only read: the artifact says it all
        get_run_logger().warning("could not keep the verdict in %s: %s", folder, error)
