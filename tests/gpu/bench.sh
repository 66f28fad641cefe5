#!/usr/bin/env bash
# `make bench-gpu`: on the lent GPU machine, from the repository root, with .gpu/ carried.
# Full-size random weights (YuE s1 6.2B, s2 1.05B, X-Codec, vocoder, VideoLLaMA3-7B shapes), then
# the engine benchmark (floors, reference, engine, stage 2, decode, parity), the captioner (its
# decoder's floor; 30-s videos at batch 1 and 8) and the served pipeline
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
[ "${SKIP_CAPTIONER:-0}" = 1 ] || python -m v2bgm.bench.captioner --weights "$WEIGHTS" --device cuda --plan 30:1,8 --out "$OUT/bench_captioner.json"
[ "${SKIP_PIPELINE:-0}" = 1 ] || python -m v2bgm.bench.pipeline --weights "$WEIGHTS" --out "$OUT" --concurrent 8 --concurrent-s 10
python - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
parts = {name: out / f"bench_{name}.json" for name in ("engine", "captioner", "pipeline")}
report = {name: json.loads(p.read_text()) for name, p in parts.items() if p.exists()}
(out / "bench_gpu.json").write_text(json.dumps(report, indent=1) + "\n")
print(json.dumps(report, indent=1))
PY
