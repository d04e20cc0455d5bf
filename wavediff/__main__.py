"""``python -m wavediff`` is the ``wavediff`` command."""

from wavediff.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
