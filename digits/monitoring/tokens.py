"""Who may give trusted labels: the bearer tokens an operator makes (`digits feedback
tokens`), kept beside the prediction log they label, as `tokens.json` in its folder.

The service already owns that folder, so it needs no other path; whoever can write the
folder can write labels anyway, so the tokens are no safer anywhere else. A token is
`secrets.token_urlsafe(32)` (256 random bits), printed once when made and never stored: the
file keeps its SHA-256 (hex), its name, when it was made and, once revoked, when (a revoked
name stays taken, so a name in a batch's `credentials` means one token for good). The file
is replaced whole (written beside it, fsynced, renamed), readable by its owner only (0600),
and changed under `.tokens.lock` so two commands at once lose neither change.

The service checks a request's token with `TokenCheck`, which reads the file again whenever
it changes (its inode, size or mtime, looked at on every request): an added or revoked token
counts from the next request, with no restart.

The standard library only (filelock for the lock, as the rest of digits).
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from digits.errors import DataError, UsageError
from digits.files import replace_synced, sha256_bytes
from digits.monitoring.log import make_log_folder
from digits.monitoring.records import MARKER, format_time, now

TOKENS_FILE = "tokens.json"
LOCK = ".tokens.lock"
FORMAT = {"format": "digits feedback tokens", "version": 1}
# No ":" in a name: "review:NAME" is a reviewer's credential, never a token's.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Token:
    """A token as the file keeps it: never the token itself."""

    name: str
    sha256: str  # of the token's UTF-8 bytes, hex
    created_at: str  # UTC ISO 8601
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_token(token: str) -> str:
    return sha256_bytes(token.encode())


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise UsageError(f"token name {name!r}: 1 to 64 letters, digits, '_', '.', '@' or '-', "
                         "starting with a letter or digit")
    return name


def read_tokens(folder: Path) -> list[Token]:
    """The tokens of the log at `folder`, in the order made; [] without a tokens file.
    DataError for a file that is not one."""
    path = Path(folder) / TOKENS_FILE
    try:
        document = json.loads(path.read_bytes())
        tokens = [Token(**entry) for entry in document["tokens"]]
    except FileNotFoundError:
        return []
    except (ValueError, TypeError, KeyError) as error:
        raise DataError(f"{path}: not a tokens file ({error})") from None
    for token in tokens:
        if not (isinstance(token.name, str) and NAME_RE.fullmatch(token.name)
                and isinstance(token.sha256, str) and SHA256_RE.fullmatch(token.sha256)):
            raise DataError(f"{path}: not a tokens file (an entry without a valid name or "
                            "sha256)")
    return tokens


def add_token(folder: Path, name: str) -> str:
    """Make a token named `name` for the log at `folder` (made if new, as `digits serve`
    makes it); the token, which is not kept: show it once. UsageError for a name taken,
    even by a revoked token."""
    check_name(name)
    make_log_folder(Path(folder))
    token = secrets.token_urlsafe(32)
    with locked(folder):
        tokens = read_tokens(folder)
        taken = next((t for t in tokens if t.name == name), None)
        if taken is not None:
            state = "in use" if taken.active else f"revoked at {taken.revoked_at}"
            raise UsageError(f"token name {name!r} is taken ({state}): choose another, so that "
                             "a name in a batch's credentials means one token")
        write_tokens(folder, [*tokens, Token(name, hash_token(token), format_time(now()))])
    return token


def revoke_token(folder: Path, name: str) -> Token:
    """Revoke the token named `name`: the service refuses it from its next request. The
    token as it is now (revoked earlier: unchanged). UsageError for no such name."""
    check_log(folder)
    with locked(folder):
        tokens = read_tokens(folder)
        found = next((t for t in tokens if t.name == name), None)
        if found is None:
            raise UsageError(f"no token named {name!r} in {Path(folder) / TOKENS_FILE} "
                             "(`digits feedback tokens list`)")
        if not found.active:
            return found
        revoked = replace(found, revoked_at=format_time(now()))
        write_tokens(folder, [revoked if t.name == name else t for t in tokens])
    return revoked


def list_tokens(folder: Path) -> list[Token]:
    check_log(folder)
    return read_tokens(folder)


def check_log(folder: Path) -> None:
    if not Path(folder).is_dir():
        raise DataError(f"prediction log {folder} does not exist")
    if not (Path(folder) / MARKER).is_file():
        raise DataError(f"{folder} is not a prediction log (no {MARKER})")


def locked(folder: Path):
    from filelock import FileLock  # here: the service, which only reads, never imports it

    return FileLock(Path(folder) / LOCK)


def write_tokens(folder: Path, tokens: list[Token]) -> None:
    """Replace the tokens file whole, readable by its owner only."""
    document = {**FORMAT, "tokens": [asdict(token) for token in tokens]}
    replace_synced(Path(folder) / TOKENS_FILE, (json.dumps(document, indent=2) + "\n").encode(),
                   mode=0o600)


class TokenCheck:
    """The service's view of the log folder's tokens: `name_of` a presented token, read
    again whenever the file changes."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._seen: tuple[int, int, int] | None = None  # inode, size, mtime of the file read
        self._active: dict[str, str] = {}  # name -> sha256 of the tokens not revoked

    def name_of(self, token: str) -> str | None:
        """The name of the active token `token`, else None. DataError for a tokens file
        that cannot be read (the service refuses every token then: it fails closed)."""
        self._refresh()
        digest, found = hash_token(token), None
        for name, stored in self._active.items():  # each compared, in constant time
            if hmac.compare_digest(digest, stored):
                found = name
        return found

    def _refresh(self) -> None:
        try:
            stat = os.stat(self.folder / TOKENS_FILE)
            seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            seen = None
        if seen is not None and seen == self._seen:
            return
        self._active, self._seen = {}, None  # a file that fails to read lets no token in
        self._active = {t.name: t.sha256 for t in read_tokens(self.folder) if t.active}
        self._seen = seen  # taken before the read: a change meanwhile is read next time
