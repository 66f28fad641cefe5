"""YuE v1's token layout, in one place.

Read from YuE's `inference/codecmanipulator.py`, `mmtokenizer.py` and `infer.py` (branch YuE-v1):
text pieces are LLaMA's 0..31999, special tokens 32000..32021, codec tokens from 32022 on. X-Codec
codebook k, code c is token `45334 + k * 1024 + c`. The tokenizer's SentencePiece model has 83734
pieces; the model's embedding table is padded to 83968 rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

# --- vocabulary --------------------------------------------------------------------------------
TEXT_VOCAB_SIZE = 32000
SPM_PIECES = 83734  # pieces in mm_tokenizer_v0.2_hf/tokenizer.model
MODEL_VOCAB_SIZE = 83968  # rows of the stage-1/stage-2 embedding tables (padded)

SPECIAL_TOKENS: dict[str, int] = {
    "<EOD>": 32000, "<SOA>": 32001, "<EOA>": 32002, "<SOI>": 32003, "<EOI>": 32004,
    "<SOV>": 32005, "<EOV>": 32006, "<s_local>": 32007, "<e_local>": 32008,
    "<s_global>": 32009, "<e_global>": 32010, "<semantic>": 32011, "<acoustic>": 32012,
    "<stage_1>": 32013, "<dac_16k>": 32014, "<dac_44k>": 32015, "<xcodec>": 32016,
    "<stage_2>": 32017, "<semantic_mert>": 32018, "<semantic_hubert>": 32019,
    "<visual>": 32020, "<semanticodec>": 32021,
}  # fmt: skip
SOA = SPECIAL_TOKENS["<SOA>"]  # start of audio
EOA = SPECIAL_TOKENS["<EOA>"]  # end of audio: stage 1's end-of-sequence and pad
XCODEC_SEP = SPECIAL_TOKENS["<xcodec>"]  # follows <SOA> in a stage-1 prompt
STAGE_1 = SPECIAL_TOKENS["<stage_1>"]
STAGE_2 = SPECIAL_TOKENS["<stage_2>"]

# Codec families after the special tokens, each (name, codebooks, codebook size), in id order.
CODEC_FAMILIES: tuple[tuple[str, int, int], ...] = (
    ("dac16k", 4, 1024),
    ("dac44k", 9, 1024),
    ("xcodec", 12, 1024),
    ("mert", 1, 1024),
    ("hubert", 1, 512),
    ("semantic/s", 1, 16384),
    ("semantic/a", 1, 8192),
)
CODEC_FIRST_ID = 32022

# --- X-Codec -----------------------------------------------------------------------------------
XCODEC_OFFSET = 45334
CODEBOOK_SIZE = 1024
XCODEC_CODEBOOKS = 12
STAGE2_CODEBOOKS = 8  # stage 2 fills codebooks 1..7 after stage 1's codebook 0
FRAME_RATE = 50  # X-Codec frames per second (16 kHz, hop 320)
TRACKS = ("vocal", "instrumental")  # interleaved in stage-1 output: v0 i0 v1 i1 ...
STAGE1_TOKENS_PER_SECOND = FRAME_RATE * len(TRACKS)

# --- stage-1 prompt text -----------------------------------------------------------------------
START_OF_SEGMENT = "[start_of_segment]"
END_OF_SEGMENT = "[end_of_segment]"
HEADER_TEMPLATE = (
    "Generate music from the given lyrics segment by segment.\n[Genre] {tags}\n{lyrics}"
)
_SECTION_RE = re.compile(r"\[(\w+)\](.*?)(?=\[|\Z)", re.DOTALL)
# Background music has no lyrics: segments follow a song form with empty sections (YuE advises
# opening with [verse] or [chorus] rather than [intro]).
INSTRUMENTAL_LYRICS = "[verse]\n[chorus]\n[verse]\n[chorus]\n[bridge]\n[chorus]\n[outro]"

# --- stage 2 -----------------------------------------------------------------------------------
STAGE2_CHUNK_SECONDS = 6
STAGE2_CHUNK_FRAMES = STAGE2_CHUNK_SECONDS * FRAME_RATE


def codebook_range(k: int) -> tuple[int, int]:
    """[first, last+1) token ids of X-Codec codebook k."""
    first = XCODEC_OFFSET + k * CODEBOOK_SIZE
    return first, first + CODEBOOK_SIZE


def codes_to_ids(codes: np.ndarray) -> np.ndarray:
    """X-Codec codes [K, T] (codebooks 0..K-1) -> token ids [K, T]."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or codes.min(initial=0) < 0 or codes.max(initial=0) >= CODEBOOK_SIZE:
        raise ValueError(f"codes must be [K, T] in [0, {CODEBOOK_SIZE}), got {codes.shape}")
    offsets = XCODEC_OFFSET + CODEBOOK_SIZE * np.arange(codes.shape[0], dtype=np.int64)
    return codes + offsets[:, None]


def ids_to_codes(ids: np.ndarray) -> np.ndarray:
    """Token ids [K, T] -> X-Codec codes [K, T]; ids of another codebook fall outside [0, 1024)."""
    ids = np.asarray(ids, dtype=np.int64)
    offsets = XCODEC_OFFSET + CODEBOOK_SIZE * np.arange(ids.shape[0], dtype=np.int64)
    return ids - offsets[:, None]


def flatten_frames(ids: np.ndarray) -> np.ndarray:
    """[K, T] -> frame-major [T*K]: all codebooks of frame 0, then of frame 1, ..."""
    return np.asarray(ids).T.reshape(-1)


def unflatten_frames(flat: np.ndarray, codebooks: int) -> np.ndarray:
    """Frame-major [T*K] -> [K, T]."""
    flat = np.asarray(flat)
    if flat.size % codebooks:
        raise ValueError(f"{flat.size} tokens do not fill whole frames of {codebooks} codebooks")
    return flat.reshape(-1, codebooks).T


def split_sections(lyrics: str) -> list[str]:
    """Lyrics -> sections `"[tag]\\nbody\\n\\n"`, as YuE's `split_lyrics` writes them."""
    return [f"[{tag}]\n{body.strip()}\n\n" for tag, body in _SECTION_RE.findall(lyrics)]


def header_text(tags: str, sections: Sequence[str]) -> str:
    return HEADER_TEMPLATE.format(tags=tags, lyrics="\n".join(sections))


def interleave_tracks(vocal: np.ndarray, instrumental: np.ndarray) -> np.ndarray:
    """Two codebook-0 id rows [T] -> stage-1 order v0 i0 v1 i1 ..."""
    return np.stack([vocal, instrumental], axis=1).reshape(-1)


def parse_stage1(ids: Sequence[int], skip_pairs: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stage-1 output ids -> (vocal, instrumental) codebook-0 codes, each [T].

    Every <SOA> ... <EOA> span holds one segment: `<xcodec>` then interleaved v/i ids. A dangling
    last token (odd count) is dropped, as the reference does. `skip_pairs` skips leading spans
    (an ICL audio prompt).
    """
    ids = np.asarray(ids, dtype=np.int64)
    soa = np.flatnonzero(ids == SOA)
    eoa = np.flatnonzero(ids == EOA)
    if len(soa) != len(eoa):
        raise ValueError(f"unpaired audio spans: {len(soa)} <SOA>, {len(eoa)} <EOA>")
    vocal, inst = [], []
    for start, end in list(zip(soa, eoa, strict=True))[skip_pairs:]:
        span = ids[start + 1 : end]
        if len(span) and span[0] == XCODEC_SEP:
            span = span[1:]
        span = span[: 2 * (len(span) // 2)].reshape(-1, 2)
        vocal.append(span[:, 0])
        inst.append(span[:, 1])
    if not vocal:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return (
        ids_to_codes(np.concatenate(vocal)[None])[0],
        ids_to_codes(np.concatenate(inst)[None])[0],
    )


def stage2_prompt(codebook0_ids: np.ndarray) -> np.ndarray:
    """Stage-2 chunk prompt: `<SOA><stage_1>` + codebook-0 ids + `<stage_2>`, shape [B, T + 3]."""
    rows = np.atleast_2d(codebook0_ids).astype(np.int64)
    b = rows.shape[0]
    return np.concatenate(
        [np.tile([SOA, STAGE_1], (b, 1)), rows, np.full((b, 1), STAGE_2, np.int64)], axis=1
    )


def repair_codes(codes: np.ndarray) -> np.ndarray:
    """Replace out-of-range codes in each codebook row by that row's most frequent valid code.

    Stage 2 can pick a token of the wrong codebook; the reference repairs it with the row's most
    frequent value (ties: the first seen). The reference counts invalid values too, so a row where
    an invalid value is the most frequent stays broken and the decoder fails; here only valid codes
    are counted (0 if a row has none). With trained weights both agree.
    """
    codes = np.array(codes, dtype=np.int64, copy=True)
    for row in codes:
        bad = (row < 0) | (row >= CODEBOOK_SIZE)
        if not bad.any():
            continue
        valid = row[~bad]
        if len(valid) == 0:
            row[bad] = 0
            continue
        values, first_index, counts = np.unique(valid, return_index=True, return_counts=True)
        best = max(range(len(values)), key=lambda i: (counts[i], -first_index[i]))
        row[bad] = values[best]
    return codes


def stage1_segment_prompt(
    encode: Callable[[str], list[int]], section: str, header: str | None = None
) -> list[int]:
    """Token ids that open one stage-1 segment.

    The first segment (header given) is `header [start_of_segment] section <SOA><xcodec>`; later
    ones are `[end_of_segment] [start_of_segment] section <SOA><xcodec>`, appended to everything
    before. Each piece is tokenized on its own, as the reference does.
    """
    opening = encode(header) if header is not None else encode(END_OF_SEGMENT)
    return [*opening, *encode(START_OF_SEGMENT), *encode(section), SOA, XCODEC_SEP]
