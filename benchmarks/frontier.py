"""Train candidate configs on all of MNIST, one seed at a time, and record test accuracy
against training time (issue 19's frontier).

Each run appends one JSON line to benchmarks/frontier.jsonl (candidate, overrides, seed,
accuracy, ECE, the not-a-digit rates, the other-writer sets' accuracy, training seconds,
epochs run, load average, CPU) and saves the exported model under data/frontier/
(git-ignored). The rates and sets are scored where their files are: `not_a_digit.py build`'s
data/not-a-digit.npz and `other_writers.py`'s data/other-writers/*.npz (issue 30).

Usage: python -m benchmarks.frontier CANDIDATE [--seeds 1 2 3] [--set key=value ...]
       python -m benchmarks.frontier --table   # the recorded runs, one markdown row a candidate
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "frontier.jsonl"
NOT_DIGITS = ROOT / "data" / "not-a-digit.npz"
OTHER_WRITERS = ROOT / "data" / "other-writers"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def parse_setting(text: str) -> tuple[str, object]:
    """key=value with the value as JSON (8, 0.1, true) or else as a string (onecycle)."""
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def test_trace(config, splits, accuracies: list[float]):
    """A callback appending the test accuracy of each epoch's weights, as the exported model
    would answer (shift average included), to `accuracies`: which epoch's weights win."""
    import keras

    from digits.model.architectures import average_shifts, export_model
    from digits.model.evaluate import score
    from digits.model.export import inference_model

    class TestTrace(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            model = average_shifts(inference_model(export_model(self.model)), config.test_shifts)
            probs = model.predict(splits.x_test * 255.0, batch_size=1024, verbose=0)
            accuracies.append(round(score(splits.y_test, probs).accuracy, 4))

    return TestTrace()


def run(name: str, seed: int, overrides: dict, splits, trace: bool = False) -> dict:
    import keras
    import tensorflow as tf

    from benchmarks.candidates import candidate_config
    from digits.model.evaluate import score
    from digits.model.train import fit_model

    config = candidate_config(name, seed=seed, **overrides)
    load_before = os.getloadavg()[0]
    by_epoch: list[float] = []
    trained = fit_model(
        splits, config, log=lambda line: print(f"  {name} s{seed} {line}", flush=True),
        callbacks=[test_trace(config, splits, by_epoch)] if trace else [],
    )
    probs = trained.model.predict(splits.x_test * 255.0, batch_size=1024, verbose=0)
    evaluation = score(splits.y_test, probs)

    def answer(images: np.ndarray) -> np.ndarray:  # raw pixels in, as the registry's model
        return trained.model.predict(images, batch_size=1024, verbose=0)

    folder = ROOT / "data" / "frontier"
    folder.mkdir(parents=True, exist_ok=True)
    trained.model.save(folder / f"{name}-s{seed}.keras")
    return {
        "candidate": name,
        "overrides": overrides,
        "seed": seed,
        "accuracy": round(evaluation.accuracy, 4),
        "ece": round(evaluation.ece, 4),
        **not_a_digit_rates(answer, probs, trained.not_a_digit),
        "other_writers": other_writers(answer),
        "train_seconds": round(trained.seconds, 1),
        "epochs_run": trained.epochs_run,
        "best_epoch": trained.best_epoch,
        "load": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpu": cpu_model(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        # TensorFlow's oneDNN kernels: off by default on CPUs without AVX-512 (issue 19).
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        **({"test_by_epoch": by_epoch, "val_by_epoch": [round(v, 4) for v in
            trained.history["val_accuracy"]]} if trace else {}),
    }


def not_a_digit_rates(answer, test_probs, rule: dict | None) -> dict:
    """Shares flagged by the run's own rule: of MNIST test, and of data/not-a-digit.npz's
    non-digits, with the latter also at the threshold of the rule's score that flags 1% of
    MNIST test."""
    from benchmarks.not_a_digit import flagged_at_one_percent
    from digits.model.not_a_digit import flags, score

    rates = {"test_flagged": round(float(flags(test_probs, rule).mean()), 4)}
    if NOT_DIGITS.exists():
        with np.load(NOT_DIGITS, allow_pickle=False) as data:
            others = answer(data["images"].astype(np.float32))
        rates["not_digits_flagged"] = round(float(flags(others, rule).mean()), 4)
        rates["not_digits_at_1pct"] = round(
            flagged_at_one_percent(score(test_probs, rule), score(others, rule)), 4)
    return rates


def other_writers(answer) -> dict[str, float]:
    """Accuracy on each data/other-writers/*.npz set (fonts, mouse) that has been built."""
    found = {}
    for path in sorted(OTHER_WRITERS.glob("*.npz")):
        with np.load(path, allow_pickle=False) as data:
            predicted = answer(data["images"].astype(np.float32)).argmax(axis=1)
            found[path.stem] = round(float(np.mean(predicted == data["labels"])), 4)
    return found


def flow_splits():
    """MNIST split as `digits run` splits it by default: 55,000 train, 5,000 validation
    (seed 42), whatever seed a candidate trains with."""
    from digits.data.ingest import load_mnist
    from digits.data.splits import preprocess_data

    return preprocess_data(load_mnist(None, ROOT / "data"), validation_size=5_000, seed=42)


def set_threads(threads: int | None) -> None:
    """One TensorFlow thread pool of `threads` (two runs side by side on 2 cores: 1 each)."""
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def record(row: dict) -> dict:
    """Append `row` to benchmarks/frontier.jsonl; return it."""
    with RESULTS.open("a") as out:
        out.write(json.dumps(row) + "\n")
    return row


def table(rows: list[dict]) -> str:
    """Per candidate and overrides: accuracy (mean, min-max), ECE, the not-a-digit rates
    and the other-writer sets (means over the seeds that recorded them), training minutes."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        key = row["candidate"] + "".join(f" {k}={v}" for k, v in sorted(row["overrides"].items()))
        groups.setdefault(key, []).append(row)
    lines = ["| candidate | seeds | accuracy mean (min-max) | ECE | test flagged | non-digits "
             "flagged (rule) | non-digits at 1% | fonts | mouse | training min, mean (range) "
             "| load | CPU |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    for key, runs in groups.items():
        accuracy = [r["accuracy"] for r in runs]
        minutes = [r["train_seconds"] / 60 for r in runs]
        loads = [x for r in runs for x in r["load"]]
        quality = [mean_of(runs, name) for name in
                   ("ece", "test_flagged", "not_digits_flagged", "not_digits_at_1pct")]
        writers = [mean_of([r.get("other_writers", {}) for r in runs], name)
                   for name in ("fonts", "mouse")]
        lines.append(
            f"| {key} | {', '.join(str(r['seed']) for r in runs)} |"
            f" {statistics.mean(accuracy):.4f} ({min(accuracy):.4f}-{max(accuracy):.4f}) |"
            f" {' | '.join(quality + writers)} |"
            f" {statistics.mean(minutes):.1f} ({min(minutes):.1f}-{max(minutes):.1f}) |"
            f" {min(loads):.1f}-{max(loads):.1f} | {', '.join(sorted({r['cpu'] for r in runs}))} |"
        )
    return "\n".join(lines)


def mean_of(rows: list[dict], name: str) -> str:
    """The mean of `name` over the rows that have it, 4 places; blank where none does."""
    values = [row[name] for row in rows if name in row]
    return f"{statistics.mean(values):.4f}" if values else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidate", nargs="?")
    parser.add_argument("--table", action="store_true", help="print the recorded runs and stop")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE", help="a TrainConfig override on top of the candidate")
    parser.add_argument("--threads", type=int, help="TensorFlow threads (two runs side by side: 1)")
    parser.add_argument("--trace", action="store_true",
                        help="also record every epoch's test and validation accuracy (slower)")
    args = parser.parse_args()
    if args.table:
        print(table([json.loads(line) for line in RESULTS.read_text().splitlines() if line]))
        return
    if not args.candidate:
        parser.error("name a candidate, or pass --table")

    overrides = dict(parse_setting(text) for text in args.settings)
    set_threads(args.threads)
    splits = flow_splits()
    for seed in args.seeds:
        started = time.perf_counter()
        row = record({**run(args.candidate, seed, overrides, splits, args.trace), "threads": args.threads})
        print(json.dumps(row), f"({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
