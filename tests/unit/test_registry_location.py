"""Where a registry lives: a folder, or s3://BUCKET/PREFIX kept whole from the command line,
the environment and the Python API to the registry that opens it (no store contacted)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from digits.cli import app
from digits.environment import registry_cache
from digits.errors import RegistryError
from digits.registry import location
from digits.registry.location import open_registry, registry_location
from digits.registry.remote import ObjectRegistry
from digits.registry.store import Registry


def test_an_s3_url_stays_a_url_and_a_folder_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGITS_REGISTRY", raising=False)
    assert registry_location("s3://models/team/digits") == "s3://models/team/digits"
    assert registry_location("reg") == tmp_path / "reg"
    assert registry_location(None) == tmp_path / "artifacts" / "registry"
    monkeypatch.setenv("DIGITS_REGISTRY", "s3://models/digits")
    assert registry_location(None) == "s3://models/digits"


@pytest.mark.slow  # imports boto3 and builds a client: a second or two here
def test_open_registry_picks_the_backend_and_passes_a_registry_through(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # never contacted here
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("DIGITS_REGISTRY_CACHE", str(tmp_path / "cache"))
    remote = open_registry("s3://models/team/digits/")
    assert isinstance(remote, ObjectRegistry) and remote.root == "s3://models/team/digits"
    assert (remote.objects.bucket, remote.objects.prefix) == ("models", "team/digits")
    assert remote.cache == tmp_path / "cache" / "127.0.0.1_9" / "models" / "team" / "digits"
    assert open_registry(remote) is remote
    folder = open_registry(tmp_path / "reg")
    assert isinstance(folder, Registry) and open_registry(folder) is folder
    with pytest.raises(RegistryError, match="expected s3://BUCKET/PREFIX"):
        open_registry("s3:///digits")


def test_the_cache_defaults_under_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("DIGITS_REGISTRY_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert registry_cache("s3://b/p", "https://s3.eu-west-1.amazonaws.com") == (
        tmp_path / ".cache/digits/registry/s3.eu-west-1.amazonaws.com/b/p")


@pytest.mark.parametrize("how", ["option", "environment"])
def test_every_command_gets_the_url_unfolded(how, monkeypatch):
    """typer's Path type would turn s3://b/p into s3:/b/p: the option is a string."""
    seen = []

    def record(where=None, lock_timeout=None):
        seen.append(where)
        raise RegistryError("stop here")

    monkeypatch.setattr(location, "open_registry", record)
    args, env = ["models"], {}
    if how == "option":
        args += ["--registry", "s3://models/digits"]
    else:
        env = {"DIGITS_REGISTRY": "s3://models/digits"}
    result = CliRunner().invoke(app, args, env=env)
    assert isinstance(result.exception, RegistryError) and seen == ["s3://models/digits"]
    assert not isinstance(seen[0], Path)
