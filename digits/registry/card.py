"""The model card: the `card.md` a person reads beside each registry version.

Everything in it comes from the manifest, which stays the record that tools check; the
card says what the model is, how good it is, what it was trained on, and how to use it.
It reads a manifest valid against `manifest.schema.json` (the registry checks that first),
so required fields are used as they are and only optional ones are looked up.
"""

from __future__ import annotations

import json

from digits.model.not_a_digit import MEANINGS

# The file names are digits.registry.layout's; the registry imports this module, not back.
RELIABILITY_PLOT = "plots/reliability.png"  # digits.model.evaluate.save_plots writes it
USAGE = """\
## How to use it

```python
import keras
import digits.model.layers  # registers digits' own layers (calibration, stroke width)
model = keras.saving.load_model("model.keras", safe_mode=True)
probabilities = model.predict(images)  # images: (N, 28, 28)
```

- Input: a batch shaped `(N, 28, 28)` of raw pixel values 0..255 (uint8 or float),
  white digit on black as MNIST stores it. Preprocessing is inside the model.
- Output: `(N, 10)` class probabilities; `probabilities.argmax(axis=1)` is the digit.
- Fetch it verified: `digits fetch {version} --dest DIR` checks every checksum first."""

EXPORTS_USAGE = """\
### Without Keras: the exports

```python
import onnxruntime
session = onnxruntime.InferenceSession("model.onnx")
probabilities = session.run(None, {{session.get_inputs()[0].name: images.astype("float32")}})[0]
```

`saved_model/` is the same graph for TensorFlow (`tf.saved_model.load("saved_model").serve(x)`)
or TF Serving. Each takes float32 and was checked against `model.keras` before promotion:

{table}"""


def render_card(manifest: dict) -> str:
    """Markdown for one version; `manifest` is a finished manifest (version, created_at)."""
    metrics = manifest["metrics"]
    gate = manifest.get("gate")
    gate = gate if isinstance(gate, dict) else {"decision": gate}
    sections = [
        _describe_model(manifest),
        USAGE.format(version=manifest["version"]),
        _render_exports(manifest.get("exports")),
        _render_metrics(metrics),
        _render_calibration(manifest),
        _render_not_a_digit(manifest.get("not_a_digit")),
        _render_fields("Promotion gate", {"threshold": manifest.get("threshold"), **gate}),
        _render_fields("Hyperparameters", manifest.get("hyperparameters")),
        _render_study(manifest.get("study")),
        _render_fields("Training data", manifest.get("data")),
        _render_fields("Environment", manifest.get("environment")),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _describe_model(manifest: dict) -> str:
    text = (
        f"# digits model {manifest['version']}\n\nAn MNIST handwritten-digit classifier "
        f"(architecture `{manifest['model']}`), published to the digits registry on "
        f"{manifest['created_at']}"
    )
    if manifest.get("flow_run_id"):
        text += f" by Prefect flow run `{manifest['flow_run_id']}`"
    text += f". Test accuracy: **{manifest['metrics']['accuracy']:.4f}**"
    return text + ". `manifest.json` beside this card lists every file with its SHA-256."


def _render_exports(exports: object) -> str:
    """How to run the ONNX and SavedModel exports, with their parity check; versions
    published before the exports have none, and their card says nothing about them."""
    if not isinstance(exports, dict) or not exports:
        return ""
    rows = [
        [name, record.get("file"), record.get("rows"), record.get("max_abs_diff")]
        for name, record in exports.items()
        if isinstance(record, dict)
    ]
    header = ["format", "file", "test digits, same digit", "max probability difference"]
    return EXPORTS_USAGE.format(table=_render_table(header, rows))


def _render_study(study: object) -> str:
    """For a model chosen by `digits tune`: its study, the best trial and how many ran
    (the trials themselves stay in manifest.json)."""
    if not isinstance(study, dict):
        return ""
    trials = study.get("trials")
    summary = {k: v for k, v in study.items() if k != "trials"}
    return _render_fields(
        "Tuning study (validation accuracy)",
        {**summary, "trials": len(trials) if isinstance(trials, list) else trials},
    )


def _render_metrics(metrics: dict) -> str:
    """Scalar metrics as fields, then one row per class (the confusion matrix stays in JSON)."""
    scalars = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    title = "Metrics (test split)"
    text = _render_fields(title, scalars) or f"## {title}\n\nnone recorded"
    per_class = metrics.get("per_class")
    rows = [r for r in per_class if isinstance(r, dict)] if isinstance(per_class, list) else []
    if rows:
        columns = list(dict.fromkeys(k for row in rows for k in row if k not in ("digit", "class")))
        table = [
            [row.get("digit", row.get("class", i)), *(row.get(c, "") for c in columns)]
            for i, row in enumerate(rows)
        ]
        text += "\n\n### Per class\n\n" + _render_table(["class", *columns], table)
    return text


def _render_calibration(manifest: dict) -> str:
    """The temperature and its fit, and where the reliability diagram is; empty for
    versions published before calibration."""
    text = _render_fields("Calibration", manifest.get("calibration"))
    if text and RELIABILITY_PLOT in manifest["files"]:
        text += f"\n\nReliability diagram, before and after: `{RELIABILITY_PLOT}`."
    return text


def _render_not_a_digit(rule: dict | None) -> str:
    """The rule's fields after what it measures: the table alone names a "spread"."""
    return _render_fields("Not a digit", rule, MEANINGS.get(rule["rule"], "") if rule else "")


def _render_fields(title: str, fields: object, intro: str = "") -> str:
    """A two-column section, nested dicts as dotted keys, after `intro` if given; empty
    when nothing is set."""
    flat = {k: v for k, v in _flatten(fields).items() if v is not None}
    if not flat:
        return ""
    return f"## {title}\n\n" + (f"{intro}\n\n" if intro else "") + _render_table(
        ["field", "value"], flat.items())


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(value, dict):
        return {} if value is None else {prefix[:-1] or "value": value}
    flat: dict[str, object] = {}
    for key, item in value.items():
        flat.update(_flatten(item, f"{prefix}{key}."))
    return flat


def _render_table(header: list[str], rows) -> str:
    cells = [[_format_cell(cell) for cell in row] for row in rows]
    lines = [header, ["---"] * len(header), *cells]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def _format_cell(value: object) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, list):
        text = json.dumps(value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")
