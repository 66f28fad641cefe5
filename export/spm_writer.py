"""Write a SentencePiece `ModelProto` (`tokenizer.model`) without the generated pb2 module.

`sentencepiece_model_pb2` does not import with the protobuf pinned here, so this is a tiny
hand-written encoder of the protobuf wire format: varints, fixed32 floats and length-delimited
fields. Field numbers follow `sentencepiece_model.proto` (checked against the descriptor shipped
inside the sentencepiece wheel, see tests/export/test_yue_tokenizer.py).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# --- protobuf wire format --------------------------------------------------------------------
WIRE_VARINT = 0
WIRE_LENGTH_DELIMITED = 2
WIRE_FIXED32 = 5
_UINT64_MASK = (1 << 64) - 1  # negative int32/int64 are sign-extended to 10-byte varints


def encode_varint(value: int) -> bytes:
    value &= _UINT64_MASK
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return encode_varint((field << 3) | wire_type)


def varint_field(field: int, value: int | bool) -> bytes:
    return _key(field, WIRE_VARINT) + encode_varint(int(value))


def float_field(field: int, value: float) -> bytes:
    return _key(field, WIRE_FIXED32) + struct.pack("<f", value)


def bytes_field(field: int, value: bytes) -> bytes:
    return _key(field, WIRE_LENGTH_DELIMITED) + encode_varint(len(value)) + value


def string_field(field: int, value: str) -> bytes:
    return bytes_field(field, value.encode("utf-8"))


# --- sentencepiece_model.proto field numbers ---------------------------------------------------
class ModelProtoField(enum.IntEnum):
    PIECES = 1
    TRAINER_SPEC = 2
    NORMALIZER_SPEC = 3


class PieceField(enum.IntEnum):
    PIECE = 1
    SCORE = 2
    TYPE = 3


class PieceType(enum.IntEnum):
    NORMAL = 1  # the default: not written, as sentencepiece's own trainer does
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


class ModelType(enum.IntEnum):
    UNIGRAM = 1
    BPE = 2
    WORD = 3
    CHAR = 4


class TrainerField(enum.IntEnum):
    INPUT = 1
    MODEL_PREFIX = 2
    MODEL_TYPE = 3
    VOCAB_SIZE = 4
    CHARACTER_COVERAGE = 10
    MAX_SENTENCEPIECE_LENGTH = 20
    SPLIT_BY_UNICODE_SCRIPT = 21
    SPLIT_BY_WHITESPACE = 22
    SPLIT_BY_NUMBER = 23
    SPLIT_DIGITS = 25
    ALLOW_WHITESPACE_ONLY_PIECES = 26
    VOCABULARY_OUTPUT_PIECE_SCORE = 32
    HARD_VOCAB_LIMIT = 33
    BYTE_FALLBACK = 35
    UNK_ID = 40
    BOS_ID = 41
    EOS_ID = 42
    PAD_ID = 43
    UNK_SURFACE = 44
    UNK_PIECE = 45
    BOS_PIECE = 46
    EOS_PIECE = 47
    PAD_PIECE = 48


class NormalizerField(enum.IntEnum):
    NAME = 1
    PRECOMPILED_CHARSMAP = 2
    ADD_DUMMY_PREFIX = 3
    REMOVE_EXTRA_WHITESPACES = 4
    ESCAPE_WHITESPACES = 5
    NORMALIZATION_RULE_TSV = 6


@dataclass(frozen=True)
class Piece:
    piece: str
    score: float = 0.0
    type: PieceType = PieceType.NORMAL


@dataclass(frozen=True)
class NormalizerSpec:
    name: str = "identity"
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = False
    escape_whitespaces: bool = True


TrainerValue = int | bool | float | str


def encode_piece(piece: Piece) -> bytes:
    out = string_field(PieceField.PIECE, piece.piece) + float_field(PieceField.SCORE, piece.score)
    if piece.type != PieceType.NORMAL:
        out += varint_field(PieceField.TYPE, piece.type)
    return out


def encode_trainer_spec(spec: Mapping[TrainerField, TrainerValue]) -> bytes:
    """Fields in field-number order; the Python type of each value picks its wire encoding."""
    out = bytearray()
    for field in sorted(spec):
        value = spec[field]
        if isinstance(value, str):
            out += string_field(field, value)
        elif isinstance(value, float):
            out += float_field(field, value)
        else:
            out += varint_field(field, value)
    return bytes(out)


def encode_normalizer_spec(spec: NormalizerSpec) -> bytes:
    return (
        string_field(NormalizerField.NAME, spec.name)
        + bytes_field(NormalizerField.PRECOMPILED_CHARSMAP, b"")
        + varint_field(NormalizerField.ADD_DUMMY_PREFIX, spec.add_dummy_prefix)
        + varint_field(NormalizerField.REMOVE_EXTRA_WHITESPACES, spec.remove_extra_whitespaces)
        + varint_field(NormalizerField.ESCAPE_WHITESPACES, spec.escape_whitespaces)
        + string_field(NormalizerField.NORMALIZATION_RULE_TSV, "")
    )


def encode_model_proto(
    pieces: Iterable[Piece],
    trainer_spec: Mapping[TrainerField, TrainerValue],
    normalizer_spec: NormalizerSpec,
) -> bytes:
    out = bytearray()
    for piece in pieces:
        out += bytes_field(ModelProtoField.PIECES, encode_piece(piece))
    out += bytes_field(ModelProtoField.TRAINER_SPEC, encode_trainer_spec(trainer_spec))
    out += bytes_field(ModelProtoField.NORMALIZER_SPEC, encode_normalizer_spec(normalizer_spec))
    return bytes(out)


# --- a minimal reader, for tests and for checking the encoder against real files ----------------
def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def iter_fields(data: bytes) -> Iterable[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field of one message, in file order."""
    pos = 0
    while pos < len(data):
        key, pos = decode_varint(data, pos)
        field, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == WIRE_VARINT:
            value, pos = decode_varint(data, pos)
        elif wire_type == WIRE_LENGTH_DELIMITED:
            length, pos = decode_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire_type == WIRE_FIXED32:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire_type} at byte {pos}")
        yield field, wire_type, value


def field_numbers(data: bytes) -> Sequence[int]:
    return [field for field, _, _ in iter_fields(data)]
