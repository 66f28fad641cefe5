#!/usr/bin/env bash
# On the GPU machine, from the repository root (with .gpu carried): installs the peer's missing
# packages from .gpu/peer/wheels into /tmp/peer-site (for /opt/torch's Python, which runs their
# infer.py) and prints the environment tests/gpu/yue_peer.py needs, for `eval`.
set -euo pipefail
SITE=/tmp/peer-site
/opt/torch/.venv/bin/python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target "$SITE" .gpu/peer/wheels/*.whl >&2
# stop here, naming what is missing, if their imports fail (xcodec_mini_infer's dac -> audiotools)
PYTHONPATH=$SITE /opt/torch/.venv/bin/python3 -c \
  "import omegaconf, soundfile, audiotools, einops, torchaudio, sentencepiece" >&2
echo "export V2BGM_YUE_REFERENCE=$(pwd)/.gpu/peer/YuE V2BGM_XCODEC_REFERENCE=$(pwd)/.gpu/peer/xcodec_mini_infer PEER_SITE=$SITE"
