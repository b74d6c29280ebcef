"""How an object-store registry commits without a lock: numbers taken by create-if-absent,
versions made visible by creating their manifest last, and the history and aliases.json
replaced only if they still have the ETag read (compare-and-swap, retried when another
writer won). `digits.registry.remote` explains the layout; this module only writes."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path

from digits.errors import RegistryBusy, RegistryError
from digits.files import sha256_file
from digits.registry.aliases import (
    VERSION_RE,
    alias_targets,
    committed_targets,
    parse_aliases,
    parse_history,
)
from digits.registry.layout import ALIASES_FILE, CARD_FILE, HISTORY_FILE, MANIFEST_FILE
from digits.registry.lock import holder_record
from digits.registry.manifest import dump_json, to_jsonable, utc_now
from digits.registry.objects import ObjectStore, Stored
from digits.registry.versions import seal

CLAIMS = ".claims/"  # `.claims/vN`: who took number N; never a version itself
CAS_TRIES = 50  # compare-and-swap attempts before a writer gives up (RegistryBusy)


def claim_version(objects: ObjectStore, committed: list[str]) -> str:
    """The next free number, taken by creating `.claims/vN` only if absent: a publisher
    that loses the race (412) takes the next one, so no two ever share a version."""
    taken = [key.removeprefix(CLAIMS) for key in objects.list(CLAIMS)] + committed
    number = max((int(n[1:]) for n in taken if VERSION_RE.fullmatch(n)), default=0) + 1
    while not objects.create(f"{CLAIMS}v{number}", dump_json(holder_record())):
        number += 1
    return f"v{number}"


def upload_version(
    objects: ObjectStore,
    version: str,
    sources: dict[str, Path],
    fields: dict,
    on_step: Callable[[str], None],
) -> dict:
    """Every file of a claimed version, its card, then its manifest created only if absent:
    the one write that makes the version visible. Returns the manifest."""
    files = {name: (sha256_file(path), path.stat().st_size) for name, path in sources.items()}
    for name, path in sorted(sources.items()):
        objects.write(f"{version}/{name}", path.read_bytes())
    on_step("files-copied")
    where = f"{objects.url}/{version}/{MANIFEST_FILE}"
    manifest, card = seal(fields, version, files, where)
    objects.write(f"{version}/{CARD_FILE}", card)
    on_step("manifest-written")
    if not objects.create(f"{version}/{MANIFEST_FILE}", dump_json(manifest)):
        raise RegistryError(f"{where}: committed by another writer (a claim was not honoured)")
    return manifest


def move_entry(alias: str, version: str, event: str, manifest: dict, history: list[dict]) -> dict:
    """The history line of moving `alias` to `version`: from where, and the accuracy."""
    entry = {"event": event, "alias": alias, "version": version,
             "from": committed_targets(history).get(alias), "to": version}
    accuracy = (manifest.get("metrics") or {}).get("accuracy")
    return entry if accuracy is None else {**entry, "accuracy": accuracy}


def rollback_entry(alias: str, history: list[dict], check: Callable[[str], str]) -> dict:
    """The history line moving `alias` back to the target before its current one; `check`
    resolves and verifies that target (never roll onto a damaged version)."""
    current = committed_targets(history).get(alias)
    if current is None:
        raise RegistryError(f"alias {alias!r} is not set in the history")
    targets = alias_targets(history, alias)
    while targets and targets[-1] == current:
        targets.pop()
    if not targets:
        raise RegistryError(f"{HISTORY_FILE}: no earlier {alias!r} target to roll back to")
    return {"event": "rollback", "alias": alias, "from": current, "to": check(targets[-1])}


def append_entry(
    objects: ObjectStore, make_entry: Callable[[list[dict]], dict], on_step: Callable[[str], None]
) -> dict:
    """Append the line `make_entry` writes for the history as read now, replacing
    history.jsonl only if nobody appended since (else read and decide again); then bring
    aliases.json up to it. The appended line is the commit: a writer killed before
    aliases.json follows is repaired by the next writer (`sync_aliases`)."""
    where = f"{objects.url}/{HISTORY_FILE}"
    for _ in range(CAS_TRIES):
        stored = objects.read(HISTORY_FILE)
        raw = stored.data if isinstance(stored, Stored) else b""
        entry = make_entry(parse_history(raw, where))
        line = json.dumps({**entry, "at": utc_now()}, default=to_jsonable).encode() + b"\n"
        if put_if_unchanged(objects, HISTORY_FILE, stored, raw + line):
            on_step("history-appended")
            sync_aliases(objects)
            on_step("alias-replaced")
            return entry
        time.sleep(random.uniform(0.01, 0.1))  # another writer appended: spread the retries
    raise RegistryBusy(f"{where}: other writers appended first {CAS_TRIES} times; try again")


def sync_aliases(objects: ObjectStore) -> None:
    """Make aliases.json say what the history committed. Read aliases.json before the
    history and replace it only if unchanged: a writer that lost reads both again, so the
    last one to succeed wrote what the newest history says."""
    for _ in range(CAS_TRIES):
        stored = objects.read(ALIASES_FILE)
        seen = parse_aliases(stored.data, f"{objects.url}/{ALIASES_FILE}") if isinstance(
            stored, Stored) else {}
        history = objects.read(HISTORY_FILE)
        raw = history.data if isinstance(history, Stored) else b""
        targets = committed_targets(parse_history(raw, f"{objects.url}/{HISTORY_FILE}"))
        wanted = dict(sorted({**seen, **targets}.items()))
        if wanted == seen:
            return
        if put_if_unchanged(objects, ALIASES_FILE, stored, dump_json(wanted)):
            return
    raise RegistryBusy(f"{objects.url}/{ALIASES_FILE}: kept changing; gave up (try again)")


def put_if_unchanged(objects: ObjectStore, key: str, seen: object, data: bytes) -> bool:
    """Replace `key` only if it still has the ETag of `seen`; create it only if it still does
    not exist when `seen` was nothing. False: another writer changed it first."""
    if isinstance(seen, Stored):
        return objects.replace(key, data, seen.etag)
    return objects.create(key, data)
