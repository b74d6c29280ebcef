"""The single script `digits` started from, for timing comparisons.

Same model and training as the original (784-128 ReLU-10 softmax, Adam, 5 epochs,
batch 32); only the loader differs, since keras.datasets downloads from the internet:
it reads the verified IDX cache under data/ instead.
"""

import sys
from pathlib import Path

import keras
import numpy as np


def load(path: Path, offset: int) -> np.ndarray:
    return np.frombuffer(path.read_bytes(), dtype=np.uint8, offset=offset)


def main(data: Path = Path(sys.argv[1] if len(sys.argv) > 1 else "data")) -> None:
    x_train = load(data / "train-images-idx3-ubyte", 16).reshape(-1, 28, 28) / 255.0
    y_train = load(data / "train-labels-idx1-ubyte", 8)
    x_test = load(data / "t10k-images-idx3-ubyte", 16).reshape(-1, 28, 28) / 255.0
    y_test = load(data / "t10k-labels-idx1-ubyte", 8)

    model = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=5, batch_size=32, verbose=2)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
