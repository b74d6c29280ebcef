"""The registry on disk: every file name of a version and of the registry root, in one place.

    <root>/vN/            model.keras  model.onnx  saved_model/  manifest.json  card.md  plots/*.png
    <root>/aliases.json   {"production": "v2"}
    <root>/history.jsonl  one JSON line per promotion, rollback and alias change
    <root>/.lock          the write lock; `.lock.holder` beside it says who holds it
"""

from __future__ import annotations

import re

# --- a version ---------------------------------------------------------------------

MODEL_FILE = "model.keras"
MANIFEST_FILE = "manifest.json"
CARD_FILE = "card.md"
# Exports beside model.keras (digits.model.export writes them, digits.registry.load reads them).
ONNX_FILE = "model.onnx"
SAVED_MODEL_DIR = "saved_model"

# --- the registry root -------------------------------------------------------------

ALIASES_FILE = "aliases.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".lock"
HOLDER_FILE = ".lock.holder"  # who holds `.lock`: written after taking it, removed before release
BUILD_PREFIX = ".tmp-"  # a version being built; its owner holds `<name>.lock`
ALIAS_TEMP_PREFIX = ".aliases-"  # aliases.json being replaced (only ever under the lock)
FETCH_PREFIX = ".fetch-"  # a fetch being staged beside --dest; its owner holds `<name>.lock`
# Names are matched whole (`fullmatch`: `$` would let a trailing newline through).
# Everything dot-named in the root is ours; beside --dest only our uuid-hex names with
# their `.lock` beside them are (a user's own `.fetch-x` folder is not).
BUILD_RE = re.compile(rf"{re.escape(BUILD_PREFIX)}.+", re.DOTALL)
FETCH_RE = re.compile(rf"{re.escape(FETCH_PREFIX)}[0-9a-f]{{32}}")
