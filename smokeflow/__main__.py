"""``python -m smokeflow`` is the same as the ``smokeflow`` command."""

from smokeflow.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
