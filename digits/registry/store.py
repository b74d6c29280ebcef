"""The model registry: immutable versions, atomic aliases, an append-only history.

`Registry` is the entry point (resolving refs and verifying: `reading`, which the S3
backend shares); beside it `layout` names every file, `versions` builds, reads and verifies
a version folder, `aliases` holds refs, aliases.json and history.jsonl, `lock` the write
lock, `manifest` the schema and the JSON, `card` each card.md, `load` loads a verified
version, and `digits.files` does the hashing and crash-safe writes. None needs Prefect. The
files are plain JSON, Markdown and SHA-256 sums checked against `manifest.schema.json`, so
a registry can be read without this code as well. The same registry on S3-compatible
storage is `remote.ObjectRegistry` (`location.open_registry`).
Layout (docs/architecture.md, "The registry"):

    <root>/v1/            model.keras  manifest.json  card.md  plots/*.png
    <root>/aliases.json   {"production": "v2"}
    <root>/history.jsonl  one JSON line per promotion, rollback and alias change

How it stays consistent with many writers and crashes at any instant is in
docs/architecture.md ("The registry"). In short: a version is built in `<root>/.tmp-<hex>/`
and renamed to `vN` under the write lock (`lock`; RegistryBusy after
`$DIGITS_LOCK_TIMEOUT`); an alias move commits as its history line, appended before
aliases.json is replaced, and the next writer replays a half-done one (`aliases`); readers
take no lock, list only `vN` folders and never look at dot-entries; the next writer sweeps
what crashed ones left (`Registry._clean_leftovers` says why that is safe).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from digits.config import PRODUCTION_ALIAS
from digits.environment import lock_timeout
from digits.errors import RegistryError
from digits.files import copy_hashed, owned_folder, sweep_abandoned
from digits.registry.aliases import (
    alias_targets,
    append_history,
    check_alias_name,
    move_alias,
    pending_moves,
    point_alias,
    read_aliases,
    read_history,
    repair_aliases,
)
from digits.registry.fetch import check_dest, fetch_version
from digits.registry.layout import (
    ALIAS_TEMP_PREFIX,
    ALIASES_FILE,
    BUILD_PREFIX,
    BUILD_RE,
    HISTORY_FILE,
)
from digits.registry.lock import hold_lock
from digits.registry.manifest import check_manifest, dump_json
from digits.registry.reading import RegistryReads
from digits.registry.versions import (
    finish_build,
    list_source_files,
    read_manifest,
    verify_version,
    version_names,
)


class Verdict(Protocol):
    """What `promote_if` needs of a rule's answer (`digits.registry.gate.Decision` is one):
    whether to promote; it must be a dataclass, recorded whole as the manifest's `gate`."""

    promote: bool


class Registry(RegistryReads):
    """One registry folder. Cheap to create; every call reads the disk afresh."""

    def __init__(self, root: Path | str, lock_timeout: float | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        # Seconds to wait for the write lock; None reads `$DIGITS_LOCK_TIMEOUT` when needed.
        self.lock_timeout = lock_timeout
        # Called at each publish step; the crash tests replace it to stop a writer mid-way.
        self._on_step: Callable[[str], None] = lambda step: None

    # --- reading -----------------------------------------------------------------

    def versions(self) -> list[dict]:
        """Every version's manifest plus `path` and `aliases`, oldest first."""
        by_version: dict[str, list[str]] = {}
        for alias, version in sorted(self.aliases().items()):
            by_version.setdefault(version, []).append(alias)
        return [
            {
                **read_manifest(self.root, name),
                "path": str(self.root / name),
                "aliases": by_version.get(name, []),
            }
            for name in version_names(self.root)
        ]

    def aliases(self) -> dict[str, str]:
        return read_aliases(self.root)

    def manifest(self, ref: str) -> dict:
        return read_manifest(self.root, self.resolve(ref))

    def history(self) -> list[dict]:
        return read_history(self.root)

    # --- integrity -------------------------------------------------------------

    def _exists(self, version: str) -> bool:
        return (self.root / version).is_dir()

    def _check_version(self, version: str) -> None:
        verify_version(self.root, version)

    def check_pending(self) -> None:
        """Refuse a registry whose aliases.json is behind history.jsonl: a move a stopped
        writer committed, which readers do not see until the next writer applies it."""
        moves = [
            f"{alias!r} is {seen} but {HISTORY_FILE} moved it to {committed}"
            for alias, (seen, committed) in pending_moves(self.root).items()
        ]
        if moves:
            raise RegistryError(
                f"{self.root / ALIASES_FILE}: {'; '.join(moves)} (a write was interrupted; "
                "the next registry write applies it)"
            )

    def fetch(self, ref: str, dest: Path) -> Path:
        """Verify a version, copy it into `dest` (new or empty), return `dest/model.keras`."""
        version = self.resolve(ref)
        dest = Path(dest).expanduser().resolve()
        if dest.is_relative_to(self.root):
            raise RegistryError(f"{dest}: fetch destination is inside the registry {self.root}")
        check_dest(dest)
        manifest = verify_version(self.root, version)
        return fetch_version(self.root / version, manifest, dest, self._on_step)

    def verified_folder(self, version: str) -> Path:
        """The folder of `version`, checked file by file: what loaders read."""
        verify_version(self.root, version)
        return self.root / version

    def read_file(self, version: str, name: str) -> bytes:
        """One file of a version as it is now (b"" if missing or a symlink): the caller
        checks it against the manifest."""
        path = self.root / version / name
        try:
            return b"" if path.is_symlink() else path.read_bytes()
        except OSError:
            return b""

    def names(self) -> list[str]:
        """The versions, oldest first, without reading their manifests."""
        return version_names(self.root)

    def leftovers(self) -> list[str]:
        """What stopped writers left: none to name here, the next writer sweeps it."""
        return []

    # --- writing ---------------------------------------------------------------

    def publish(
        self, source_dir: Path, manifest: dict, alias: str | None = PRODUCTION_ALIAS
    ) -> str:
        """Add every file of `source_dir` as the next version, point `alias` at it, return `vN`."""
        _, version = self._add_version(source_dir, manifest, alias, rule=None)
        return version

    def promote_if(
        self,
        source_dir: Path,
        manifest: dict,
        rule: Callable[[dict | None], Verdict],
        alias: str = PRODUCTION_ALIAS,
    ) -> tuple[Verdict, str | None]:
        """Gate and publish as one transaction: under the write lock, apply `rule` to the
        manifest `alias` points at now, and publish only if it says promote. Two runs racing
        therefore each compare with the production the other may just have replaced.
        Returns the decision and the new version (None when rejected: registry unchanged)."""
        return self._add_version(source_dir, manifest, alias, rule)

    def _add_version(
        self,
        source_dir: Path,
        manifest: dict,
        alias: str | None,
        rule: Callable[[dict | None], Verdict] | None,
    ) -> tuple[Verdict | None, str | None]:
        if alias is not None:
            check_alias_name(alias)
        sources = list_source_files(Path(source_dir))
        # Refuse what the schema refuses before touching the registry; checked as JSON
        # records it (numpy scalars become numbers), and unserialisable fields fail here.
        where = f"manifest to publish from {source_dir}"
        check_manifest(json.loads(dump_json(manifest)), where, run_fields=True)
        self.root.mkdir(parents=True, exist_ok=True)
        build = self.root / f"{BUILD_PREFIX}{uuid.uuid4().hex}"
        decision, version = None, None
        with owned_folder(build):
            build.mkdir()
            self._on_step("tmp-created")
            files = {name: copy_hashed(path, build / name) for name, path in sources.items()}
            self._on_step("files-copied")
            with self._locked():
                if rule is not None:
                    current = self.aliases().get(alias)
                    decision = rule(read_manifest(self.root, current) if current else None)
                    if not decision.promote:
                        return decision, None
                    manifest = {**manifest, "gate": asdict(decision)}
                version = finish_build(self.root, build, files, manifest, self._on_step)
                if alias is not None:
                    point_alias(self.root, alias, version, "promote", manifest, self._on_step)
                else:
                    entry = {"event": "publish", "version": version, "alias": None}
                    append_history(self.root, entry)
        return decision, version

    def set_alias(self, alias: str, ref: str, event: str = "promote") -> str:
        """Point `alias` at an existing, intact version (`digits promote REF`)."""
        check_alias_name(alias)
        with self._locked():
            version = self.resolve(ref)
            manifest = verify_version(self.root, version)
            point_alias(self.root, alias, version, event, manifest, self._on_step)
        return version

    def rollback(self, alias: str = PRODUCTION_ALIAS) -> str:
        """Move `alias` back to the target it had before its current one, per history."""
        check_alias_name(alias)
        with self._locked():
            current = self.aliases().get(alias)
            if current is None:
                raise RegistryError(f"alias {alias!r} is not set in {self.root / ALIASES_FILE}")
            targets = alias_targets(self.history(), alias)
            while targets and targets[-1] == current:
                targets.pop()
            if not targets:
                raise RegistryError(
                    f"{self.root / HISTORY_FILE}: no earlier {alias!r} target to roll back to"
                )
            previous = self.resolve(targets[-1])
            verify_version(self.root, previous)  # never roll production onto a damaged version
            entry = {"event": "rollback", "alias": alias, "from": current, "to": previous}
            move_alias(self.root, entry, self._on_step)
        return previous

    # --- internals -------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the write lock; first clear what crashed writers left and repair aliases.json."""
        if not self.root.is_dir():
            raise RegistryError(f"{self.root}: no registry here")
        timeout = lock_timeout() if self.lock_timeout is None else self.lock_timeout
        with hold_lock(self.root, timeout, self._on_step):
            self._clean_leftovers()
            repair_aliases(self.root, self._on_step)
            yield

    def _clean_leftovers(self) -> None:
        """Remove what crashed writers left. Call only while holding the registry lock.

        Alias temp files are written only under the registry lock, so any we find are dead.
        A build folder, though, is filled *before* its writer takes the registry lock, so
        age says nothing about whether it is in use (a slow copy may take an hour). Each
        builder instead holds `<build>.lock` (an flock, released by the kernel when the
        process dies) from before `mkdir` until after its folder is renamed or removed;
        if we can take that lock without waiting, nobody is building there. A builder
        unlinks its lock file while still holding it, and never takes it again, so a
        cleaner that then re-creates and removes the file steals nothing. `fetch` stages
        beside its destination the same way (`owned_folder`, swept by the next fetch).
        """
        for entry in list(self.root.iterdir()):
            if entry.name.startswith(ALIAS_TEMP_PREFIX):
                entry.unlink()
        sweep_abandoned(self.root, BUILD_RE)
