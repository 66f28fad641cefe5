"""YuE's SentencePiece tokenizer, rebuilt with the real piece layout and a tiny learned text part.

The real `mm_tokenizer_v0.2_hf/tokenizer.model` is LLaMA's byte-fallback BPE model extended to
83734 pieces. This one keeps every id that YuE's code relies on:

- 0 `<unk>` (UNKNOWN), 1 `<s>`, 2 `</s>` (CONTROL), 3..258 `<0x00>`..`<0xFF>` (BYTE);
- 259 `▁▁` (score -1e9), then BPE merges learned from `export.corpus` (scores -1, -2, ...), then
  the single characters, then UNUSED filler pieces up to id 31999;
- 32000..32021 the special tokens in `SPECIAL_TOKENS` order, then the codec pieces
  (`<dac16k/0/0>` ... `<semantic/a/8191>`), all NORMAL with score 0, up to id 83733.

Like the real one, `<SOA>` typed as text stays text: no learned piece leads to it by merging.
"""

from __future__ import annotations

import collections
import itertools
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path

from export.corpus import CORPUS
from export.spm_writer import (
    ModelType,
    NormalizerSpec,
    Piece,
    PieceType,
    TrainerField,
    TrainerValue,
    encode_model_proto,
)
from v2bgm.yue.tokens import (
    CODEC_FAMILIES,
    CODEC_FIRST_ID,
    SPECIAL_TOKENS,
    SPM_PIECES,
    TEXT_VOCAB_SIZE,
)

WHITESPACE_SYMBOL = "▁"  # U+2581, SentencePiece's escaped space
UNK_PIECE, BOS_PIECE, EOS_PIECE, PAD_PIECE = "<unk>", "<s>", "</s>", "<pad>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
PAD_ID = -1  # no pad piece, as in LLaMA's model
BYTE_PIECES = 256
FIRST_NORMAL_ID = 3 + BYTE_PIECES  # 259
DOUBLE_SPACE_SCORE = -1e9  # LLaMA's piece 259 `▁▁` never wins a merge
MAX_MERGES = 600  # "a few hundred" learned text pieces
MIN_PAIR_COUNT = 2  # stop merging once every pair is a one-off
MAX_PIECE_LENGTH = 16
UNUSED_PIECE = "<unused{index}>"  # filler names: `<u` is never a piece, so these never form
PRINTABLE_ASCII = tuple(chr(c) for c in range(0x21, 0x7F))
CHARACTER_COVERAGE = 0.99995
UNK_SURFACE = " ⁇ "


def byte_piece(value: int) -> str:
    return f"<0x{value:02X}>"


def codec_piece_names() -> Iterator[str]:
    """`<family/codebook/code>`; `<family/code>` for one-codebook families (mert, hubert...)."""
    for family, codebooks, size in CODEC_FAMILIES:
        for codebook in range(codebooks):
            for code in range(size):
                yield f"<{family}/{codebook}/{code}>" if codebooks > 1 else f"<{family}/{code}>"


# --- learning merges -----------------------------------------------------------------------------
def _char_class(char: str) -> str:
    if char.isdigit():
        return f"digit:{char}"  # split_digits: every digit is its own word
    if char.isalpha():
        return "letter"
    return "other:" + unicodedata.category(char)


def pretokenize(text: str) -> list[str]:
    """Split text as SentencePiece's trainer does (roughly): at whitespace, letter/digit/other
    boundaries and between digits; `▁` marks a preceding space and sticks to what follows."""
    words: list[str] = []
    for raw in text.split():
        chunk, prev = WHITESPACE_SYMBOL, None
        for char in raw:
            cls = _char_class(char)
            if prev is not None and (cls != prev or cls.startswith("digit")):
                words.append(chunk)
                chunk = ""
            chunk += char
            prev = cls
        words.append(chunk)
    return words


def learn_merges(text: str, max_merges: int = MAX_MERGES) -> list[str]:
    """Greedy BPE over word counts; returns merged pieces in merge order (highest priority first).

    Ties go to the lexicographically smallest pair, so the result depends on the text only.
    """
    words = collections.Counter(tuple(word) for word in pretokenize(text))
    merges: list[str] = []
    seen: set[str] = set()
    while len(merges) < max_merges:
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for symbols, count in words.items():
            for pair in itertools.pairwise(symbols):
                pairs[pair] += count
        candidates = [
            (count, pair)
            for pair, count in pairs.items()
            if count >= MIN_PAIR_COUNT and len(pair[0] + pair[1]) <= MAX_PIECE_LENGTH
        ]
        if not candidates:
            break
        best_count = max(count for count, _ in candidates)
        left, right = min(pair for count, pair in candidates if count == best_count)
        merged = left + right
        if merged not in seen:
            seen.add(merged)
            merges.append(merged)
        words = collections.Counter({_merge(s, left, right): c for s, c in words.items()})
    return merges


def _merge(symbols: tuple[str, ...], left: str, right: str) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
            out.append(left + right)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


# --- the piece table -----------------------------------------------------------------------------
def text_pieces(merges: Sequence[str], characters: Sequence[str]) -> list[Piece]:
    """Pieces 259..31999: `▁▁`, learned merges, single characters, then UNUSED filler."""
    names = [WHITESPACE_SYMBOL * 2]
    for name in [*merges, *characters]:
        if name not in names:
            names.append(name)
    pieces = [Piece(names[0], DOUBLE_SPACE_SCORE)]
    pieces += [Piece(name, -float(rank)) for rank, name in enumerate(names[1:], start=1)]
    filler = TEXT_VOCAB_SIZE - FIRST_NORMAL_ID - len(pieces)
    if filler < 0:
        raise ValueError(f"{len(pieces)} text pieces do not fit below id {TEXT_VOCAB_SIZE}")
    pieces += [Piece(UNUSED_PIECE.format(index=i), 0.0, PieceType.UNUSED) for i in range(filler)]
    return pieces


def corpus_characters(text: str) -> list[str]:
    """Single-character pieces: `▁`, printable ASCII and any other printable character of the
    text (everything else falls back to bytes)."""
    chars = {WHITESPACE_SYMBOL, *PRINTABLE_ASCII}
    chars |= {c for c in text if c.isprintable() and not c.isspace()}
    return sorted(chars)


def build_pieces(text: str = CORPUS) -> list[Piece]:
    pieces = [
        Piece(UNK_PIECE, 0.0, PieceType.UNKNOWN),
        Piece(BOS_PIECE, 0.0, PieceType.CONTROL),
        Piece(EOS_PIECE, 0.0, PieceType.CONTROL),
    ]
    pieces += [Piece(byte_piece(b), 0.0, PieceType.BYTE) for b in range(BYTE_PIECES)]
    pieces += text_pieces(learn_merges(text), corpus_characters(text))
    specials = sorted(SPECIAL_TOKENS.items(), key=lambda item: item[1])
    if [token_id for _, token_id in specials] != list(range(TEXT_VOCAB_SIZE, CODEC_FIRST_ID)):
        raise ValueError("SPECIAL_TOKENS must fill the ids between the text and codec pieces")
    pieces += [Piece(name) for name, _ in specials]
    pieces += [Piece(name) for name in codec_piece_names()]
    if len(pieces) != SPM_PIECES:
        raise ValueError(f"built {len(pieces)} pieces, YuE's tokenizer has {SPM_PIECES}")
    return pieces


def trainer_spec() -> dict[TrainerField, TrainerValue]:
    return {
        TrainerField.INPUT: "export/corpus.py",
        TrainerField.MODEL_PREFIX: "yue-tokenizer",
        TrainerField.MODEL_TYPE: int(ModelType.BPE),
        TrainerField.VOCAB_SIZE: TEXT_VOCAB_SIZE,
        TrainerField.CHARACTER_COVERAGE: CHARACTER_COVERAGE,
        TrainerField.MAX_SENTENCEPIECE_LENGTH: MAX_PIECE_LENGTH,
        TrainerField.SPLIT_BY_UNICODE_SCRIPT: True,
        TrainerField.SPLIT_BY_WHITESPACE: True,
        TrainerField.SPLIT_BY_NUMBER: True,
        TrainerField.SPLIT_DIGITS: True,
        TrainerField.ALLOW_WHITESPACE_ONLY_PIECES: True,
        TrainerField.VOCABULARY_OUTPUT_PIECE_SCORE: True,
        TrainerField.HARD_VOCAB_LIMIT: True,
        TrainerField.BYTE_FALLBACK: True,
        TrainerField.UNK_ID: UNK_ID,
        TrainerField.BOS_ID: BOS_ID,
        TrainerField.EOS_ID: EOS_ID,
        TrainerField.PAD_ID: PAD_ID,
        TrainerField.UNK_SURFACE: UNK_SURFACE,
        TrainerField.UNK_PIECE: UNK_PIECE,
        TrainerField.BOS_PIECE: BOS_PIECE,
        TrainerField.EOS_PIECE: EOS_PIECE,
        TrainerField.PAD_PIECE: PAD_PIECE,
    }


def build_model_proto(text: str = CORPUS) -> bytes:
    # LLaMA's normalizer: no NFKC table, a dummy `▁` prefix, spaces kept as they are.
    normalizer = NormalizerSpec(
        name="identity", add_dummy_prefix=True, remove_extra_whitespaces=False
    )
    return encode_model_proto(build_pieces(text), trainer_spec(), normalizer)


def export_yue_tokenizer(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(build_model_proto())
    return path
