"""`python -m digits`: the `digits` console script, every command."""

from digits.cli import entry

if __name__ == "__main__":
    entry()
