"""The model registry: immutable versions, atomic aliases, an append-only history.

A plain library (no Prefect, Keras only inside `load_model`), so anyone can read a
registry with nothing but this file and `digits/card.py`, which renders each `card.md`.
Layout (docs/architecture.md, "The registry"):

    <root>/v1/            model.keras  manifest.json  card.md  plots/*.png
    <root>/aliases.json   {"production": "v2"}
    <root>/history.jsonl  one JSON line per promotion, rollback and alias change

How it stays consistent with many writers and crashes at any instant:

- A version is built in `<root>/.tmp-<hex>/` and `os.rename`d to `vN` under the registry
  lock (`<root>/.lock`), so `vN` is allocated once and readers see all of it or nothing.
- Every write (publish, promote, rollback) holds `.lock`; `.lock.holder` beside it says
  who (pid, host, command, since), so a writer waiting for it can say whom it waits on.
  Waiting ends after `$DIGITS_LOCK_TIMEOUT` seconds with RegistryBusy: busy, not corrupt.
- One commit point for alias moves: the history line. A promote or rollback appends its
  line to `history.jsonl` (fsynced) first, then replaces `aliases.json` (write-temp,
  fsync, `os.replace`). A writer killed in between leaves aliases.json one move behind
  its history; the next writer, on taking the lock, replays the history's last move of
  each alias onto aliases.json before doing anything else. History, not aliases.json, is
  the record because replaying a logged move forward is unambiguous, while a move seen
  only in aliases.json could have been a promote or a rollback, and rollback would then
  guess (the old order let the next rollback move forward). Readers take no lock and
  read aliases.json as it is, so until that repair they see the alias before the move.
- Readers list only `vN` folders and never look at dot-entries.
- Leftovers of crashed writers are removed by the next writer, holding the lock (see
  `Registry._clean_leftovers` for why that is safe while other builds are in flight);
  a killed fetch's `.fetch-<hex>` staging beside `--dest` is swept by the next fetch there.
- A version holds only plain files and folders: a symlink anywhere fails verification.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from filelock import FileLock, Timeout

from digits.registry.card import render_card
from digits.config import PRODUCTION_ALIAS, lock_timeout, registry_root
from digits.errors import RegistryBusy, RegistryError
from digits.registry.gate import Decision
from digits.registry.manifest import check_manifest
from digits.files import owned_folder, sweep_abandoned

MODEL_FILE = "model.keras"
MANIFEST_FILE = "manifest.json"
CARD_FILE = "card.md"
ALIASES_FILE = "aliases.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".lock"
HOLDER_FILE = ".lock.holder"  # who holds `.lock`: written after taking it, removed before release
BUILD_PREFIX = ".tmp-"  # a version being built; its owner holds `<name>.lock`
ALIAS_TEMP_PREFIX = ".aliases-"  # aliases.json being replaced (only ever under the lock)
DIGEST_KEY = "manifest_sha256"  # the manifest's own checksum: the one file `files` cannot list
FETCH_PREFIX = ".fetch-"  # a fetch being staged beside --dest; its owner holds `<name>.lock`
# Everything dot-named in the root is ours; beside --dest only our own names are: uuid hex,
# or the 8 characters of `tempfile` that fetch used before it held a lock.
BUILD_RE = re.compile(rf"^{re.escape(BUILD_PREFIX)}.+$")
FETCH_RE = re.compile(rf"^{re.escape(FETCH_PREFIX)}([0-9a-f]{{32}}|[a-z0-9_]{{8}})$")
LOCK_REPORT_EVERY_S = 30.0  # how often a writer waiting for the registry lock says so

log = logging.getLogger(__name__)

VERSION_RE = re.compile(r"^v[1-9][0-9]*$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]*$")


class Registry:
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
                **self._read_manifest(name),
                "path": str(self.root / name),
                "aliases": by_version.get(name, []),
            }
            for name in self._version_names()
        ]

    def aliases(self) -> dict[str, str]:
        path = self.root / ALIASES_FILE
        if not path.exists():
            return {}
        aliases = _parse_json(path.read_bytes(), path)
        if not isinstance(aliases, dict) or not all(
            isinstance(k, str) and is_alias_name(k) and isinstance(v, str) and VERSION_RE.match(v)
            for k, v in aliases.items()
        ):
            raise RegistryError(f"{path}: expected an object of alias name -> vN")
        return aliases

    def resolve(self, ref: str = PRODUCTION_ALIAS) -> str:
        """The version (`vN`) a ref names; unknown or path-like refs are refused."""
        check_ref(ref)
        if VERSION_RE.match(ref):
            if not (self.root / ref).is_dir():
                raise RegistryError(f"unknown version {ref!r} in registry {self.root}")
            return ref
        version = self.aliases().get(ref)
        if version is None:
            raise RegistryError(f"unknown alias {ref!r} in {self.root / ALIASES_FILE}")
        if not (self.root / version).is_dir():
            raise RegistryError(
                f"{self.root / ALIASES_FILE}: alias {ref!r} points at missing {version}"
            )
        return version

    def manifest(self, ref: str) -> dict:
        return self._read_manifest(self.resolve(ref))

    def history(self) -> list[dict]:
        path = self.root / HISTORY_FILE
        if not path.exists():
            return []
        lines = path.read_bytes().split(b"\n")
        # A writer killed mid-append can leave a torn last line (no newline): not an event.
        entries = []
        for number, line in enumerate(lines[:-1], start=1):
            try:
                entries.append(json.loads(line))
            except ValueError as error:
                raise RegistryError(f"{path}:{number}: not a JSON line ({error})") from error
        return entries

    # --- integrity -------------------------------------------------------------

    def verify(self, ref: str | None = None) -> list[str]:
        """Check one version (or all) file by file, plus aliases and history; return the checked."""
        for alias in self.aliases():
            self.resolve(alias)  # refuses an alias that points at a missing version
        self.history()
        names = self._version_names() if ref is None else [self.resolve(ref)]
        for name in names:
            self._verify_version(name)
        return names

    def fetch(self, ref: str, dest: Path) -> Path:
        """Verify a version, copy its files into `dest`, return `dest/model.keras`."""
        version = self.resolve(ref)
        dest = Path(dest).expanduser().resolve()
        if dest.is_relative_to(self.root):
            raise RegistryError(f"{dest}: fetch destination is inside the registry {self.root}")
        manifest = self._verify_version(version)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Copy into a staging folder beside dest and check every checksum again while
        # copying, so dest never receives a byte that did not match the manifest.
        raw_manifest = dump_json(manifest)
        expected = {MANIFEST_FILE: (sha256_bytes(raw_manifest), len(raw_manifest))}
        expected |= {
            name: (meta["sha256"], meta["size"]) for name, meta in manifest["files"].items()
        }
        # A killed fetch leaves its staging folder behind: sweep those of dead processes.
        sweep_abandoned(dest.parent, FETCH_RE)
        staging = dest.parent / f"{FETCH_PREFIX}{uuid.uuid4().hex}"
        with owned_folder(staging):
            staging.mkdir()
            for name, digest_size in expected.items():
                if copy_hashed(self.root / version / name, staging / name) != digest_size:
                    raise RegistryError(
                        f"{self.root / version / name}: changed while being fetched"
                    )
            self._on_step("fetch-staged")
            for name in expected:
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / name, dest / name)
        return dest / MODEL_FILE

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
        rule: Callable[[dict | None], Decision],
        alias: str = PRODUCTION_ALIAS,
    ) -> tuple[Decision, str | None]:
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
        rule: Callable[[dict | None], Decision] | None,
    ) -> tuple[Decision | None, str | None]:
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
                    decision = rule(self._read_manifest(current) if current else None)
                    if not decision.promote:
                        return decision, None
                    manifest = {**manifest, "gate": asdict(decision)}
                version = self._finish_build(build, files, manifest)
                if alias is not None:
                    self._point_alias(alias, version, "promote", manifest)
                else:
                    self._append_history({"event": "publish", "version": version, "alias": None})
        return decision, version

    def set_alias(self, alias: str, ref: str, event: str = "promote") -> str:
        """Point `alias` at an existing, intact version (`digits promote REF`)."""
        check_alias_name(alias)
        with self._locked():
            version = self.resolve(ref)
            manifest = self._verify_version(version)
            self._point_alias(alias, version, event, manifest)
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
            self._verify_version(previous)  # never roll production onto a damaged version
            self._move_alias({"event": "rollback", "alias": alias, "from": current, "to": previous})
        return previous

    # --- internals -------------------------------------------------------------

    def _version_names(self) -> list[str]:
        if not self.root.exists():
            return []
        if not self.root.is_dir():
            raise RegistryError(f"{self.root}: registry root is not a folder")
        names = [p.name for p in self.root.iterdir() if VERSION_RE.match(p.name) and p.is_dir()]
        return sorted(names, key=lambda name: int(name[1:]))

    def _read_manifest(self, version: str) -> dict:
        """Parse a version's manifest and check its own digest and shape."""
        path = self.root / version / MANIFEST_FILE
        for link in (path.parent, path):
            if link.is_symlink():
                raise RegistryError(f"{link}: {SYMLINK_REFUSED}")
        if not path.is_file():
            raise RegistryError(f"{path}: missing manifest")
        raw = path.read_bytes()
        manifest = _parse_json(raw, path)
        if not isinstance(manifest, dict) or not isinstance(manifest.get(DIGEST_KEY), str):
            raise RegistryError(f"{path}: not a registry manifest (no {DIGEST_KEY})")
        body = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
        # The digest covers the content; the byte comparison catches edits that keep the content.
        if sha256_bytes(dump_json(body)) != manifest[DIGEST_KEY] or dump_json(manifest) != raw:
            raise RegistryError(f"{path}: manifest does not match its own {DIGEST_KEY}")
        check_manifest(manifest, path)
        if manifest.get("version") != version:
            raise RegistryError(
                f"{path}: says version {manifest.get('version')!r}, folder is {version}"
            )
        check_files(manifest.get("files"), path)
        return manifest

    def _verify_version(self, version: str) -> dict:
        folder = self.root / version
        check_no_symlinks(folder)
        manifest = self._read_manifest(version)
        for name, expected in manifest["files"].items():
            path = folder / name
            if not path.is_file() or path.is_symlink():
                raise RegistryError(f"{path}: listed in the manifest but missing")
            size, digest = path.stat().st_size, sha256_file(path)
            if (digest, size) != (expected.get("sha256"), expected.get("size")):
                raise RegistryError(f"{path}: sha256/size differ from {folder / MANIFEST_FILE}")
        for name in walk_files(folder):
            if name != MANIFEST_FILE and name not in manifest["files"]:
                raise RegistryError(f"{folder / name}: file not listed in the manifest")
        return manifest

    def _finish_build(self, build: Path, files: dict[str, tuple[str, int]], fields: dict) -> str:
        """Under the lock: number the build, write card and manifest, rename it into place."""
        names = [p.name for p in self.root.iterdir() if VERSION_RE.match(p.name)]
        version = f"v{max((int(n[1:]) for n in names), default=0) + 1}"
        manifest = {**fields, "version": version, "created_at": utc_now()}
        manifest["files"] = {
            name: {"sha256": d, "size": s} for name, (d, s) in sorted(files.items())
        }
        # The card reads the manifest as JSON records it (numpy values as plain numbers).
        card = render_card(json.loads(dump_json(manifest))).encode()
        write_synced(build / CARD_FILE, card)
        manifest["files"][CARD_FILE] = {"sha256": sha256_bytes(card), "size": len(card)}
        manifest.pop(DIGEST_KEY, None)
        manifest[DIGEST_KEY] = sha256_bytes(dump_json(manifest))
        check_manifest(json.loads(dump_json(manifest)), build / MANIFEST_FILE)
        write_synced(build / MANIFEST_FILE, dump_json(manifest))
        for folder in {(build / name).parent for name in manifest["files"]}:
            fsync_dir(folder)
        self._on_step("manifest-written")
        os.rename(build, self.root / version)
        fsync_dir(self.root)
        self._on_step("renamed")
        return version

    def _point_alias(self, alias: str, version: str, event: str, manifest: dict) -> None:
        """Commit the move in history.jsonl, then make aliases.json say it (see module doc)."""
        entry = {
            "event": event,
            "alias": alias,
            "version": version,
            "from": self.aliases().get(alias),
            "to": version,
        }
        accuracy = (manifest.get("metrics") or {}).get("accuracy")
        if accuracy is not None:
            entry["accuracy"] = accuracy
        self._move_alias(entry)

    def _move_alias(self, entry: dict) -> None:
        self._append_history(entry)
        self._on_step("history-appended")
        self._write_aliases({**self.aliases(), entry["alias"]: entry["to"]})

    def _repair_aliases(self) -> None:
        """Under the lock: make aliases.json say what history.jsonl committed. A writer
        killed between its history line and the alias swap leaves aliases.json one move
        behind; replaying history forward is unambiguous, guessing the reverse is not."""
        aliases = self.aliases()
        repaired = {**aliases, **committed_targets(self.history())}
        if repaired == aliases:
            return
        for alias, version in repaired.items():
            if aliases.get(alias) != version and not (self.root / version).is_dir():
                raise RegistryError(
                    f"{self.root / HISTORY_FILE}: last move of {alias!r} is to missing {version}"
                )
        log.warning(
            "%s: brought up to %s after an interrupted write: %s",
            self.root / ALIASES_FILE, HISTORY_FILE, repaired,
        )  # fmt: skip
        self._write_aliases(repaired)

    def _write_aliases(self, aliases: dict[str, str]) -> None:
        """Replace aliases.json so readers see the old or the new map, never a mix."""
        temp = self.root / f"{ALIAS_TEMP_PREFIX}{uuid.uuid4().hex}.tmp"
        write_synced(temp, dump_json(dict(sorted(aliases.items()))))
        self._on_step("alias-written")
        os.replace(temp, self.root / ALIASES_FILE)
        fsync_dir(self.root)
        self._on_step("alias-replaced")

    def _append_history(self, entry: dict) -> None:
        path = self.root / HISTORY_FILE
        line = json.dumps({**entry, "at": utc_now()}, default=to_jsonable).encode() + b"\n"
        old = path.read_bytes() if path.exists() else b""
        with path.open("ab") as handle:
            # A writer killed mid-append may have left a torn last line: drop it (we hold the lock).
            if not old.endswith(b"\n"):
                handle.truncate(old.rfind(b"\n") + 1)
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the registry-wide write lock, with a record of who holds it beside it."""
        if not self.root.is_dir():
            raise RegistryError(f"{self.root}: no registry here")
        lock = FileLock(self.root / LOCK_FILE)
        self._acquire(lock)
        holder = self.root / HOLDER_FILE
        try:
            write_holder(holder)
            self._on_step("locked")
            self._clean_leftovers()
            self._repair_aliases()
            yield
        finally:
            # Removed while still held, so a waiter never reads a finished holder's record
            # as the current one (a killed holder's stale record is overwritten by the next).
            holder.unlink(missing_ok=True)
            lock.release()

    def _acquire(self, lock: FileLock) -> None:
        """Wait for the write lock, saying who holds it and for how long; a busy registry
        is not a corrupt one, so giving up raises RegistryBusy (exit 6), not RegistryError."""
        timeout = lock_timeout() if self.lock_timeout is None else self.lock_timeout
        try:
            lock.acquire(blocking=False)
            return
        except Timeout:
            self._on_step("lock-busy")
        started = time.monotonic()
        while True:
            waited = time.monotonic() - started
            holder = describe_holder(self.root / HOLDER_FILE)
            if waited >= timeout:
                raise RegistryBusy(
                    f"{lock.lock_file}: registry busy, {holder}; gave up after {timeout:g} s "
                    "(set DIGITS_LOCK_TIMEOUT to wait longer)"
                )
            log.warning(
                "%s: waiting for the registry lock, %s; waited %.0f s of %g s",
                lock.lock_file, holder, waited, timeout,
            )  # fmt: skip
            try:
                lock.acquire(timeout=min(LOCK_REPORT_EVERY_S, timeout - waited))
                return
            except Timeout:
                continue

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


def write_holder(path: Path) -> None:
    """Record who holds the registry lock (pid, host, command, since) for waiters to show."""
    command = " ".join(sys.argv).replace("\n", " ")[:200]
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command}
    temp = path.with_name(f"{path.name}.tmp")  # only ever written under the lock
    temp.write_bytes(dump_json({**record, "since": utc_now()}))
    os.replace(temp, path)


def describe_holder(path: Path) -> str:
    """`held by pid P on HOST (COMMAND) since T`, or why we cannot tell."""
    try:
        record = json.loads(path.read_bytes())
        return (
            f"held by pid {int(record['pid'])} on {record['host']} "
            f"({record['command']}) since {record['since']}"
        )
    except (OSError, ValueError, TypeError, KeyError):
        # No record yet (the holder is between taking the lock and writing it) or an old writer.
        return "held by a process that left no holder record"


# --- refs ------------------------------------------------------------------------


def is_alias_name(name: str) -> bool:
    # `v12` style names are versions, and `v012` would read like one: never aliases.
    return bool(ALIAS_RE.match(name)) and not re.match(r"^v[0-9]+$", name)


def check_ref(ref: object) -> None:
    if not isinstance(ref, str) or not (VERSION_RE.match(ref) or is_alias_name(ref)):
        raise RegistryError(
            f"invalid ref {ref!r}: expected a version like v3 or an alias name like production"
        )


def check_alias_name(alias: object) -> None:
    if not isinstance(alias, str) or not is_alias_name(alias):
        raise RegistryError(f"invalid alias name {alias!r}: lowercase [a-z][a-z0-9_-]*, not vN")


def check_files(files: object, manifest_path: Path) -> None:
    """`files` maps relative posix paths inside the version (fetch writes them) to checksums."""
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise RegistryError(f"{manifest_path}: `files` must list {MODEL_FILE}")
    for name, meta in files.items():
        if (
            not name
            or name.startswith("/")
            or "\\" in name
            or ".." in PurePosixPath(name).parts
            or PurePosixPath(name).as_posix() != name
            or name == MANIFEST_FILE
        ):
            raise RegistryError(f"{manifest_path}: unsafe file name {name!r} in `files`")
        if not (
            isinstance(meta, dict)
            and isinstance(meta.get("sha256"), str)
            and isinstance(meta.get("size"), int)
        ):
            raise RegistryError(f"{manifest_path}: `files` entry {name!r} needs sha256 and size")


def committed_targets(history: list[dict]) -> dict[str, str]:
    """Alias -> the target its last history line moved it to: what aliases.json must say."""
    return {
        entry["alias"]: entry["to"]
        for entry in history
        if isinstance(entry.get("alias"), str) and isinstance(entry.get("to"), str)
    }


def alias_targets(history: list[dict], alias: str) -> list[str]:
    """Replay the history into the stack of targets `alias` had; rollbacks pop it."""
    targets: list[str] = []
    for entry in history:
        if entry.get("alias") != alias or not isinstance(entry.get("to"), str):
            continue
        if entry.get("event") == "rollback":
            while targets and targets[-1] != entry["to"]:
                targets.pop()
            if not targets:
                targets.append(entry["to"])
            continue
        # `from` restores a target whose own line a killed writer never appended.
        if isinstance(entry.get("from"), str) and targets[-1:] != [entry["from"]]:
            targets.append(entry["from"])
        targets.append(entry["to"])
    return targets


# --- files -----------------------------------------------------------------------


def list_source_files(source_dir: Path) -> dict[str, Path]:
    """Relative posix name -> path of every file to publish; model.keras is required."""
    if not (source_dir / MODEL_FILE).is_file():
        raise RegistryError(f"{source_dir / MODEL_FILE}: nothing to publish (no model file)")
    files = {name: source_dir / name for name in walk_files(source_dir)}
    for reserved in (MANIFEST_FILE, CARD_FILE):
        if reserved in files:
            raise RegistryError(f"{source_dir / reserved}: the registry writes {reserved} itself")
    return files


SYMLINK_REFUSED = "a symlink; a version holds only plain files and folders"


def check_no_symlinks(folder: Path) -> None:
    """Refuse a version with a symlink anywhere (itself included): its checksums would
    vouch for bytes that live outside the registry and may change under it."""
    if folder.is_symlink():
        raise RegistryError(f"{folder}: {SYMLINK_REFUSED}")
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in sorted(dirnames + filenames):
            if os.path.islink(os.path.join(dirpath, name)):
                raise RegistryError(f"{Path(dirpath, name)}: {SYMLINK_REFUSED}")


def walk_files(folder: Path) -> Iterator[str]:
    """Relative posix names of every non-folder entry under `folder`, sorted."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for filename in sorted(filenames):
            yield Path(dirpath, filename).relative_to(folder).as_posix()


def copy_hashed(source: Path, target: Path) -> tuple[str, int]:
    """Copy a file, fsync it, and return the SHA-256 and size of the bytes written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with source.open("rb") as reader, target.open("xb") as writer:
        for chunk in iter(lambda: reader.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
            writer.write(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    return digest.hexdigest(), size


def write_synced(path: Path, data: bytes) -> None:
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    """Make a rename or new entry in `folder` durable, not just the files' bytes."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- JSON ------------------------------------------------------------------------


def to_jsonable(value: object) -> object:
    """Let callers pass numpy scalars/arrays and paths without converting them first."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dump_json(value: object) -> bytes:
    """The one serialisation of registry JSON files, so manifests can be checked byte for byte."""
    try:
        text = json.dumps(value, indent=2, allow_nan=False, default=to_jsonable)
    except (TypeError, ValueError) as error:
        raise RegistryError(f"manifest cannot be written as JSON: {error}") from error
    return (text + "\n").encode()


def _parse_json(raw: bytes, path: Path) -> object:
    try:
        return json.loads(raw)
    except ValueError as error:  # also covers bytes that are not UTF-8
        raise RegistryError(f"{path}: not valid JSON ({error})") from error


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- loading ---------------------------------------------------------------------


def load_model(ref: str = PRODUCTION_ALIAS, registry: Path | str | None = None):
    """Verify a registry version, then load it with plain Keras in safe mode."""
    reg = Registry(registry_root(registry))
    version = reg.resolve(ref)
    reg.verify(version)
    import keras  # here, not at the top: reading a registry must not need TensorFlow

    return keras.saving.load_model(reg.root / version / MODEL_FILE, safe_mode=True)
