#!/usr/bin/env bash
# `make bench-gpu`: on the lent GPU machine, from the repository root, with .gpu/ carried.
# Full-size random weights (YuE s1 6.2B, s2 1.05B, X-Codec, vocoder, VideoLLaMA3-7B shapes), then
# the engine benchmark (floor, reference, engine, stage 2, decode, parity) and the served pipeline
# (10/30/60-s videos, 8 in flight). One JSON report: $OUT/bench_gpu.json (or out/).
set -euo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
BIN=$(tests/gpu/setup_device.sh | tail -1)
export PATH=$BIN:$PATH
export TORCHINDUCTOR_COMPILE_THREADS=1  # no compile worker pool inside the backend stubs
WEIGHTS=${WEIGHTS:-models/full}
[ -f "$WEIGHTS/videollama3/config.json" ] || python -m export --size full --out "$WEIGHTS" --device cuda
[ "${SKIP_ENGINE:-0}" = 1 ] || python -m v2bgm.bench.engine --weights "$WEIGHTS" --device cuda --parity-fp32 64 --out "$OUT/bench_engine.json"
[ "${SKIP_PIPELINE:-0}" = 1 ] || python -m v2bgm.bench.pipeline --weights "$WEIGHTS" --out "$OUT" --concurrent 8 --concurrent-s 10
python - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
parts = {"engine": out / "bench_engine.json", "pipeline": out / "bench_pipeline.json"}
report = {name: json.loads(p.read_text()) for name, p in parts.items() if p.exists()}
(out / "bench_gpu.json").write_text(json.dumps(report, indent=1) + "\n")
print(json.dumps(report, indent=1))
PY
