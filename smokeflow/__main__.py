"""``python -m smokeflow`` is the same as the ``smokeflow`` command."""

import os

from smokeflow.cli import main

if __name__ == "__main__":
    code = main()
    if "RANK" in os.environ:  # a torchrun process (``--num-gpus`` re-launches through ``python -m smokeflow``)
        from smokeflow.training.distributed import exit_torchrun_process

        exit_torchrun_process(int(code or 0))
    raise SystemExit(code)
