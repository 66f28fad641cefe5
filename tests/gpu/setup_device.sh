#!/usr/bin/env bash
# Prepares the lent GPU machine (Python 3.12 with torch/transformers in /opt/torch/.venv, no
# network) to run this repository's server: a venv whose own numpy is 1.26 (the Python-backend
# stub returns empty tensors with numpy 2) and which sees /opt/torch's packages through a .pth
# file, the package sources, and tritonserver unpacked from the carried, trimmed pytriton wheel.
# Run from the repository root with the carried folder .gpu/ (see tests/gpu/README.md).
set -euo pipefail
ROOT=$(pwd)
VENV=/tmp/v2bgm-venv
python3 -m venv "$VENV"
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$VENV/bin/python" -m pip install -q --no-index --no-deps .gpu/*.whl
tar -C "$SITE" -xzf .gpu/tritonclient.tar.gz
TORCH_SITE=$(/opt/torch/.venv/bin/python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
printf '%s\n%s\n%s\n%s\n' "$ROOT/src" "$ROOT/contract" "$ROOT/client" "$TORCH_SITE" > "$SITE/zz_v2bgm.pth"
# /opt/torch's scikit-learn, SciPy and pandas are built for numpy 2; transformers imports sklearn
# when it finds it. Hide them from this numpy-1.26 venv (find_spec answers None for them).
echo 'import sys; [sys.modules.setdefault(m, None) for m in ("sklearn", "scipy", "pandas")]' \
  > "$SITE/zz_hide_numpy2_builds.pth"
# The models load with device_map, which needs accelerate (carried, with psutil) and what it
# imports from /opt/torch (transformers' own requirements): stop here, naming what is missing.
"$VENV/bin/python" -c "import accelerate, huggingface_hub, packaging, psutil, safetensors, yaml" >&2
mkdir -p .cache/pytriton_wheel
tar -C .cache/pytriton_wheel -xJf .gpu/triton312.tar.xz
echo "$VENV/bin"
