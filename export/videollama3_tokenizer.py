"""VideoLLaMA3's tokenizer, rebuilt locally: a Qwen2-style byte-level BPE learned from the corpus.

The real one is Qwen2.5's (151k byte-level BPE). Ours keeps its machinery -- `Qwen2Tokenizer`,
Qwen2's pre-tokenizer regex, NFC, byte-level decoding -- and its special tokens and their roles,
and learns a small vocabulary from `export.corpus` so generated ids decode to English words.
The chat template is ChatML with VideoLLaMA3's media items.
"""

from __future__ import annotations

import json

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from export.corpus import CORPUS

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, IMAGE_PAD, VIDEO_PAD)  # Qwen's relative order
EOS_TOKEN = IM_END
PAD_TOKEN = ENDOFTEXT

MAX_VOCAB = 2048  # an upper bound; the corpus runs out of merges first (about 1.1k tokens)
MIN_MERGE_FREQUENCY = 1
MODEL_MAX_LENGTH = 32768  # Qwen2.5-7B's max_position_embeddings

DAMO_SYSTEM_PROMPT = (
    "You are VideoLLaMA3 created by Alibaba DAMO Academy, a helpful assistant to help people "
    "understand images and videos."
)

# lkhl/VideoLLaMA3-2B-Image-HF's chat_template.jinja (the checkpoint transformers' docs use), with
# its newlines written as \n. transformers renders chat templates with trim_blocks and
# lstrip_blocks, so the block tags add no whitespace.
CHAT_TEMPLATE = (
    "{%- set identifier = 'im' %}\n"
    "{% for message in messages %}\n"
    "{% if add_system_prompt and loop.first and message['role'] != 'system' %}\n"
    "{{- '<|im_start|>system\\n" + DAMO_SYSTEM_PROMPT + "<|im_end|>\\n' -}}\n"
    "{% endif %}\n"
    "{% if message['role'] == 'stream' %}\n"
    "{% set identifier = 'stream' %}\n"
    "{% else %}\n"
    "{% set identifier = 'im' %}\n"
    "{% endif %}\n"
    "{{- '<|' + identifier + '_start|>' + message['role'] + '\\n' -}}\n"
    "{% if message['content'] is string %}\n"
    "{{- message['content'] -}}\n"
    "{% else %}\n"
    "{% for content in message['content'] %}\n"
    "{% if content['type'] == 'text' %}\n"
    "{{- content['text'] -}}\n"
    "{% elif content['type'] == 'image' %}\n"
    "{{- '<|image_pad|>' + '\\n' -}}\n"
    "{% elif content['type'] == 'video' %}\n"
    "{{- '<|video_pad|>' + '\\n' -}}\n"
    "{% endif %}\n"
    "{% endfor %}\n"
    "{% endif %}\n"
    "{{- '<|' + identifier + '_end|>' -}}\n"
    "{% if identifier != 'stream' %}\n"
    "{{- '\\n' -}}\n"
    "{% endif %}\n"
    "{% endfor %}\n"
    "{% if add_generation_prompt %}\n"
    "{{- '<|im_start|>assistant\\n' -}}\n"
    "{% endif %}\n"
)


def _qwen2_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def learn_vocab(text: str = CORPUS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE (all 256 byte symbols + merges) trained on `text`; deterministic."""
    bpe = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = _qwen2_pre_tokenizer()
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=MAX_VOCAB,
        min_frequency=MIN_MERGE_FREQUENCY,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    bpe.train_from_iterator(text.splitlines(keepends=True), trainer)
    model = json.loads(bpe.to_str())["model"]
    return dict(model["vocab"]), [tuple(pair) for pair in model["merges"]]


def build_tokenizer() -> Qwen2Tokenizer:
    vocab, merges = learn_vocab()
    for token in SPECIAL_TOKENS:  # after the BPE vocabulary, in Qwen's order
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens={"image_token": IMAGE_PAD, "video_token": VIDEO_PAD},
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_tokens([AddedToken(t, special=True) for t in SPECIAL_TOKENS], special_tokens=True)
    return tokenizer
