#!/usr/bin/env bash
# The test suite on this CPU under the lent GPU machine's versions of torch, transformers and peft, which
# differ from requirements.txt's (torch 2.11 and transformers 5.17 there, 2.13 and 5.23 here), so that a
# version break shows here, not in a 15-minute window. The versions are read from the environment of the
# committed results/gpu_report.json (the last window's machine). Arguments go to pytest:
#     bash tools/image_stack_tests.sh                         # the whole suite, about 7 min on 2 cores
#     bash tools/image_stack_tests.sh tests/test_recipes.py   # the recipes, compiled steps among them, about 1
# The virtual environment (VENV, /tmp/image-stack) sees this Python's packages and shadows those three; PyPI's
# torch for Linux is a CUDA build: with its NVIDIA libraries, the environment took 4.6 GB here. The Python
# itself stays this one's (3.11 here, 3.12 on the machine).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-/tmp/image-stack}
read -r TORCH TRANSFORMERS PEFT < <(python -c "
import json
env = json.load(open('results/gpu_report.json'))['environment']
print(env['torch'].split('+')[0], env['transformers'], env['peft'])")
[ -x "$VENV/bin/python" ] || python -m venv --system-site-packages "$VENV"
"$VENV/bin/python" -m pip install -q "torch==$TORCH" "transformers==$TRANSFORMERS" "peft==$PEFT"
"$VENV/bin/python" -c "import torch, transformers, peft
print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
