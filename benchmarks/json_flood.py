"""/healthz under a JSON flood (issue 28): two clients posting 2 MB bodies of empty lists.

The issue's repro: two clients posting `{"instances": [[], [], ...]}` (2 MB) to
/invocations or /v1/feedback took GET /healthz from 4 ms to 630-731 ms median, parsing
holding the interpreter ~0.3 s a body. This starts `digits serve --log-dir` from each
checkout in turn (A B A B ...: load on this shared machine hits each alike), samples
/healthz alone, then under each flood (two client processes, one request in flight each),
and prints the medians as a markdown table for benchmarks/results.md. A third flood is the
costliest body the container count lets through: 2 MB of fractions as one flat list (no
image shape: refused after parsing).

    python benchmarks/json_flood.py --baseline CHECKOUT [--seconds 10] [--rounds 3]
                                    [--registry DIR]
    python benchmarks/json_flood.py --parse-only

It first prints what parsing each kind of 2 MB body costs with Python's json and with
orjson (the fastest of 5 runs, alternating), the interpreter held throughout.

CHECKOUT is an older tree of the project (`git archive COMMIT | tar -x -C /tmp/old`),
served with the same interpreter. Default: 2 checkouts x 3 rounds x (~8 s start, 5 s quiet,
3 floods x 10 s) = about 5 minutes, plus ~1 minute to build the registry (serve_load.py's).
/healthz is sampled every 20 ms over one keep-alive connection; a sample is the wall time
of the request, so it includes this machine's other load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson
from serve_load import ROOT, build_registry, cpu_model, free_port, stop, uptime, wait_ready

EMPTY_LISTS = b'{"instances": [' + b"[], " * 499_990 + b"[]]}"  # 1,999,979 bytes, as the issue's
FRACTIONS = b'{"instances": [' + b"0.5, " * 399_990 + b"0.5]}"  # 1,999,970 bytes
# name -> (path, body)
FLOODS = {
    "/invocations": ("/invocations", EMPTY_LISTS),
    "/v1/feedback": ("/v1/feedback", EMPTY_LISTS),
    "/invocations, fractions": ("/invocations", FRACTIONS),
}
CLIENTS = 2
SAMPLE_EVERY_S = 0.02


@dataclass(frozen=True)
class Sampled:
    median_ms: float
    p90_ms: float
    max_ms: float


def flood(url: str, body: bytes, seconds: float, statuses: dict) -> None:
    """One client: post `body` back to back for `seconds`; count the answers by status."""
    deadline = time.monotonic() + seconds
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < deadline:
            status = client.post(url, content=body, headers=headers).status_code
            statuses[status] = statuses.get(status, 0) + 1


def sample(url: str, seconds: float) -> Sampled:
    times = []
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=30) as client:
        client.get(f"{url}/healthz")  # the connection, not measured
        while time.monotonic() < deadline:
            start = time.perf_counter()
            client.get(f"{url}/healthz").raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
            time.sleep(SAMPLE_EVERY_S)
    return Sampled(statistics.median(times), statistics.quantiles(times, n=10)[-1], max(times))


def under_flood(url: str, path: str, body: bytes, seconds: float) -> tuple[Sampled, dict]:
    with multiprocessing.Manager() as manager:
        statuses = [manager.dict() for _ in range(CLIENTS)]
        clients = [multiprocessing.Process(target=flood, args=(url + path, body, seconds + 1, s))
                   for s in statuses]
        for client in clients:
            client.start()
        time.sleep(1)  # both clients posting
        sampled = sample(url, seconds)
        for client in clients:
            client.join()
        answered: dict[int, int] = {}
        for counts in statuses:
            for status, count in counts.items():
                answered[status] = answered.get(status, 0) + count
    return sampled, answered


def parse_costs() -> None:
    """ms to parse 2 MB bodies: json.loads against orjson.loads, the best of 5, alternating."""
    pixels = json.dumps({"instances": np.random.default_rng(0).integers(
        0, 256, (550, 28, 28)).tolist()}).encode()
    bodies = {"empty lists": EMPTY_LISTS, "fractions": FRACTIONS,
              "integers 0": b'{"instances": [' + b"0," * 999_990 + b"0]}",
              "550 random images": pixels}
    print("| 2 MB body | json | orjson |")
    print("| --- | --- | --- |")
    for name, body in bodies.items():
        best = {"json": float("inf"), "orjson": float("inf")}
        for _ in range(5):
            for parser, loads in (("json", json.loads), ("orjson", orjson.loads)):
                start = time.perf_counter()
                loads(body)
                best[parser] = min(best[parser], time.perf_counter() - start)
        print(f"| {name} ({len(body)} bytes) | {best['json'] * 1000:.0f} ms | "
              f"{best['orjson'] * 1000:.0f} ms |")


def start(source: Path, registry: Path, port: int, logs: Path, out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "digits", "serve", "--port", str(port), "--registry",
               str(registry), "--log-dir", str(logs), "--no-access-log"]
    env = {**os.environ, "PYTHONPATH": str(source)}
    with out.open("ab") as handle:
        return subprocess.Popen(command, cwd=source, env=env, stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True)


def measure(source: Path, registry: Path, seconds: float, work: Path) -> dict[str, tuple]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = work / f"serve-{port}.log"
    process = start(source, registry, port, work / f"logs-{port}", out)
    try:
        wait_ready(url, process, 1, out)
        results = {"quiet": (sample(url, 5), {})}
        for name, (path, body) in FLOODS.items():
            results[name] = under_flood(url, path, body, seconds)
    finally:
        stop(process)
    return results


def report(runs: dict[str, list[dict]]) -> None:
    print("| checkout | /healthz | median | p90 | max | flood answers (status: count) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, measured in runs.items():
        for scenario in ("quiet", *FLOODS):
            taken = [run[scenario] for run in measured]
            median = statistics.median(s.median_ms for s, _ in taken)
            p90 = statistics.median(s.p90_ms for s, _ in taken)
            worst = max(s.max_ms for s, _ in taken)
            each = ", ".join(f"{s.median_ms:.1f}" for s, _ in taken)
            answers = {}
            for _, counts in taken:
                for status, count in counts.items():
                    answers[status] = answers.get(status, 0) + count
            label = "alone" if scenario == "quiet" else f"flood of {scenario}"
            print(f"| {name} | {label} | {median:.1f} ms ({each}) | {p90:.1f} ms | "
                  f"{worst:.0f} ms | {dict(sorted(answers.items())) or '-'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="an older checkout (required to serve)")
    parser.add_argument("--parse-only", action="store_true", help="only the parsing costs")
    parser.add_argument("--seconds", type=float, default=10, help="sampling under each flood")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--registry", type=Path, help="serve its production (default: build one)")
    args = parser.parse_args()
    print(f"{cpu_model()}; {uptime()}")
    parse_costs()
    if args.parse_only:
        return
    if args.baseline is None:
        parser.error("--baseline is required to serve")
    with tempfile.TemporaryDirectory(prefix="json-flood-") as folder:
        work = Path(folder)
        registry = args.registry
        if registry is None:
            registry = work / "registry"
            build_registry(registry)
        checkouts = {f"baseline ({args.baseline.name})": args.baseline, "this checkout": ROOT}
        runs: dict[str, list[dict]] = {name: [] for name in checkouts}
        print(f"{cpu_model()}; {CLIENTS} clients, bodies of {len(EMPTY_LISTS)} and "
              f"{len(FRACTIONS)} bytes")
        print(f"before: {uptime()}")
        started = time.monotonic()
        for _ in range(args.rounds):
            for name, source in checkouts.items():
                result = measure(source, registry, args.seconds, work)
                runs[name].append(result)
                summary = ", ".join(f"{scenario} {sampled.median_ms:.1f} ms"
                                    for scenario, (sampled, _) in result.items())
                print(f"  {name}: {summary}", flush=True)
        print(f"after:  {uptime()} ({time.monotonic() - started:.0f} s of runs)")
    report(runs)


if __name__ == "__main__":
    main()
