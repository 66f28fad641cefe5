"""Random-weight checkpoints of the service's models, in the real on-disk layouts.

`python -m export --size tiny --out models/tiny --seed 0` writes, under the weights folder
(subfolder names from `v2bgm.checkpoints`):

- `videollama3/`   VideoLlama3ForConditionalGeneration + VideoLlama3Processor + tokenizer
- `yue-s1/`        YuE stage 1, LlamaForCausalLM (+ generation_config.json)
- `yue-s2/`        YuE stage 2, LlamaForCausalLM (+ generation_config.json)
- `yue-tokenizer/tokenizer.model`  YuE's SentencePiece model (83734 pieces)
- `xcodec/`        XcodecModel, converted from an original-layout X-Codec checkpoint
- `yue-vocoder/`   YuE's 44.1 kHz upsampler in its own layout (config.yaml + two decoder .pth)

See `export/__main__.py` for the options and each module's docstring for where its numbers come
from.
"""
