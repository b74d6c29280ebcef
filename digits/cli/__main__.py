"""`python -m digits.cli`: the `digits` console script (as `python -m digits`)."""

from digits.cli import entry

if __name__ == "__main__":
    entry()
