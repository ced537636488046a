"""``python -m pairflow`` is the same as the ``pairflow`` console script."""

from pairflow.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
