"""The model in service: the version a ref points at, followed while the service runs.

A background thread re-reads aliases.json every `poll_s` seconds and swaps in a new target
only once it verified and answered a warm-up prediction. A target that fails keeps the old
model in service; /readyz and the log say why.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from digits.config import IMAGE_SHAPE, NUM_CLASSES
from digits.errors import RegistryError
from digits.registry.load import Predictor, load_predictor
from digits.registry.location import AnyRegistry
from digits.registry.objects import StoreUnavailable
from digits.serving.settings import MODEL_THREADS


def load_for_serving(ref: str, registry: AnyRegistry) -> Predictor:
    """A version as the HTTP service runs it: onnxruntime on MODEL_THREADS threads."""
    return load_predictor(ref, registry, threads=MODEL_THREADS)


KEEP_LOADED = 2  # the version in service and the one before it
RETRY_FAILED_S = 30.0  # a target that failed to load is retried this often, not every poll
# What a swap attempt came to (the service's /metrics counts them): in service, or refused
# with the old model kept. The first load counts; a target that did not change is no attempt.
SWAP_SUCCESS, SWAP_FAILURE = "success", "failure"

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    predictor: Predictor
    loaded_at: float  # time.time()


class ModelHolder:
    """The predictor in service for one ref, swapped only for a version that loaded."""

    def __init__(
        self,
        registry: AnyRegistry,
        ref: str,
        open_model: Callable[[str, AnyRegistry], Predictor] = load_for_serving,
        retry_failed_s: float = RETRY_FAILED_S,
        on_swap: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self.registry = registry
        self.ref = ref
        self.open_model = open_model
        self.retry_failed_s = retry_failed_s
        self.on_swap = on_swap  # called with SWAP_SUCCESS or SWAP_FAILURE
        self.loaded: Loaded | None = None  # replaced whole, so readers need no lock
        # Why the ref's target is not (yet) in service, as logged: with the registry's path.
        self.problem: str | None = "loading"
        self._failed: dict[str, float] = {}  # version -> when it last failed to load
        # The versions served last, kept loaded: a rollback then needs a verify, not a load
        # (loading a Keras-only version imports TensorFlow: seconds on a busy machine).
        self._recent: dict[str, Predictor] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        """Load the ref's current target if it changed; keep the old model when it fails."""
        try:
            target = self.registry.resolve(self.ref)
        except (RegistryError, StoreUnavailable) as error:  # the store may be unreachable
            self._report(f"cannot resolve {self.ref!r}: {error}")
            return
        if self.loaded and self.loaded.predictor.version == target:
            self.problem = None
            return
        failed_at = self._failed.get(target)
        if failed_at is not None and time.monotonic() - failed_at < self.retry_failed_s:
            return
        try:
            predictor = self._recent.get(target)
            if predictor:
                self.registry.verify(target)  # its files must still match, as when loaded
            else:
                predictor = self.open_model(target, self.registry)
                warm_up(predictor)
        except Exception as error:  # a bad version must never stop the service
            self._failed[target] = time.monotonic()
            self._report(f"{self.ref} -> {target} not loaded: {error}")
            self.on_swap(SWAP_FAILURE)
            return
        previous = self.loaded.predictor.version if self.loaded else None
        self.loaded = Loaded(predictor, time.time())
        self._remember(predictor)
        self._failed.pop(target, None)
        self.problem = None
        self.on_swap(SWAP_SUCCESS)
        log.info("serving %s (%s -> %s, was %s)", target, self.ref, target, previous or "none")

    def start(self, poll_s: float) -> None:
        self._thread = threading.Thread(
            target=self._follow, args=(poll_s,), name="digits-follow-alias", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def status(self) -> dict[str, Any]:
        loaded = self.loaded
        model = None
        if loaded:
            model = {
                "version": loaded.predictor.version,
                "ref": self.ref,
                "backend": loaded.predictor.backend,
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(loaded.loaded_at)),
            }
        return {"ready": loaded is not None, "model": model, "problem": self.public_problem()}

    def public_problem(self) -> str | None:
        return self.problem and hide_root(self.problem, self.registry.root)

    def _follow(self, poll_s: float) -> None:
        self.refresh()
        while not self._stop.wait(poll_s):
            self.refresh()

    def _remember(self, predictor: Predictor) -> None:
        recent = {v: p for v, p in self._recent.items() if v != predictor.version}
        recent[predictor.version] = predictor
        self._recent = dict(list(recent.items())[-KEEP_LOADED:])

    def _report(self, problem: str) -> None:
        serving = f"; still serving {self.loaded.predictor.version}" if self.loaded else ""
        if problem + serving != self.problem:  # once per new problem, not once per poll
            log.warning("%s%s", problem, serving)
        self.problem = problem + serving


def hide_root(text: str, root: Path) -> str:
    """`text` as an HTTP client may read it: files named inside the registry (v2/model.keras),
    never where the registry lives on the server; the log keeps the whole path."""
    inside = text.replace(f"{root}{os.sep}", "")
    return inside.replace(f"registry {root}", "the registry").replace(str(root), "the registry")


def warm_up(predictor: Predictor) -> None:
    """One prediction before serving: builds the graph and proves the model answers."""
    probabilities = np.asarray(predictor.predict(np.zeros((1, *IMAGE_SHAPE), np.float32)))
    if probabilities.shape != (1, NUM_CLASSES):
        raise RegistryError(
            f"{predictor.version}: model answers shape {probabilities.shape}, "
            f"expected (1, {NUM_CLASSES})"
        )
