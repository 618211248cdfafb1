#!/usr/bin/env bash
# Sets up everything smokeflow needs on a fresh machine, idempotently:
#   a virtual environment in .venv with the pinned requirements and smokeflow itself (editable),
#   and Debian's chromium for the browser tests (skipped where apt-get is not available).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and alone: on this project's machines pip takes these two builds from local disk.
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -e .
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "setup.sh: could not install chromium; browser tests will be skipped" >&2
fi
