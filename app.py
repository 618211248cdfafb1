"""Launch the smokeflow UI: ``python app.py [--checkpoint DIR] [--data DIR] [--host H] [--port P] [--auth U:P]``.

Listens on 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="smokeflow app")
    parser.add_argument("--checkpoint", default="checkpoints/default", help="model folder to open with")
    parser.add_argument("--data", default=None, help="dataset root to browse")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--auth", default=None, help="user:password to require a login")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    print("smokeflow app: the UI is not built yet. Available now: the `smokeflow` command line "
          "(see `smokeflow --help`).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
