"""Full runs of cnn layouts that are not `TrainConfig` options (issue 19's exploration):
the run goes through `fit_model` as any candidate's does, with the cnn builder swapped for
the layout named, and is recorded like benchmarks/frontier.py's runs.

Usage: python -m benchmarks.designs LAYOUT --seed 1 [--epochs 12] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def bodies():
    """Layer lists after the reshape to (28, 28, 1), by layout name, for width w, dropout d.

    lean: strided stem, a 3x3 at 14x14, a strided 3x3 to 7x7, a 3x3, a 1x1 head conv.
    lean7: strided stem, the strided 5x5 to 7x7, two 3x3 at 7x7, a 1x1 head conv.
    separable, separable48: the full stem's layout with every conv after the first
    depthwise-separable (width 32 or 48); timed only, too slow a step to train.
    """
    from keras import layers

    from digits.model.architectures import conv_block as block

    def separable(filters: int, kernel: int, strides: int = 1) -> list:
        return [layers.SeparableConv2D(filters, kernel, strides=strides, padding="same",
                                       use_bias=False),
                layers.BatchNormalization(momentum=0.9), layers.ReLU()]

    def sep_body(w, d):  # the full stem's resolutions, each conv after the first separable
        return [*block(w, 3), *separable(w, 5, 2), layers.Dropout(d),
                *separable(2 * w, 3), *separable(2 * w, 5, 2), layers.Dropout(d),
                *separable(4 * w, 3)]

    return {
        "separable": sep_body,
        "separable48": lambda w, d: sep_body(48, d),
        "lean": lambda w, d: [*block(w, 3, 2), *block(w, 3), layers.Dropout(d),
                              *block(2 * w, 3, 2), *block(2 * w, 3), layers.Dropout(d),
                              *block(4 * w, 1)],
        "lean7": lambda w, d: [*block(w, 3, 2), *block(w, 5, 2), layers.Dropout(d),
                               *block(2 * w, 3), *block(2 * w, 3), layers.Dropout(d),
                               *block(4 * w, 1)],
    }


def use_layout(name: str) -> None:
    """Make `build_model("cnn", ...)` build layout `name` (for this process only)."""
    import keras
    from keras import layers

    from digits.config import IMAGE_SHAPE, NUM_CLASSES
    from digits.model import architectures

    body = bodies()[name]

    def build(augment=True, seed=0, width=32, depth=2, dropout=0.1, augment_strength=1.0,
              stem="full"):
        return keras.Sequential([
            keras.Input(IMAGE_SHAPE),
            *architectures.augmentation(augment, seed, augment_strength),
            layers.Reshape((*IMAGE_SHAPE, 1)),
            *body(width, dropout),
            layers.GlobalAveragePooling2D(),
            layers.Dropout(2 * dropout),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ], name="cnn")

    architectures.BUILDERS["cnn"] = build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layout", choices=sorted(bodies()))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, help="TensorFlow threads (two runs side by side: 1)")
    args = parser.parse_args()

    from benchmarks import frontier

    frontier.set_threads(args.threads)
    from benchmarks.candidates import CANDIDATES

    use_layout(args.layout)
    name = f"{args.layout}-e{args.epochs}"
    CANDIDATES[name] = {"model": "cnn", "epochs": args.epochs}
    row = {**frontier.run(name, args.seed, {}, frontier.flow_splits()), "threads": args.threads}
    print(json.dumps(frontier.record(row)))


if __name__ == "__main__":
    main()
