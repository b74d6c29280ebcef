"""Loading a registry version's Keras model from the bytes whose checksum was verified."""

from __future__ import annotations

import tempfile
from pathlib import Path

from digits.config import PRODUCTION_ALIAS, registry_root
from digits.errors import RegistryError
from digits.files import sha256_bytes
from digits.registry.layout import MODEL_FILE
from digits.registry.store import Registry
from digits.registry.versions import verify_version


def load_keras(path: Path, sha256: str):
    """Load a .keras file with plain Keras in safe mode from exactly the bytes that match
    `sha256`: Keras opens what it is given by path, so it gets a private copy of the bytes
    checked here, never the registry's file (which may have changed since)."""
    data = path.read_bytes()
    if sha256_bytes(data) != sha256:
        raise RegistryError(f"{path}: changed since it was verified")
    import keras  # here, not at the top: reading a registry must not need TensorFlow

    with tempfile.TemporaryDirectory(prefix="digits-model-") as private:  # mode 0700
        copy = Path(private) / MODEL_FILE
        copy.write_bytes(data)
        return keras.saving.load_model(copy, safe_mode=True)


def load_model(ref: str = PRODUCTION_ALIAS, registry: Path | str | None = None):
    """Verify a registry version, then load the model.keras bytes verified, with plain Keras."""
    reg = Registry(registry_root(registry))
    version = reg.resolve(ref)
    manifest = verify_version(reg.root, version)
    return load_keras(reg.root / version / MODEL_FILE, manifest["files"][MODEL_FILE]["sha256"])


def load_production(registry: Path | str | None = None):
    """The production Keras model (verified), or None while the registry has none: what the
    batch checks and the drift of served traffic compare with."""
    reg = Registry(registry_root(registry))
    if PRODUCTION_ALIAS not in reg.aliases():
        return None
    return load_model(PRODUCTION_ALIAS, reg.root)
