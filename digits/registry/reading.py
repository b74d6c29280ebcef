"""What both registry backends read alike: a ref resolved to its version, and verification.

`store.Registry` (a folder) and `remote.ObjectRegistry` (an object store) inherit it and
give it their own primitives: `names`, `aliases`, `history`, `_exists` and
`_check_version`. So the refusals and their messages are one code, whatever the backend.
"""

from __future__ import annotations

from digits.config import PRODUCTION_ALIAS
from digits.errors import RegistryError
from digits.registry.aliases import VERSION_RE, check_ref
from digits.registry.layout import ALIASES_FILE


class RegistryReads:
    root: object  # a folder's Path or a store's URL: what messages name

    def resolve(self, ref: str = PRODUCTION_ALIAS) -> str:
        """The version (`vN`) a ref names; unknown or path-like refs are refused."""
        check_ref(ref)
        if VERSION_RE.fullmatch(ref):
            if not self._exists(ref):
                raise RegistryError(f"unknown version {ref!r} in registry {self.root}")
            return ref
        version = self.aliases().get(ref)
        if version is None:
            raise RegistryError(f"unknown alias {ref!r} in {self.root}/{ALIASES_FILE}")
        if not self._exists(version):
            raise RegistryError(
                f"{self.root}/{ALIASES_FILE}: alias {ref!r} points at missing {version}"
            )
        return version

    def verify(self, ref: str | None = None) -> list[str]:
        """Check one version file by file (only that one: serving it must not depend on
        other aliases), or all of them plus every alias and the history; return the checked."""
        if ref is not None:
            names = [self.resolve(ref)]
        else:
            for alias in self.aliases():
                self.resolve(alias)  # refuses an alias that points at a missing version
            self.history()
            names = self.names()
        for name in names:
            self._check_version(name)
        return names

    # The backend's primitives.
    def names(self) -> list[str]:
        raise NotImplementedError

    def aliases(self) -> dict[str, str]:
        raise NotImplementedError

    def history(self) -> list[dict]:
        raise NotImplementedError

    def _exists(self, version: str) -> bool:
        raise NotImplementedError

    def _check_version(self, version: str) -> None:
        """Raise RegistryError unless every file of `version` matches its manifest."""
        raise NotImplementedError
