"""The last verdict of `digits drift` on a prediction log, kept in the log's folder
(`drift.json`) for the service that writes the log: its /metrics shows it
(digits_drift_verdict), so a dashboard or an alert sees drift where it sees the traffic.

    {"verdict": "drift" | "no drift" | "not enough traffic", "images": N,
     "since": ISO time, "judged_at": ISO time, "failed": [statistic names]}

Written whole (beside the file, fsynced, moved into place): a scrape never reads half of
one. The standard library only: the service reads it at every scrape.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from digits.files import replace_synced
from digits.monitoring.records import format_time, now, parse_time

VERDICT_FILE = "drift.json"
DRIFT, NO_DRIFT, TOO_FEW = "drift", "no drift", "not enough traffic"
VERDICTS = (DRIFT, NO_DRIFT, TOO_FEW)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    verdict: str  # one of VERDICTS
    images: int
    judged_at: datetime


def write_verdict(folder: Path, payload: dict) -> None:
    """Keep `payload` (TrafficDrift.payload(): verdict, images, since, failed) as the log's
    last verdict, with the time it was judged."""
    document = {key: payload[key] for key in ("verdict", "images", "since", "failed")}
    data = json.dumps({**document, "judged_at": format_time(now())}, indent=2).encode()
    replace_synced(folder / VERDICT_FILE, data + b"\n")


def read_verdict(folder: Path) -> Verdict | None:
    """The log's last verdict; None before the first one, or for a file that does not
    hold one (logged: a scrape must answer all the same)."""
    path = folder / VERDICT_FILE
    try:
        document = json.loads(path.read_bytes())
        verdict = Verdict(document["verdict"], int(document["images"]),
                          parse_time(document["judged_at"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("%s: not a drift verdict (%s)", path, error)
        return None
    return verdict if verdict.verdict in VERDICTS else None
