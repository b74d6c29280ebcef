"""The storage interface of an object-store registry, and its S3 backend (boto3).

Six operations are all `digits.registry.remote` needs, and each is one request: read (with
the object's ETag, or "unchanged" when it still has the ETag we saw), create only if absent
(`If-None-Match: *`), replace only what we read (`If-Match: <etag>`), write, list and
delete. The two
conditional writes are what makes the registry safe without a lock, so a store that ignores
them is refused before the first write (`check_conditional_writes`).

boto3 rather than obstore or s3fs: it is the AWS SDK itself, reads the standard AWS
configuration (`AWS_ENDPOINT_URL`, keys, `AWS_REGION`, profiles, instance roles) as every
other tool a team runs does, and exposes `IfNoneMatch`/`IfMatch` on `put_object` as plain
arguments; s3fs goes through aiobotocore (its own botocore pin) and obstore is a younger
Rust binding whose conditional-put API changed between releases.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from digits.errors import EnvironmentFault, RegistryError

UNCHANGED = "unchanged"  # what `read` answers when the object still has the ETag we saw


@dataclass(frozen=True)
class Stored:
    data: bytes
    etag: str


class StoreUnavailable(EnvironmentFault):
    """The store did not answer, or refused our credentials: the machine's or the
    configuration's fault, not the registry's (exit 7)."""


class ObjectStore(Protocol):
    url: str  # s3://BUCKET/PREFIX
    endpoint: str  # where it is reached (the local cache is kept per endpoint)

    def read(self, key: str, unless_etag: str | None = None) -> Stored | None | str: ...

    def create(self, key: str, data: bytes) -> bool: ...

    def replace(self, key: str, data: bytes, etag: str) -> bool: ...

    def write(self, key: str, data: bytes) -> None: ...

    def list(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...


class S3Objects:
    """Keys under `s3://BUCKET/PREFIX`, relative to the prefix."""

    def __init__(self, url: str) -> None:
        import boto3
        from botocore.config import Config

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise RegistryError(f"{url}: expected s3://BUCKET/PREFIX")
        self.url = url.rstrip("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        # Bounded waits: a poll of an unreachable store must fail in seconds, and the serving
        # side keeps its model meanwhile. Everything else comes from the AWS configuration.
        config = Config(connect_timeout=5, read_timeout=60,
                        retries={"max_attempts": 3, "mode": "standard"})
        self.client = boto3.session.Session().client("s3", config=config)
        self.endpoint = self.client.meta.endpoint_url  # AWS's own when none is configured

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def read(self, key: str, unless_etag: str | None = None) -> Stored | None | str:
        extra = {"IfNoneMatch": unless_etag} if unless_etag else {}
        with self.answers(key, {"304": UNCHANGED, "NoSuchKey": None}) as answer:
            reply = self.client.get_object(Bucket=self.bucket, Key=self.key(key), **extra)
            answer.value = Stored(reply["Body"].read(), reply["ETag"])
        return answer.value

    def create(self, key: str, data: bytes) -> bool:
        with self.answers(key, {"PreconditionFailed": False}) as answer:
            self.client.put_object(Bucket=self.bucket, Key=self.key(key), Body=data,
                                   IfNoneMatch="*")
            answer.value = True
        return answer.value

    def replace(self, key: str, data: bytes, etag: str) -> bool:
        # NoSuchKey: deleted since we read it; the caller reads again, as after a 412.
        with self.answers(key, {"PreconditionFailed": False, "NoSuchKey": False}) as answer:
            self.client.put_object(Bucket=self.bucket, Key=self.key(key), Body=data,
                                   IfMatch=etag)
            answer.value = True
        return answer.value

    def write(self, key: str, data: bytes) -> None:
        with self.answers(key, {}):
            self.client.put_object(Bucket=self.bucket, Key=self.key(key), Body=data)

    def list(self, prefix: str) -> list[str]:
        start = len(self.key(""))
        keys: list[str] = []
        with self.answers(prefix, {}):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.key(prefix))
            keys = [item["Key"][start:] for page in pages for item in page.get("Contents", [])]
        return keys

    def delete(self, key: str) -> None:
        with self.answers(key, {"NoSuchKey": None}):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(key))

    def answers(self, key: str, expected: dict[str, object]) -> _Answers:
        return _Answers(f"{self.url}/{key}", expected)


class _Answers:
    """Turns the store's errors into ours: an expected code becomes `value` (412: the
    condition failed), the rest a one-line error naming the object."""

    def __init__(self, where: str, expected: dict[str, object]) -> None:
        self.where, self.expected, self.value = where, expected, None

    def __enter__(self) -> _Answers:
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(error, ClientError):
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            answer = code or status  # a HEAD-like answer has no body, so no code
            if answer in self.expected:
                self.value = self.expected[answer]
                return True
            if status in ("401", "403") or code in ("InvalidAccessKeyId", "AccessDenied",
                                                    "SignatureDoesNotMatch", "NoSuchBucket"):
                raise StoreUnavailable(f"{self.where}: {code or status} (check the AWS "
                                       "credentials, AWS_ENDPOINT_URL and the bucket)") from error
            if status.startswith("5"):  # the store's trouble, not the registry's content
                raise StoreUnavailable(f"{self.where}: the store answered {code or status}"
                                       ) from error
            raise RegistryError(f"{self.where}: the store answered {code or status}") from error
        if isinstance(error, BotoCoreError):
            raise StoreUnavailable(f"{self.where}: {error}") from error
        return False


def check_conditional_writes(store: ObjectStore) -> None:
    """Refuse a store that does not enforce If-None-Match: without it two publishers could
    both "create" the same version, and the registry would silently lose one."""
    probe = f".probe-{uuid.uuid4().hex}"
    try:
        first = store.create(probe, b"1")
        second = store.create(probe, b"2")
    finally:
        store.delete(probe)
    if not (first and not second):
        raise RegistryError(
            f"{store.url}: the store does not enforce conditional writes (If-None-Match); "
            "refusing to write, as two publishers could overwrite each other"
        )
