"""``python -m minillm ...`` runs the command line (see :mod:`minillm.cli`)."""

from minillm.cli.entry import main

if __name__ == "__main__":
    raise SystemExit(main())
