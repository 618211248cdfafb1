"""One module per CLI command: ``HELP``, ``add_arguments(parser)``, ``run(args) -> int``.

These are thin adapters: they parse nothing themselves beyond argparse and call library functions.
"""
