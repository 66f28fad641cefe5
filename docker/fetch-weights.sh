#!/usr/bin/env bash
# The optional init step (installed as v2bgm-fetch-weights): fill the weights volume once.
#   v2bgm-fetch-weights tiny [DIR]  tiny random-weight checkpoints (CPU demo, smoke tests)
#   v2bgm-fetch-weights full [DIR]  random weights of the real shapes (GPU speed figures)
#   v2bgm-fetch-weights hub  [DIR]  the real YuE checkpoints from the Hugging Face hub (network)
# DIR defaults to $V2BGM_WEIGHTS (/weights). A finished step that `v2bgm-weights check` passes
# leaves DIR/.v2bgm-<mode>, and a second run with the same mode does nothing, so an
# initContainer can run it on every start.
set -euo pipefail

usage() {
  sed -n '2,7s/^# \{0,1\}//p' "$0" >&2
  exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
mode="$1"
dir="${2:-${V2BGM_WEIGHTS:-/weights}}"
home="${V2BGM_HOME:-/opt/v2bgm}" # where export/ lives
python="${PYTHON:-python3}"
marker="$dir/.v2bgm-$mode"

case "$mode" in
tiny | full | hub) ;;
*) usage ;;
esac

if [[ -e $marker ]]; then
  echo "v2bgm-fetch-weights: $dir already holds the $mode weights ($marker)"
  exit 0
fi
mkdir -p "$dir"

device=cpu # where random weights are initialised
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then device=cuda; fi

case "$mode" in
tiny)
  (cd "$home" && "$python" -m export --size tiny --out "$dir")
  ;;
full)
  (cd "$home" && "$python" -m export --size full --out "$dir" --device "$device")
  ;;
hub)
  # The README's "Real weights" steps: YuE's LMs and tokenizer as they are, YuE's X-Codec
  # converted to XcodecModel, its vocoder files copied, VideoLLaMA3 converted to the native layout.
  hf download m-a-p/YuE-s1-7B-anneal-en-cot --local-dir "$dir/yue-s1"
  hf download m-a-p/YuE-s2-1B-general --local-dir "$dir/yue-s2"
  # YuE's SentencePiece model is not on the hub: its GitHub repository at a pinned commit,
  # kept only if its SHA-256 is the one recorded in v2bgm/checkpoints.py.
  "$python" -m v2bgm.weights fetch-tokenizer "$dir"
  xcodec_src="$dir/.xcodec_mini_infer"
  hf download m-a-p/xcodec_mini_infer final_ckpt/ckpt_00360000.pth final_ckpt/config.yaml \
    semantic_ckpts/hf_1_325000/config.json decoders/config.yaml decoders/decoder_131000.pth \
    decoders/decoder_151000.pth --local-dir "$xcodec_src"
  (cd "$home" && "$python" -m export.convert_xcodec --out "$dir/xcodec" \
    --checkpoint "$xcodec_src/final_ckpt/ckpt_00360000.pth" --config "$xcodec_src/final_ckpt/config.yaml")
  mkdir -p "$dir/yue-vocoder"
  cp "$xcodec_src/decoders/config.yaml" "$xcodec_src/decoders/decoder_131000.pth" \
    "$xcodec_src/decoders/decoder_151000.pth" "$dir/yue-vocoder/"
  rm -rf "$xcodec_src"
  videollama3_src="$dir/.videollama3-src"
  hf download DAMO-NLP-SG/VideoLLaMA3-7B --local-dir "$videollama3_src"
  (cd "$home" && "$python" -m export.convert_videollama3 --src "$videollama3_src" --out "$dir/videollama3")
  rm -rf "$videollama3_src"
  # A part added to export/ later without a hub source here: random weights of the real shapes,
  # so that the server starts; the log says which.
  read -r -a others < <(cd "$home" && "$python" -c 'from export.parts import PART_NAMES
print(*(p for p in PART_NAMES if p not in {"yue-s1", "yue-s2", "yue-tokenizer", "xcodec", "yue-vocoder", "videollama3"}))')
  if [[ ${#others[@]} -gt 0 ]]; then
    only=()
    for part in "${others[@]}"; do only+=(--only "$part"); done
    (cd "$home" && "$python" -m export --size full --out "$dir" --device "$device" "${only[@]}")
    echo "v2bgm-fetch-weights: RANDOM weights in ${others[*]} (no converter yet)" >&2
  fi
  ;;
esac
# Every expected file, config and tensor shape, without loading (v2bgm.weights): a failure
# leaves no marker, so the next start tries again and the server never starts on it.
"$python" -m v2bgm.weights check "$dir"
touch "$marker"
echo "v2bgm-fetch-weights: $mode weights ready in $dir"
