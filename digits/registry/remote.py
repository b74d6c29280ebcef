"""The registry on an S3-compatible object store: the same layout, manifests, checksums,
methods and exit codes as the folder registry (`store.Registry`), on the store's own
primitives instead of a lock and rename (docs/architecture.md, "The registry").

    s3://BUCKET/PREFIX/v1/...  aliases.json  history.jsonl   as in a folder
    s3://BUCKET/PREFIX/.claims/vN                           who took number N

Readers list versions by their manifest, which a publisher creates last (`commits`), so a
publisher killed half-way leaves a claim and files no reader sees; `verify` names them.
Loaders read a local copy (`verified_folder`) written only from bytes that matched the
manifest, checked again on every load; followers re-read aliases.json with its ETag and
download nothing while it is unchanged.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from digits.config import PRODUCTION_ALIAS
from digits.environment import registry_cache
from digits.errors import RegistryError, UsageError
from digits.files import sha256_bytes, write_synced
from digits.registry.aliases import (
    VERSION_RE,
    check_alias_name,
    committed_targets,
    parse_aliases,
    parse_history,
)
from digits.registry.commits import (
    CLAIMS,
    append_entry,
    claim_version,
    move_entry,
    rollback_entry,
    sync_aliases,
    upload_version,
)
from digits.registry.fetch import check_dest, place, staged_beside
from digits.registry.layout import ALIASES_FILE, HISTORY_FILE, MANIFEST_FILE, MODEL_FILE
from digits.registry.manifest import check_manifest, dump_json
from digits.registry.objects import (
    UNCHANGED,
    ObjectStore,
    S3Objects,
    Stored,
    check_conditional_writes,
)
from digits.registry.reading import RegistryReads
from digits.registry.versions import list_source_files, parse_manifest, verify_version

MANIFEST = f"/{MANIFEST_FILE}"


class ObjectRegistry(RegistryReads):
    """One registry under `s3://BUCKET/PREFIX`. Cheap to create; reads the store afresh,
    except aliases.json (re-read only when its ETag changed) and versions known committed."""

    def __init__(self, url: str, objects: ObjectStore | None = None) -> None:
        self.objects = objects or S3Objects(url)
        self.root = self.objects.url  # what messages name, as the folder registry's path
        self.cache = registry_cache(self.root, self.objects.endpoint)
        self._on_step: Callable[[str], None] = lambda step: None
        self._aliases_seen: tuple[str, dict[str, str]] | None = None
        self._committed: set[str] = set()
        self._writable = False

    # --- reading -----------------------------------------------------------------

    def names(self) -> list[str]:
        keys = self.objects.list("v")
        names = [k.split("/")[0] for k in keys if k.count("/") == 1 and k.endswith(MANIFEST)]
        names = [name for name in names if VERSION_RE.fullmatch(name)]
        self._committed.update(names)
        return sorted(names, key=lambda name: int(name[1:]))

    def versions(self) -> list[dict]:
        by_version: dict[str, list[str]] = {}
        for alias, version in sorted(self.aliases().items()):
            by_version.setdefault(version, []).append(alias)
        return [{**self._manifest(name), "path": f"{self.root}/{name}",
                 "aliases": by_version.get(name, [])} for name in self.names()]

    def aliases(self) -> dict[str, str]:
        seen = self._aliases_seen
        stored = self.objects.read(ALIASES_FILE, seen[0] if seen else None)
        if stored == UNCHANGED and seen:
            return dict(seen[1])
        if not isinstance(stored, Stored):
            return {}
        aliases = parse_aliases(stored.data, f"{self.root}/{ALIASES_FILE}")
        self._aliases_seen = (stored.etag, aliases)
        return dict(aliases)

    def manifest(self, ref: str) -> dict:
        return self._manifest(self.resolve(ref))

    def history(self) -> list[dict]:
        stored = self.objects.read(HISTORY_FILE)
        raw = stored.data if isinstance(stored, Stored) else b""
        return parse_history(raw, f"{self.root}/{HISTORY_FILE}")

    def read_file(self, version: str, name: str) -> bytes:
        stored = self.objects.read(f"{version}/{name}")
        return stored.data if isinstance(stored, Stored) else b""

    # --- integrity ---------------------------------------------------------------

    def _check_version(self, version: str) -> None:
        for _ in self._checked_files(version):
            pass

    def check_pending(self) -> None:
        aliases, history = self.aliases(), self.history()
        moves = [f"{alias!r} is {aliases.get(alias)} but {HISTORY_FILE} moved it to {target}"
                 for alias, target in committed_targets(history).items()
                 if aliases.get(alias) != target]
        if moves:
            raise RegistryError(f"{self.root}/{ALIASES_FILE}: {'; '.join(moves)} (a write was "
                                "interrupted; the next registry write applies it)")

    def leftovers(self) -> list[str]:
        """Numbers claimed but never committed: a publisher stopped half-way (or still
        uploading). No reader sees them; their objects may be deleted once it is stopped."""
        committed = set(self.names())
        found = []
        for key in self.objects.list(CLAIMS):
            name = key.removeprefix(CLAIMS)
            if name not in committed:
                stored = self.objects.read(key)
                record = stored.data.decode(errors="replace").strip() if stored else "?"
                found.append(f"{self.root}/{name}/: claimed ({record}) but never committed")
        return found

    def fetch(self, ref: str, dest: Path) -> Path:
        """Download a version into `dest` (new or empty), every byte checked first."""
        version = self.resolve(ref)
        dest = Path(dest).expanduser().resolve()
        check_dest(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with staged_beside(dest) as staging:
            for name, data in self._checked_files(version):
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                write_synced(staging / name, data)
            self._on_step("fetch-staged")
            place(staging, dest)
        return dest / MODEL_FILE

    def verified_folder(self, version: str) -> Path:
        """This machine's copy of `version`, downloaded once from checked bytes and checked
        again on every call, with its manifest compared to the store's (a damaged or other
        copy is downloaded anew)."""
        folder = self.cache / version
        if folder.is_dir():
            try:
                verify_version(self.cache, version)
                # One small GET: the copy must be of the manifest the store holds now.
                if (folder / MANIFEST_FILE).read_bytes() == self._read_manifest(version)[0]:
                    return folder
            except RegistryError:
                pass
            shutil.rmtree(folder)
        try:
            self.fetch(version, folder)
        except (OSError, UsageError):  # another process of this machine placed it first
            if not folder.is_dir():
                raise
        verify_version(self.cache, version)
        return folder

    # --- writing -----------------------------------------------------------------

    def publish(self, source_dir: Path, manifest: dict, alias: str | None = PRODUCTION_ALIAS
                ) -> str:
        return self._add_version(source_dir, manifest, alias, None)[1]

    def promote_if(self, source_dir: Path, manifest: dict, rule: Callable, alias: str =
                   PRODUCTION_ALIAS) -> tuple[object, str | None]:
        """Gate and publish without a lock: decide on the production the history names,
        upload, commit, then append the promotion only if the history still names that
        production. If another run moved it meanwhile, decide again on the new one; a
        version rejected then stays published without the alias (history says so)."""
        return self._add_version(source_dir, manifest, alias, rule)

    def set_alias(self, alias: str, ref: str, event: str = "promote") -> str:
        check_alias_name(alias)
        version = self._verified_target(ref)
        manifest = self._manifest(version)
        self._check_writable()
        append_entry(self.objects, lambda history: move_entry(alias, version, event, manifest,
                                                              history), self._on_step)
        return version

    def rollback(self, alias: str = PRODUCTION_ALIAS) -> str:
        check_alias_name(alias)
        self._check_writable()
        return append_entry(self.objects, lambda history: rollback_entry(
            alias, history, self._verified_target), self._on_step)["to"]

    # --- internals ---------------------------------------------------------------

    def _verified_target(self, ref: str) -> str:
        version = self.resolve(ref)
        self.verify(version)  # never point an alias at a damaged version
        return version

    def _exists(self, version: str) -> bool:
        if version not in self._committed and self.objects.read(
                f"{version}/{MANIFEST_FILE}") is not None:
            self._committed.add(version)
        return version in self._committed

    def _manifest(self, version: str) -> dict:
        return self._read_manifest(version)[1]

    def _read_manifest(self, version: str) -> tuple[bytes, dict]:
        stored = self.objects.read(f"{version}/{MANIFEST_FILE}")
        where = f"{self.root}/{version}/{MANIFEST_FILE}"
        if not isinstance(stored, Stored):
            raise RegistryError(f"{where}: missing manifest")
        return stored.data, parse_manifest(stored.data, where, version)

    def _checked_files(self, version: str) -> Iterator[tuple[str, bytes]]:
        """Every object of `version` (manifest last), each checked against the manifest;
        an object the manifest does not list fails as in a folder."""
        raw_manifest, manifest = self._read_manifest(version)
        listed = set(manifest["files"]) | {MANIFEST_FILE}
        for key in self.objects.list(f"{version}/"):
            if key.removeprefix(f"{version}/") not in listed:
                raise RegistryError(f"{self.root}/{key}: file not listed in the manifest")
        for name, expected in manifest["files"].items():
            stored = self.objects.read(f"{version}/{name}")
            where = f"{self.root}/{version}/{name}"
            if not isinstance(stored, Stored):
                raise RegistryError(f"{where}: listed in the manifest but missing")
            if (sha256_bytes(stored.data), len(stored.data)) != (expected["sha256"],
                                                                  expected["size"]):
                raise RegistryError(f"{where}: sha256/size differ from {MANIFEST_FILE}")
            yield name, stored.data
        yield MANIFEST_FILE, raw_manifest

    def _add_version(self, source_dir: Path, fields: dict, alias: str | None,
                     rule: Callable | None) -> tuple[object, str | None]:
        if alias is not None:
            check_alias_name(alias)
        sources = list_source_files(Path(source_dir))
        check_manifest(json.loads(dump_json(fields)), f"manifest to publish from {source_dir}",
                       run_fields=True)
        self._check_writable()
        sync_aliases(self.objects)  # a killed writer's committed move first, as in a folder
        gate: dict = {"decision": None, "against": None}

        def judge(current: str | None) -> bool:
            gate["against"] = current
            gate["decision"] = rule(self._manifest(current) if current else None)
            return gate["decision"].promote

        if rule is not None:
            if not judge(committed_targets(self.history()).get(alias)):
                return gate["decision"], None
            fields = {**fields, "gate": asdict(gate["decision"])}
        self._on_step("tmp-created")
        version = claim_version(self.objects, self.names())
        self._on_step("locked")
        manifest = upload_version(self.objects, version, sources, fields, self._on_step)
        self._committed.add(version)
        self._on_step("renamed")

        def entry(history: list[dict]) -> dict:
            current = committed_targets(history).get(alias)
            if alias is None or (rule and current != gate["against"] and not judge(current)):
                # Published, but (another run moved the alias meanwhile) not promoted.
                return {"event": "publish", "version": version, "alias": None}
            return move_entry(alias, version, "promote", manifest, history)

        written = append_entry(self.objects, entry, self._on_step)
        promoted = alias is None or written.get("alias") == alias
        return gate["decision"], (version if promoted else None)

    def _check_writable(self) -> None:
        if not self._writable:
            check_conditional_writes(self.objects)
            self._writable = True
