"""Refs and aliases: the names a version goes by, `aliases.json` and `history.jsonl`.

One commit point for alias moves: the history line. A move appends its line to
`history.jsonl` (fsynced) first, then replaces `aliases.json` (write-temp, fsync,
`os.replace`). A writer killed in between leaves aliases.json one move behind its history;
the next writer, on taking the lock, replays the history's last move of each alias onto
aliases.json (`repair_aliases`) before doing anything else. History, not aliases.json, is
the record because replaying a logged move forward is unambiguous, while a move seen only
in aliases.json could have been a promote or a rollback, and rollback would then guess
(the old order let the next rollback move forward). Readers take no lock and read
aliases.json as it is, so until that repair they see the alias before the move, and
`digits verify` reports the move as pending (`pending_moves`).

A move that fails with an error rather than a kill, before aliases.json is replaced, takes
its history line back out, so a run that reports failure never has its move replayed by
the next writer. If even that fails (the disk turned read-only), the error says the move
is committed and pending instead: what the next writer will do.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from digits.errors import EnvironmentFault, RegistryError
from digits.files import fsync_dir, named_errors, write_synced
from digits.registry.layout import ALIAS_TEMP_PREFIX, ALIASES_FILE, HISTORY_FILE
from digits.registry.manifest import dump_json, parse_json, to_jsonable, utc_now

# Matched whole, with `fullmatch`: `$` would accept a trailing newline ("prod\n").
VERSION_RE = re.compile(r"v[1-9][0-9]*")
ALIAS_RE = re.compile(r"[a-z][a-z0-9_-]*")

log = logging.getLogger(__name__)


# --- refs ------------------------------------------------------------------------


def is_alias_name(name: str) -> bool:
    # `v12` style names are versions, and `v012` would read like one: never aliases.
    return bool(ALIAS_RE.fullmatch(name)) and not re.fullmatch(r"v[0-9]+", name)


def check_ref(ref: object) -> None:
    if not isinstance(ref, str) or not (VERSION_RE.fullmatch(ref) or is_alias_name(ref)):
        raise RegistryError(
            f"invalid ref {ref!r}: expected a version like v3 or an alias name like production"
        )


def check_alias_name(alias: object) -> None:
    if not isinstance(alias, str) or not is_alias_name(alias):
        raise RegistryError(f"invalid alias name {alias!r}: lowercase [a-z][a-z0-9_-]*, not vN")


# --- reading ---------------------------------------------------------------------


def read_aliases(root: Path) -> dict[str, str]:
    path = root / ALIASES_FILE
    return parse_aliases(path.read_bytes(), path) if path.exists() else {}


def parse_aliases(raw: bytes, where: object) -> dict[str, str]:
    """aliases.json's bytes (a file, or an object in a store) as alias -> vN."""
    aliases = parse_json(raw, where)
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and is_alias_name(k) and isinstance(v, str) and VERSION_RE.fullmatch(v)
        for k, v in aliases.items()
    ):
        raise RegistryError(f"{where}: expected an object of alias name -> vN")
    return aliases


def read_history(root: Path) -> list[dict]:
    path = root / HISTORY_FILE
    return parse_history(path.read_bytes(), path) if path.exists() else []


def parse_history(raw: bytes, where: object) -> list[dict]:
    """history.jsonl's bytes as its entries."""
    lines = raw.split(b"\n")
    # A writer killed mid-append can leave a torn last line (no newline): not an event.
    entries = []
    for number, line in enumerate(lines[:-1], start=1):
        try:
            entries.append(json.loads(line))
        except ValueError as error:
            raise RegistryError(f"{where}:{number}: not a JSON line ({error})") from error
    return entries


def committed_targets(history: list[dict]) -> dict[str, str]:
    """Alias -> the target its last history line moved it to: what aliases.json must say."""
    return {
        entry["alias"]: entry["to"]
        for entry in history
        if isinstance(entry.get("alias"), str) and isinstance(entry.get("to"), str)
    }


def pending_moves(root: Path) -> dict[str, tuple[str | None, str]]:
    """Alias -> (what aliases.json says, what history.jsonl committed) where they differ:
    moves a stopped writer committed and the next writer will apply."""
    aliases = read_aliases(root)
    return {
        alias: (aliases.get(alias), target)
        for alias, target in committed_targets(read_history(root)).items()
        if aliases.get(alias) != target
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


# --- writing (only under the registry lock) ----------------------------------------


def point_alias(
    root: Path,
    alias: str,
    version: str,
    event: str,
    manifest: dict,
    on_step: Callable[[str], None],
) -> None:
    """Move `alias` to `version` (a promote), its line naming where it was and the accuracy."""
    entry = {
        "event": event,
        "alias": alias,
        "version": version,
        "from": read_aliases(root).get(alias),
        "to": version,
    }
    accuracy = (manifest.get("metrics") or {}).get("accuracy")
    if accuracy is not None:
        entry["accuracy"] = accuracy
    move_alias(root, entry, on_step)


def move_alias(root: Path, entry: dict, on_step: Callable[[str], None]) -> None:
    """Move `entry["alias"]` to `entry["to"]`: commit the history line, then tell aliases.json.
    An error before aliases.json is replaced takes the line back out (see the module doc)."""
    start = append_history(root, entry)
    try:
        on_step("history-appended")
        replace_aliases(root, {**read_aliases(root), entry["alias"]: entry["to"]}, on_step)
    except BaseException as error:
        take_back_history(root, start, entry, error)
        raise
    fsync_dir(root)
    on_step("alias-replaced")


def append_history(root: Path, entry: dict) -> int:
    """Append `entry` as one fsynced line; return the offset it starts at."""
    path = root / HISTORY_FILE
    line = json.dumps({**entry, "at": utc_now()}, default=to_jsonable).encode() + b"\n"
    old = path.read_bytes() if path.exists() else b""
    start = old.rfind(b"\n") + 1
    with named_errors(path), path.open("ab") as handle:
        # A writer killed mid-append may have left a torn last line: drop it (we hold the lock).
        if start != len(old):
            handle.truncate(start)
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
    return start


def take_back_history(root: Path, start: int, entry: dict, error: BaseException) -> None:
    """Cut history.jsonl back to `start` (we hold the lock: nobody appended since), so the
    move that failed with `error` is not replayed; if that fails too, say it is pending."""
    path = root / HISTORY_FILE
    try:
        os.truncate(path, start)
        with named_errors(path), path.open("rb") as handle:
            os.fsync(handle.fileno())
    except OSError as undo:
        raise EnvironmentFault(
            f"{path}: {undo.strerror}: {entry['alias']} -> {entry['to']} is committed there "
            f"but not in {ALIASES_FILE} ({error}); the next registry write applies it "
            "(`digits verify` reports it pending)"
        ) from error


def replace_aliases(root: Path, aliases: dict[str, str], on_step: Callable[[str], None]) -> None:
    """Replace aliases.json so readers see the old or the new map, never a mix; the caller
    then syncs `root`. On an error the old file stays and no temp file is left."""
    temp = root / f"{ALIAS_TEMP_PREFIX}{uuid.uuid4().hex}.tmp"
    try:
        write_synced(temp, dump_json(dict(sorted(aliases.items()))))
        on_step("alias-written")
        os.replace(temp, root / ALIASES_FILE)
    except BaseException:
        with suppress(OSError):  # else the next writer sweeps it; the first error matters
            temp.unlink(missing_ok=True)
        raise


def repair_aliases(root: Path, on_step: Callable[[str], None]) -> None:
    """Make aliases.json say what history.jsonl committed. A writer killed between its
    history line and the alias swap leaves aliases.json one move behind; replaying history
    forward is unambiguous, guessing the reverse is not."""
    aliases = read_aliases(root)
    repaired = {**aliases, **committed_targets(read_history(root))}
    if repaired == aliases:
        return
    for alias, version in repaired.items():
        if aliases.get(alias) != version and not (root / version).is_dir():
            raise RegistryError(
                f"{root / HISTORY_FILE}: last move of {alias!r} is to missing {version}"
            )
    log.warning(
        "%s: brought up to %s after an interrupted write: %s",
        root / ALIASES_FILE, HISTORY_FILE, repaired,
    )  # fmt: skip
    replace_aliases(root, repaired, on_step)
    fsync_dir(root)
