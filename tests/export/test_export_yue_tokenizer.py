"""YuE's SentencePiece model: loads, has the real layout, and round-trips text."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import sentencepiece as spm
from google.protobuf import descriptor_pb2

from export import spm_writer
from export.yue_tokenizer import FIRST_NORMAL_ID, WHITESPACE_SYMBOL
from v2bgm.checkpoints import YUE_TOKENIZER
from v2bgm.yue.tokens import (
    CODEC_FAMILIES,
    CODEC_FIRST_ID,
    END_OF_SEGMENT,
    SOA,
    SPECIAL_TOKENS,
    SPM_PIECES,
    START_OF_SEGMENT,
    TEXT_VOCAB_SIZE,
    codebook_range,
)

TEXTS = [
    START_OF_SEGMENT,
    END_OF_SEGMENT,
    "Generate music from the given lyrics segment by segment.\n[Genre] uplifting pop airy vocal\n",
    "[verse]\nWalking down the empty street tonight\n\n[chorus]\nWe are dancing in the light\n\n",
    "  two leading spaces, a tab\tand trailing spaces  ",
    "unicode: café, naïve, 你好, 音乐, ♪ 🎵",
    "digits 2025 and symbols <>[]{}|\\/~`!@#$%^&*()",
    "<SOA><xcodec><EOA>",
]


@pytest.fixture(scope="module")
def sp(tiny_dir: Path) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(tiny_dir / YUE_TOKENIZER))


def test_size_and_control_ids(sp: spm.SentencePieceProcessor) -> None:
    assert sp.get_piece_size() == SPM_PIECES
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, -1)
    assert sp.is_unknown(0) and sp.id_to_piece(0) == "<unk>"
    assert sp.is_control(1) and sp.id_to_piece(1) == "<s>"
    assert sp.is_control(2) and sp.id_to_piece(2) == "</s>"
    for value in range(256):
        assert sp.is_byte(3 + value) and sp.id_to_piece(3 + value) == f"<0x{value:02X}>"
    assert sp.id_to_piece(FIRST_NORMAL_ID) == WHITESPACE_SYMBOL * 2
    assert sp.get_score(FIRST_NORMAL_ID) == pytest.approx(-1e9)
    assert sp.get_score(FIRST_NORMAL_ID + 1) == -1.0
    assert sp.get_score(FIRST_NORMAL_ID + 2) == -2.0


def test_special_tokens_at_their_ids(sp: spm.SentencePieceProcessor) -> None:
    for name, token_id in SPECIAL_TOKENS.items():
        assert sp.id_to_piece(token_id) == name
        assert sp.piece_to_id(name) == token_id
        assert not (sp.is_control(token_id) or sp.is_unused(token_id) or sp.is_byte(token_id))


def test_codec_pieces_at_their_ids(sp: spm.SentencePieceProcessor) -> None:
    first = CODEC_FIRST_ID
    for family, codebooks, size in CODEC_FAMILIES:
        for codebook in range(codebooks):
            for code in (0, 1, size - 1):
                name = f"<{family}/{codebook}/{code}>" if codebooks > 1 else f"<{family}/{code}>"
                assert sp.id_to_piece(first + codebook * size + code) == name
        first += codebooks * size
    assert first == SPM_PIECES
    for k in range(12):  # agrees with tokens.py's X-Codec offsets
        start, stop = codebook_range(k)
        assert sp.id_to_piece(start) == f"<xcodec/{k}/0>"
        assert sp.id_to_piece(stop - 1) == f"<xcodec/{k}/1023>"


def test_text_pieces_are_unique_and_filled(sp: spm.SentencePieceProcessor) -> None:
    pieces = [sp.id_to_piece(i) for i in range(SPM_PIECES)]
    assert len(set(pieces)) == SPM_PIECES
    assert sum(sp.is_unused(i) for i in range(TEXT_VOCAB_SIZE)) > 0  # UNUSED filler exists
    assert not any(sp.is_unused(i) for i in range(TEXT_VOCAB_SIZE, SPM_PIECES))


@pytest.mark.parametrize("text", TEXTS)
def test_text_round_trips_below_the_special_ids(sp: spm.SentencePieceProcessor, text: str) -> None:
    ids = sp.encode_as_ids(text)
    assert ids and max(ids) < TEXT_VOCAB_SIZE
    assert sp.decode(ids) == text


def test_learned_pieces_tokenize_english_sensibly(sp: spm.SentencePieceProcessor) -> None:
    assert sp.encode_as_pieces(START_OF_SEGMENT) == ["▁[", "start", "_", "of", "_", "segment", "]"]
    assert sp.encode_as_pieces("We are dancing in the light") == [
        "▁We", "▁are", "▁dancing", "▁in", "▁the", "▁light",
    ]  # fmt: skip
    assert "<0x0A>" in sp.encode_as_pieces("a\nb")  # newlines are bytes, as in LLaMA's model


def test_special_token_text_stays_text(sp: spm.SentencePieceProcessor) -> None:
    ids = sp.encode_as_ids("<SOA>")
    assert SOA not in ids and max(ids) < TEXT_VOCAB_SIZE
    assert sp.encode_as_ids("<xcodec/0/0>")[-1] < TEXT_VOCAB_SIZE


# --- the hand-written protobuf encoder ---------------------------------------------------------
def _shipped_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """sentencepiece_model.proto as compiled into the wheel's pb2 module, read without importing
    it (it needs a newer protobuf than the one pinned here)."""
    source = Path(spm.__file__).with_name("sentencepiece_model_pb2.py").read_text()
    match = re.search(r"AddSerializedFile\((b'.*?')\)\n", source, re.DOTALL)
    assert match, "serialized descriptor not found in sentencepiece_model_pb2.py"
    return descriptor_pb2.FileDescriptorProto.FromString(ast.literal_eval(match.group(1)))


def test_field_numbers_match_sentencepiece_model_proto() -> None:
    messages = {m.name: m for m in _shipped_descriptor().message_type}

    def fields(message: descriptor_pb2.DescriptorProto) -> dict[str, int]:
        return {f.name: f.number for f in message.field}

    def enum_values(enum: descriptor_pb2.EnumDescriptorProto) -> dict[str, int]:
        return {v.name: v.number for v in enum.value}

    model = messages["ModelProto"]
    piece_message = next(n for n in model.nested_type if n.name == "SentencePiece")
    trainer = messages["TrainerSpec"]
    checks = [
        (spm_writer.ModelProtoField, fields(model)),
        (spm_writer.PieceField, fields(piece_message)),
        (spm_writer.PieceType, enum_values(piece_message.enum_type[0])),
        (spm_writer.ModelType, enum_values(trainer.enum_type[0])),
        (spm_writer.TrainerField, fields(trainer)),
        (spm_writer.NormalizerField, fields(messages["NormalizerSpec"])),
    ]
    for ours, proto in checks:
        for member in ours:  # field names are lower case in the .proto, enum values upper case
            key = member.name if member.name in proto else member.name.lower()
            assert proto[key] == member.value, f"{ours.__name__}.{member.name}"


def test_varints_and_negative_ids() -> None:
    assert spm_writer.encode_varint(0) == b"\x00"
    assert spm_writer.encode_varint(300) == b"\xac\x02"
    assert spm_writer.encode_varint(-1) == b"\xff" * 9 + b"\x01"  # int32 -1: 10 bytes
    data = spm_writer.varint_field(43, -1) + spm_writer.string_field(1, "▁a")
    parsed = list(spm_writer.iter_fields(data))
    assert parsed == [(43, 0, (1 << 64) - 1), (1, 2, "▁a".encode())]


def test_model_file_has_the_three_top_level_fields(tiny_dir: Path) -> None:
    numbers = spm_writer.field_numbers((tiny_dir / YUE_TOKENIZER).read_bytes())
    assert numbers.count(spm_writer.ModelProtoField.PIECES) == SPM_PIECES
    assert numbers[-2:] == [
        spm_writer.ModelProtoField.TRAINER_SPEC,
        spm_writer.ModelProtoField.NORMALIZER_SPEC,
    ]
