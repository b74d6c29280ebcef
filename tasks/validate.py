"""Validate tasks: run the Great Expectations suites (digits.checks.suites), publish the results
as artifacts whether they pass or fail, then stop the run on a failure."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from digits.config import ValidationConfig
from tasks import stage

# GX loads when a run validates, not with the flow module (tasks/train.py says why).
if TYPE_CHECKING:
    from digits.checks.suites import ValidationReport
    from digits.data.ingest import Dataset
    from digits.data.splits import Splits


def publish_artifacts(report: ValidationReport) -> None:
    verdict = "passed" if report.success else "FAILED"
    create_table_artifact(
        key=f"validation-{report.suite}",
        table=[{**result, "observed": str(result["observed"])} for result in report.results],
        description=f"Great Expectations, {report.suite} data: {verdict}",
    )
    create_markdown_artifact(
        key=f"validation-{report.suite}-docs",
        markdown=f"# Validation of the {report.suite} data {verdict}\n\n{report.summary()}\n\n"
        f"Great Expectations Data Docs: [{report.docs_path}]({report.docs_path.as_uri()})\n",
        description=f"Data Docs of the {report.suite} data validation",
    )


@stage("validate-raw")
def validate_raw(data: Dataset, config: ValidationConfig, docs_dir: Path) -> ValidationReport:
    from digits.checks.suites import raise_on_failure, validate_raw_data

    report = validate_raw_data(data, config, docs_dir)
    publish_artifacts(report)
    raise_on_failure(report)
    return report


@stage("validate-processed")
def validate_processed(
    splits: Splits, config: ValidationConfig, docs_dir: Path
) -> ValidationReport:
    from digits.checks.suites import raise_on_failure, validate_processed_data

    report = validate_processed_data(splits, config, docs_dir)
    publish_artifacts(report)
    raise_on_failure(report)
    return report
