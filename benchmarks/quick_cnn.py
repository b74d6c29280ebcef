"""The model the serving benchmarks load: the default cnn trained one epoch on 1,000
generated digits. Its speed is the real cnn's; its accuracy means nothing."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_quick_cnn():
    """(the trained core model, the 1,000 generated digits it saw), Keras loaded quietly."""
    sys.path.insert(0, str(ROOT))
    from digits.environment import default_environment

    default_environment()  # before Keras loads: TensorFlow reads its log level once
    import keras
    import numpy as np

    from digits.model.architectures import build_model
    from tests.helpers.synth import make_digits, make_prototypes

    images, labels = make_digits(1000, seed=1, prototypes=make_prototypes())
    keras.utils.set_random_seed(0)
    core = build_model("cnn", augment=True, seed=0)
    core.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    core.fit(images / 255, labels.astype(np.int64), epochs=1, verbose=0)
    return core, images
