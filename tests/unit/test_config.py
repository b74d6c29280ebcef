"""digits.config's reader of numeric environment values: typed, bounded, one-line refusals."""

import pytest

from digits.environment import env_number
from digits.errors import UsageError

NAME = "DIGITS_TEST_NUMBER"


def test_an_unset_value_is_the_default(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)
    assert env_number(NAME, 90, minimum=1) == 90
    assert env_number(NAME, 2.5, minimum=0.0) == 2.5


def test_a_set_value_has_the_default_type(monkeypatch):
    monkeypatch.setenv(NAME, " 12 ")
    assert env_number(NAME, 90, minimum=1) == 12 and isinstance(env_number(NAME, 90, 1), int)
    monkeypatch.setenv(NAME, "0.5")
    assert env_number(NAME, 600.0, minimum=0.0) == 0.5


@pytest.mark.parametrize(("raw", "default", "minimum"), [
    ("soon", 90, 1), ("", 90, 1), ("2.5", 90, 1), ("0", 90, 1), ("-3", 4, 0), ("1e400", 90, 1),
    ("nan", 1.0, 0.0), ("inf", 1.0, 0.0), ("-0.5", 1.0, 0.0), ("ten", 1.0, 0.0),
])
def test_a_bad_value_is_a_usage_error_naming_variable_and_value(monkeypatch, raw, default,
                                                                 minimum):
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(UsageError) as refused:
        env_number(NAME, default, minimum=minimum)
    message = str(refused.value)
    assert message.startswith(f"{NAME}={raw!r} ") and "\n" not in message
    assert ("an integer" if isinstance(default, int) else "a number") in message
