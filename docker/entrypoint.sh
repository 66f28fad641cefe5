#!/usr/bin/env bash
# Image entrypoint (installed as v2bgm-entrypoint).
#   no arguments, or arguments starting with "-":  serve the model repository with the weights
#       from the volume: exec v2bgm-serve ... "$@" (after "--": extra tritonserver flags)
#   anything else: run that command instead, e.g. `v2bgm-fetch-weights tiny` or `bash`
# exec, so that the server (or the command) gets SIGTERM from `docker stop`/the kubelet directly;
# v2bgm-serve forwards it to tritonserver, which lets in-flight requests finish.
set -euo pipefail

export V2BGM_WEIGHTS="${V2BGM_WEIGHTS:-/weights}"
model_repository="${V2BGM_MODEL_REPOSITORY:-/opt/v2bgm/model_repository}"
device="${V2BGM_DEVICE:-auto}"
ready_timeout_s="${V2BGM_READY_TIMEOUT_S:-1800}" # 7B weights from a network volume are slow
http_port="${V2BGM_HTTP_PORT:-8000}"
grpc_port="${V2BGM_GRPC_PORT:-8001}"
metrics_port="${V2BGM_METRICS_PORT:-8002}"
# Inside the container every address is the container's own: `docker run -p` decides what is
# published; the chart sets the pod's address. (Bare v2bgm-serve: loopback.)
metrics_address="${V2BGM_METRICS_ADDRESS:-0.0.0.0}"

if [[ $# -gt 0 && $1 != -* ]]; then
  exec "$@"
fi

if [[ ! -d $V2BGM_WEIGHTS ]] || [[ -z "$(ls -A "$V2BGM_WEIGHTS")" ]]; then
  echo "v2bgm: no weights in $V2BGM_WEIGHTS: mount the weights volume there," \
    "or fill it first with \`v2bgm-fetch-weights tiny|full|hub\`" >&2
  exit 2
fi

# Serving never downloads anything: every checkpoint comes from the volume.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

exec v2bgm-serve \
  --model-repository "$model_repository" \
  --weights "$V2BGM_WEIGHTS" \
  --device "$device" \
  --ready-timeout "$ready_timeout_s" \
  --http-port "$http_port" \
  --grpc-port "$grpc_port" \
  --metrics-port "$metrics_port" \
  --metrics-address "$metrics_address" \
  "$@"
