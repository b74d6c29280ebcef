"""A version folder: what may be published as one, numbering and renaming it into place,
and reading and verifying it (every file against the manifest, the manifest against its
own digest and the schema). The caller holds the registry lock for `finish_build`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from digits.errors import RegistryError
from digits.files import fsync_dir, sha256_bytes, sha256_file, walk_files, write_synced
from digits.registry.aliases import VERSION_RE
from digits.registry.card import render_card
from digits.registry.layout import CARD_FILE, MANIFEST_FILE, MODEL_FILE
from digits.registry.manifest import (
    DIGEST_KEY,
    check_files,
    check_manifest,
    dump_json,
    parse_json,
    utc_now,
)

SYMLINK_REFUSED = "a symlink; a version holds only plain files and folders"


def list_source_files(source_dir: Path) -> dict[str, Path]:
    """Relative posix name -> path of every file to publish; model.keras is required."""
    if not (source_dir / MODEL_FILE).is_file():
        raise RegistryError(f"{source_dir / MODEL_FILE}: nothing to publish (no model file)")
    files = {name: source_dir / name for name in walk_files(source_dir)}
    for reserved in (MANIFEST_FILE, CARD_FILE):
        if reserved in files:
            raise RegistryError(f"{source_dir / reserved}: the registry writes {reserved} itself")
    return files


def check_no_symlinks(folder: Path) -> None:
    """Refuse a version with a symlink anywhere (itself included): its checksums would
    vouch for bytes that live outside the registry and may change under it."""
    if folder.is_symlink():
        raise RegistryError(f"{folder}: {SYMLINK_REFUSED}")
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in sorted(dirnames + filenames):
            if os.path.islink(os.path.join(dirpath, name)):
                raise RegistryError(f"{Path(dirpath, name)}: {SYMLINK_REFUSED}")


def version_names(root: Path) -> list[str]:
    """The `vN` folders in `root`, oldest first (dot-entries are never versions)."""
    if not root.exists():
        return []
    if not root.is_dir():
        raise RegistryError(f"{root}: registry root is not a folder")
    names = [p.name for p in root.iterdir() if VERSION_RE.fullmatch(p.name) and p.is_dir()]
    return sorted(names, key=lambda name: int(name[1:]))


def read_manifest(root: Path, version: str) -> dict:
    """Parse a version's manifest and check its own digest and shape."""
    path = root / version / MANIFEST_FILE
    for link in (path.parent, path):
        if link.is_symlink():
            raise RegistryError(f"{link}: {SYMLINK_REFUSED}")
    if not path.is_file():
        raise RegistryError(f"{path}: missing manifest")
    return parse_manifest(path.read_bytes(), path, version)


def parse_manifest(raw: bytes, path: object, version: str) -> dict:
    """A manifest's bytes (a file, or an object in a store), checked against its own
    digest, the schema and the version it is stored as."""
    manifest = parse_json(raw, path)
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


def verify_version(root: Path, version: str) -> dict:
    """Check a version file by file against its manifest; return the manifest."""
    folder = root / version
    check_no_symlinks(folder)
    manifest = read_manifest(root, version)
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


def finish_build(
    root: Path,
    build: Path,
    files: dict[str, tuple[str, int]],
    fields: dict,
    on_step: Callable[[str], None],
) -> str:
    """Under the lock: number the build, write card and manifest, rename it into place."""
    names = [p.name for p in root.iterdir() if VERSION_RE.fullmatch(p.name)]
    version = f"v{max((int(n[1:]) for n in names), default=0) + 1}"
    manifest, card = seal(fields, version, files, build / MANIFEST_FILE)
    write_synced(build / CARD_FILE, card)
    write_synced(build / MANIFEST_FILE, dump_json(manifest))
    for folder in {(build / name).parent for name in manifest["files"]}:
        fsync_dir(folder)
    on_step("manifest-written")
    os.rename(build, root / version)
    fsync_dir(root)
    on_step("renamed")
    return version


def seal(
    fields: dict, version: str, files: dict[str, tuple[str, int]], where: object
) -> tuple[dict, bytes]:
    """`version`'s manifest (with its card listed and its own digest) and the card's bytes:
    what every backend writes for a new version, checked against the schema."""
    manifest = {**fields, "version": version, "created_at": utc_now()}
    manifest["files"] = {name: {"sha256": d, "size": s} for name, (d, s) in sorted(files.items())}
    # The card reads the manifest as JSON records it (numpy values as plain numbers).
    card = render_card(json.loads(dump_json(manifest))).encode()
    manifest["files"][CARD_FILE] = {"sha256": sha256_bytes(card), "size": len(card)}
    manifest.pop(DIGEST_KEY, None)
    manifest[DIGEST_KEY] = sha256_bytes(dump_json(manifest))
    check_manifest(json.loads(dump_json(manifest)), where)
    return manifest, card
