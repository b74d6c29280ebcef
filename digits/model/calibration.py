"""Calibration: temperature scaling fitted on the validation split, carried in the graph.

Label smoothing caps the default model's confidence near 0.9 while it is right 99.5% of
the time, so its probabilities understate it; other settings overstate. One temperature
T, chosen to minimise the validation split's negative log-likelihood (Guo et al., 2017),
rescales every answer: softmax(log(p) / T). Softmax ignores a shift of its inputs, so
that is temperature scaling of the logits, done on the probabilities the model already
outputs; it works the same for an average of members or of shifted copies. Dividing by T
keeps every answer's order, so the digit, and the accuracy, never change.

`Temperature` (digits.model.layers) is the layer that applies it, last in the exported
model, so `.keras`, the SavedModel and the ONNX file carry the same T.
"""

from __future__ import annotations

import keras
import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from digits.model.layers import TINY, Temperature

# T is searched between these (log scale); a bound reached means the split says little.
TEMPERATURE_BOUNDS = (0.05, 20.0)


def scale(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """What `Temperature` computes, in NumPy (float64)."""
    return softmax(np.log(np.asarray(probabilities, np.float64) + TINY) / temperature, axis=1)


def nll(probabilities: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of `labels` under the probabilities scaled by T."""
    logits = np.log(np.asarray(probabilities, np.float64) + TINY) / temperature
    return float(-log_softmax(logits, axis=1)[np.arange(len(labels)), labels].mean())


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The T that minimises the NLL of `labels` (a bounded scalar search over log T)."""
    labels = np.asarray(labels, np.int64)
    low, high = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        lambda log_t: nll(probabilities, labels, float(np.exp(log_t))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def calibrate(
    model: keras.Model, probabilities: np.ndarray, labels: np.ndarray
) -> tuple[keras.Model, dict]:
    """`model` (raw pixels in, probabilities out) followed by the Temperature fitted on its
    `probabilities` for the validation split and their `labels`; with the fit's record."""
    temperature = fit_temperature(probabilities, labels)
    calibrated = keras.Sequential(
        [keras.Input(model.input_shape[1:], name="pixels"), model,
         Temperature(temperature, name="temperature")],
        name=model.name,
    )
    record = {
        "method": "temperature scaling",
        "temperature": temperature,
        "fitted_on": "validation",
        "rows": len(labels),
        "validation_nll": nll(probabilities, labels, 1.0),
        "validation_nll_calibrated": nll(probabilities, labels, temperature),
    }
    return calibrated, record


def uncalibrated(model: keras.Model) -> keras.Model:
    """The model `calibrate` wrapped, or `model` itself when it ends with no Temperature."""
    layers = getattr(model, "layers", [])
    if len(layers) == 2 and isinstance(layers[-1], Temperature):
        return layers[0]
    return model
