"""`digits serve` under load: single-image PNG requests to POST /v1/predict, 8 in flight.

Starts a `digits serve` process for each configuration in turn (A B C A B C ...: load on
this shared machine hits each alike), drives it with wrk for `--seconds`, and prints the
medians of req/s, p50 and p99 as a markdown table for benchmarks/results.md.

    python benchmarks/serve_load.py [--seconds 12] [--rounds 3] [--image canvas|digit]
                                    [--registry DIR] [--baseline CHECKOUT]

Configurations: `--workers 1` and `--workers 2`, both with --log-dir (metrics are always on),
and 2 workers without uvicorn's access log; --baseline adds an older checkout (say
`git worktree add /tmp/old COMMIT`) served with its own defaults and without uvloop and
httptools, as it was. Default: 3 configurations x 3 rounds x (3 s warm-up + 12 s of load +
~5 s start and stop) = about 3 minutes, plus about 40 s to build the registry (4 minutes with
--baseline). Three rounds, so that a run in which one worker accepted all 8 connections
(uvicorn's workers race to accept them) does not move the median. wrk (a C load generator,
`apt-get install wrk`) runs on the same machine as the server, with one thread: it took
about 0.5 % of the machine's CPU at 160 req/s (perf), so the figures are nearly the
server's alone.

The image (`--image canvas`, the default) is what the drawing page sends: a 280x280 RGBA
canvas PNG of a black stroke on white, posted as multipart field `file`; `--image digit` is
the tests' small grayscale digit (tests/helpers/serving.py digit_png, 120x160, a quarter of
the pixels and no alpha). Without --registry the registry is built in a
temporary folder: today's cnn architecture (the default model, same graph and size), trained
one epoch on generated digits and exported to ONNX through the flow's export path. Its
accuracy is meaningless; its cost per prediction is the production model's.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DIGITS = Path(sys.executable).with_name("digits")
BOUNDARY = "digitsbenchboundary"
STARTUP_S = 120
# wrk's script: POST the body file, and at the end print what we parse, as one JSON line
# (latency in microseconds).
WRK_SCRIPT = """
local file = io.open("{body}", "rb")
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "{content_type}"
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '\\nRESULT {{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"non_2xx": %d, "socket_errors": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
"""


def canvas_png() -> bytes:
    """A "7" as the drawing page sends it: canvas.toBlob of a 280x280 pad, white background,
    black strokes 18 px wide, RGBA."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (280, 280), (255, 255, 255, 255))
    ImageDraw.Draw(image).line(
        [(70, 60), (210, 60), (120, 230)], fill=(0, 0, 0, 255), width=18, joint="curve"
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def small_digit_png() -> bytes:
    sys.path.insert(0, str(ROOT))
    from tests.helpers.serving import digit_png

    return digit_png()


IMAGES = {"canvas": canvas_png, "digit": small_digit_png}


def multipart_body(png: bytes) -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
        f"filename=\"canvas.png\"\r\nContent-Type: image/png\r\n\r\n".encode()
        + png + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def build_registry(root: Path) -> None:
    """v1 in `root`, aliased production: the cnn, one epoch on generated digits, with the
    flow's exports (SavedModel, ONNX, parity check)."""
    from quick_cnn import train_quick_cnn

    core, images = train_quick_cnn()
    from digits.model.architectures import export_model
    from digits.model.export import export_candidate
    from digits.registry.layout import MODEL_FILE
    from digits.registry.store import Registry
    from tests.helpers.manifests import make_manifest

    with tempfile.TemporaryDirectory() as work:
        export_model(core).save(Path(work, MODEL_FILE))
        exports = export_candidate(Path(work), images)
        Registry(root).publish(Path(work), {**make_manifest(), "exports": exports})


@dataclass(frozen=True)
class Setup:
    name: str
    options: tuple[str, ...]  # `digits serve` options beside --port and --registry
    workers: int = 1
    source: Path = ROOT  # the checkout whose `digits` runs (--baseline: an older one)
    # Hide uvloop and httptools, as before they were dependencies (uvicorn then falls back
    # to asyncio's loop and h11).
    plain_uvicorn: bool = False


@dataclass(frozen=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float  # the server's CPU time (every process of it) per request


def setups(log_root: Path, baseline: Path | None) -> list[Setup]:
    chosen = [
        Setup("1 worker, log", ("--workers", "1", "--log-dir", str(log_root / "a"))),
        Setup("2 workers, log", ("--workers", "2", "--log-dir", str(log_root / "b")), 2),
        Setup("2 workers, log, no access log",
              ("--workers", "2", "--log-dir", str(log_root / "c"), "--no-access-log"), 2),
    ]
    if baseline:
        chosen.insert(0, Setup(f"baseline ({baseline.name}, its defaults, asyncio + h11)", (),
                               1, baseline, plain_uvicorn=True))
    return chosen


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(setup: Setup, registry: Path, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "digits", "serve", "--port", str(port),
               "--registry", str(registry), *setup.options]
    paths = [str(setup.source)]
    if setup.plain_uvicorn:
        hidden = log.parent / "hidden"
        hidden.mkdir(exist_ok=True)
        for name in ("uvloop", "httptools"):
            (hidden / f"{name}.py").write_text(f"raise ImportError('{name} hidden')\n")
        paths.insert(0, str(hidden))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=setup.source, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(url: str, process: subprocess.Popen, workers: int, log: Path) -> None:
    """Until every worker has the model: digits_model_info adds up to the workers."""
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"digits serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            text = httpx.get(f"{url}/metrics", timeout=5).text
            serving = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                          if line.startswith("digits_model_info{"))
            if serving >= workers:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    sys.exit(f"digits serve not ready in {STARTUP_S} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """The service and its workers: SIGTERM, then the whole group killed after 20 s."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system time of `pid` and its children (uvicorn's workers), alive or reaped."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for child in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15]) / ticks  # utime stime cutime cstime
    return total


def children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(child) for child in found]


def load(url: str, script: Path, seconds: int, connections: int) -> dict:
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
         f"{url}/v1/predict"], capture_output=True, text=True, check=True,
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    if result["non_2xx"] or result["socket_errors"]:
        sys.exit(f"wrk got errors: {result}\n{done.stdout}")
    return result


def measure(setup: Setup, registry: Path, script: Path, args, work: Path) -> Run:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = work / f"serve-{port}.log"
    process = start(setup, registry, port, log)
    try:
        wait_ready(url, process, setup.workers, log)
        load(url, script, args.warmup, args.connections)  # thread pools, caches: not measured
        before = cpu_seconds(process.pid)
        result = load(url, script, args.seconds, args.connections)
        used = cpu_seconds(process.pid) - before
    finally:
        stop(process)
    requests = result["requests"]
    return Run(requests / (result["duration_us"] / 1e6), result["p50_us"] / 1000,
               result["p99_us"] / 1000, used / requests * 1000)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return f"{os.cpu_count()} cores"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()


def report(runs: dict[str, list[Run]], first: str) -> None:
    print("| configuration | req/s | p50 | p99 | server CPU per request | runs (req/s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    medians = {}
    for name, measured in runs.items():
        rps = statistics.median(run.rps for run in measured)
        medians[name] = rps
        p50 = statistics.median(run.p50_ms for run in measured)
        p99 = statistics.median(run.p99_ms for run in measured)
        cpu = statistics.median(run.cpu_ms for run in measured)
        each = ", ".join(f"{run.rps:.0f}" for run in measured)
        print(f"| {name} | {rps:.0f} | {p50:.1f} ms | {p99:.1f} ms | {cpu:.2f} ms | {each} |")
    for name, rps in medians.items():
        if name != first:
            print(f"{name} / {first}: {rps / medians[first]:.2f}x req/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=12, help="measured load per run")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured load before each run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each configuration")
    parser.add_argument("--image", choices=sorted(IMAGES), default="canvas",
                        help="the PNG posted: the page's canvas, or the tests' small digit")
    parser.add_argument("--connections", type=int, default=8, help="requests in flight")
    parser.add_argument("--registry", type=Path, help="serve its production (default: build one)")
    parser.add_argument("--baseline", type=Path, help="also serve from this checkout of an older "
                        "commit, with its defaults (e.g. `git worktree add /tmp/old COMMIT`)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="serve-load-") as folder:
        work = Path(folder)
        registry = args.registry
        if registry is None:
            registry = work / "registry"
            build_registry(registry)
        body = work / "body.bin"
        body.write_bytes(multipart_body(IMAGES[args.image]()))
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT.format(
            body=body, content_type=f"multipart/form-data; boundary={BOUNDARY}"))
        chosen = setups(work / "logs", args.baseline)
        runs: dict[str, list[Run]] = {setup.name: [] for setup in chosen}
        print(f"{cpu_model()}; image {args.image}; {args.connections} in flight")
        print(f"before: {uptime()}")
        started = time.monotonic()
        for _ in range(args.rounds):
            for setup in chosen:
                run = measure(setup, registry, script, args, work)
                runs[setup.name].append(run)
                print(f"  {setup.name}: {run.rps:.0f} req/s, p50 {run.p50_ms:.1f} ms, "
                      f"p99 {run.p99_ms:.1f} ms, {run.cpu_ms:.2f} ms CPU/request", flush=True)
        print(f"after:  {uptime()} ({time.monotonic() - started:.0f} s of runs)")
    report(runs, chosen[0].name)


if __name__ == "__main__":
    main()
