"""The tokens whose labels the service trusts (digits.monitoring.tokens, `digits feedback
tokens`): made at random, kept hashed beside the prediction log, several at once, each named,
revocable; the service's check reads the file again when it changes."""

from __future__ import annotations

import json
import re
import stat
import threading

import pytest

from digits.errors import DataError, UsageError
from digits.monitoring.log import PredictionLog
from digits.monitoring.records import MARKER
from digits.monitoring.tokens import (
    TOKENS_FILE,
    TokenCheck,
    add_token,
    hash_token,
    list_tokens,
    read_tokens,
    revoke_token,
)


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "log"


def test_a_token_is_random_shown_once_and_kept_hashed_for_its_owner_only(folder):
    token = add_token(folder, "alice")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)  # secrets.token_urlsafe(32): 256 bits
    assert add_token(folder, "bob") != token
    text = (folder / TOKENS_FILE).read_text()
    assert token not in text
    [alice, bob] = read_tokens(folder)
    assert (alice.name, alice.sha256, alice.revoked_at) == ("alice", hash_token(token), None)
    assert bob.name == "bob" and bob.active
    assert json.loads(text)["format"] == "digits feedback tokens"
    assert stat.S_IMODE((folder / TOKENS_FILE).stat().st_mode) == 0o600
    assert (folder / MARKER).is_file()  # a log folder, as `digits serve --log-dir` makes
    PredictionLog(folder).close()  # which the service takes
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_name_is_taken_for_good_and_checked(folder):
    add_token(folder, "alice")
    revoke_token(folder, "alice")
    with pytest.raises(UsageError, match="'alice' is taken .revoked at"):
        add_token(folder, "alice")
    for name in ("review:bob", "", "-x", "a b", "x" * 65, "é"):
        with pytest.raises(UsageError, match="token name"):
            add_token(folder, name)
    assert [t.name for t in list_tokens(folder)] == ["alice"]


def test_revoking_keeps_the_record_and_the_check_follows_the_file(folder):
    alice, bob = add_token(folder, "alice"), add_token(folder, "bob")
    check = TokenCheck(folder)
    assert (check.name_of(alice), check.name_of(bob), check.name_of("x" * 43)) == (
        "alice", "bob", None)
    revoked = revoke_token(folder, "alice")
    assert revoked.revoked_at is not None
    assert check.name_of(alice) is None and check.name_of(bob) == "bob"  # no new check made
    assert revoke_token(folder, "alice") == revoked  # again: unchanged
    carol = add_token(folder, "carol")
    assert check.name_of(carol) == "carol"
    with pytest.raises(UsageError, match="no token named 'dave'"):
        revoke_token(folder, "dave")


def test_a_tokens_file_that_does_not_read_lets_no_token_in(folder):
    token = add_token(folder, "alice")
    check = TokenCheck(folder)
    assert check.name_of(token) == "alice"
    (folder / TOKENS_FILE).write_text("{not json")
    with pytest.raises(DataError, match="not a tokens file"):
        check.name_of(token)
    with pytest.raises(DataError, match="not a tokens file"):
        check.name_of(token)  # still refused: it fails closed, not open
    assert TokenCheck(folder / "none").name_of(token) is None  # no file: no tokens


def test_two_adds_at_once_lose_neither(folder):
    add_token(folder, "first")
    names = [f"client-{i}" for i in range(8)]
    threads = [threading.Thread(target=add_token, args=(folder, name)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(t.name for t in read_tokens(folder)) == sorted(["first", *names])


def test_list_and_revoke_need_a_log(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list_tokens(tmp_path / "none")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a prediction log"):
        revoke_token(tmp_path / "other", "alice")
    with pytest.raises(DataError, match="not a prediction log"):
        add_token(tmp_path / "other", "alice")


# --- the command line ---------------------------------------------------------------------


def test_tokens_add_prints_the_token_alone_and_list_and_revoke_say_what_is_kept(cli, folder):
    code, out, err = cli("feedback", "tokens", "add", "alice", "--log-dir", folder)
    assert code == 0, err
    token = out.strip()
    assert out == f"{token}\n" and TokenCheck(folder).name_of(token) == "alice"
    assert "shown only now" in err and "Authorization: Bearer" in err
    code, out, err = cli("feedback", "--log-dir", folder, "tokens", "list")  # feedback's option
    assert code == 0, err
    assert out.split()[0] == "alice" and out.split()[-1] == "active" and token not in out
    code, out, err = cli("feedback", "tokens", "revoke", "alice", "--log-dir", folder)
    assert code == 0 and out.startswith("revoked alice at "), err
    code, out, _ = cli("feedback", "tokens", "list", "--log-dir", folder)
    assert code == 0 and "revoked 20" in out
    assert TokenCheck(folder).name_of(token) is None


@pytest.mark.parametrize("args, code, message", [
    (["feedback", "tokens", "add", "alice", "--log-dir", "{log}"], 2, "'alice' is taken"),
    (["feedback", "tokens", "add", "a:b", "--log-dir", "{log}"], 2, "token name 'a:b'"),
    (["feedback", "tokens", "revoke", "bob", "--log-dir", "{log}"], 2, "no token named 'bob'"),
    (["feedback", "tokens", "list", "--log-dir", "{tmp}/none"], 4, "none does not exist"),
    (["feedback", "tokens", "list"], 2, "no prediction log: pass --log-dir DIR"),
])
def test_tokens_errors_are_one_line_with_the_documented_code(
        cli, folder, tmp_path, monkeypatch, args, code, message):
    monkeypatch.delenv("DIGITS_LOG_DIR", raising=False)
    add_token(folder, "alice")
    got, _, err = cli(*[a.format(tmp=tmp_path, log=folder) for a in args])
    assert got == code, err
    assert message in err and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
