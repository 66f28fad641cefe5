#!/usr/bin/env bash
# Puts into .gpu/peer/ (git-ignored, carried with .gpu) what tests/gpu/yue_peer.py needs on the
# GPU machine that is not there: YuE's published inference code, trimmed to what runs, and the
# wheels of the Python packages their code imports that the GPU image lacks (tests/gpu/README.md).
# Run here, from the repository root, after tests/reference/README.md's clone and copy.
set -euo pipefail
PY=${PY:-.venv/bin/python}
YUE=${V2BGM_YUE_REFERENCE:-reference/YuE}
XCODEC=${V2BGM_XCODEC_REFERENCE:-reference/xcodec_mini_infer}
PEER=.gpu/peer
rm -rf "$PEER" && mkdir -p "$PEER/YuE/inference" "$PEER/wheels"
# their code: inference/ without the xcodec_mini_infer submodule (an empty folder in a clone);
# xcodec_mini_infer without RepCodec's example token files (22 MB of data nothing imports) and
# without checkpoints (our files take their places)
tar -C "$YUE/inference" --exclude=xcodec_mini_infer -cf - . | tar -C "$PEER/YuE/inference" -xf -
tar -C "$XCODEC" --exclude=RepCodec/examples --exclude='*.pth' --exclude='*.ckpt' \
  --exclude=__pycache__ -cf - . | tar -C "$PEER" --transform 's,^\.,xcodec_mini_infer,' -xf -
# what their run imports from outside the GPU image (the CPU smoke run's report lists every
# third-party module their run loaded: theirs.modules); pure-Python wheels unless noted
# (the CPU smoke run, 2026-12-05: omegaconf antlr4 audiotools argbind docstring_parser ffmpy
# flatten_dict julius randomname importlib_resources soundfile _cffi_backend; the rest it loaded
# is on the image)
PURE="omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 descript-audiotools==0.7.2 argbind==0.3.9
  docstring-parser==0.18.0 flatten-dict==0.5.0 julius==0.2.8 ffmpy==1.0.0 randomname==0.2.1
  importlib-resources==7.1.0"
BUILT="soundfile==0.13.1 cffi==2.0.0"  # compiled (soundfile bundles libsndfile): for cp312
# pure Python: a wheel where PyPI has one, else built from the sdist (antlr4 4.9.3, argbind ...)
"$PY" -m pip wheel -q --no-deps -w "$PEER/wheels" $PURE
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$PEER/wheels" $BUILT
du -sb "$PEER" "$PEER/YuE" "$PEER/xcodec_mini_infer" "$PEER/wheels"
