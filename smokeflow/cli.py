"""``smokeflow <command>``: the command-line interface (also ``python -m smokeflow``).

Each command lives in ``smokeflow/commands/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. The CLI only parses arguments and calls library
functions; errors meant for the user (:class:`smokeflow.errors.SmokeflowError`) are printed as one line,
without a traceback, and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# Command name -> module under smokeflow.commands. Listed in pipeline order; a command whose module does
# not exist yet is simply not offered.
COMMANDS = {
    "simulate": "simulate",
    "extract": "extract",
    "data-stats": "data_stats",
    "train-vqvae": "train_vqvae",
    "inspect-vqvae": "inspect_vqvae",
    "encode-latents": "encode_latents",
    "train": "train",
    "train-motion": "train_motion",
    "distill-guidance": "distill_guidance",
    "distill-student": "distill_student",
    "predict": "predict",
    "evaluate": "evaluate",
}


def available_commands() -> dict[str, str]:
    """Commands whose implementing module exists, name -> full module path."""
    found = {}
    for name, module in COMMANDS.items():
        full = f"smokeflow.commands.{module}"
        if importlib.util.find_spec(full) is not None:
            found[name] = full
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smokeflow",
        description="Predict how smoke moves: simulate or extract smoke data, train the VQVAE and the "
        "flow model, predict and evaluate rollouts.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, full in available_commands().items():
        module = importlib.import_module(full)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from smokeflow.errors import SmokeflowError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except SmokeflowError as err:
        print(f"smokeflow {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"smokeflow {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
