"""Batches written straight into the store's layout (data/batches/<id>/), as `digits add`
leaves them, so the flow and `digits reproduce` can be tested without it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from digits.data.batches import BATCHES, QUARANTINE, batch_id, held_out_mask
from digits.data.check_record import stamped
from tests.helpers.synth import make_digits, make_prototypes


def write_batch(
    store: Path,
    images: np.ndarray,
    labels: np.ndarray,
    name: str = "batch",
    added_at: str = "2025-01-01T00:00:00Z",
    quarantined: bool = False,
) -> Path:
    """Store one batch as accepted (or quarantined), with the record of its checks that
    `store_batch` writes; return its folder (named by its id)."""
    images, labels = images.astype(np.uint8), labels.astype(np.uint8)
    ident = batch_id(images, labels)
    folder = Path(store) / (QUARANTINE if quarantined else BATCHES) / ident
    folder.mkdir(parents=True)
    np.save(folder / "images.npy", images)
    np.save(folder / "labels.npy", labels)
    status = "quarantined" if quarantined else "accepted"
    record = {"id": ident, "name": name, "rows": len(labels), "status": status,
              "added_at": added_at}
    (folder / "batch.json").write_text(json.dumps(stamped(folder, record)))
    return folder


def new_digits(n: int, seed: int, prototype_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Digits like tests.helpers.synth's (prototype_seed 0) or of another style (any other seed)."""
    return make_digits(n, seed, make_prototypes(prototype_seed))


def split_styles(
    n: int, train_style: int, held_out_style: int, seed: int = 7
) -> tuple[np.ndarray, np.ndarray]:
    """A batch whose train part is drawn in one style and its held-out part in another:
    a model trained on it has never seen the held-out style."""
    train_x, train_y = new_digits(4 * n, seed, train_style)
    held_x, held_y = new_digits(4 * n, seed + 1, held_out_style)
    keep_train, keep_held = ~held_out_mask(train_x), held_out_mask(held_x)
    images = np.concatenate([train_x[keep_train][: n - n // 5], held_x[keep_held][: n // 5]])
    labels = np.concatenate([train_y[keep_train][: n - n // 5], held_y[keep_held][: n // 5]])
    return images, labels


def generated_reference(config):
    """(Reference, its test images) for batches of generated digits: 1,200 train and 300 test
    digits in tests.helpers.synth's style, as the batch checks compare with MNIST."""
    from digits.checks.measure import reference_of

    prototypes = make_prototypes()
    train_x, train_y = make_digits(1200, 1, prototypes)
    test_x, _ = make_digits(300, 2, prototypes)
    return reference_of(train_x, train_y, test_x, [], config), test_x
