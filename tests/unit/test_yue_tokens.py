import numpy as np
import pytest

from v2bgm.yue import tokens


def test_codebook_offsets_match_yue():
    assert tokens.codebook_range(0) == (45334, 46358)
    assert tokens.codebook_range(1) == (46358, 47382)
    assert tokens.codebook_range(7)[1] == 53526
    assert tokens.codebook_range(11)[1] == 57622  # end of the xcodec family, start of mert


def test_codec_families_tile_the_vocabulary():
    next_id = tokens.CODEC_FIRST_ID
    for name, codebooks, size in tokens.CODEC_FAMILIES:
        if name == "xcodec":
            assert next_id == tokens.XCODEC_OFFSET
        next_id += codebooks * size
    assert next_id == tokens.SPM_PIECES


def test_codes_ids_round_trip():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 1024, size=(8, 37))
    ids = tokens.codes_to_ids(codes)
    assert ids[3, 5] == 45334 + 3 * 1024 + codes[3, 5]
    np.testing.assert_array_equal(tokens.ids_to_codes(ids), codes)
    flat = tokens.flatten_frames(ids)
    assert list(flat[:8]) == list(ids[:, 0])  # frame-major
    np.testing.assert_array_equal(tokens.unflatten_frames(flat, 8), ids)


def test_codes_out_of_range_rejected():
    with pytest.raises(ValueError):
        tokens.codes_to_ids(np.array([[1024]]))


def test_parse_stage1_splits_interleaved_tracks():
    v = tokens.codes_to_ids(np.array([[1, 2, 3]]))[0]
    i = tokens.codes_to_ids(np.array([[7, 8, 9]]))[0]
    seg1 = [
        5,
        6,
        tokens.SOA,
        tokens.XCODEC_SEP,
        *tokens.interleave_tracks(v[:2], i[:2]),
        tokens.EOA,
    ]
    # the second segment has a dangling vocal token that the parser drops
    seg2 = [9, tokens.SOA, tokens.XCODEC_SEP, v[2], i[2], v[0], tokens.EOA]
    vocal, inst = tokens.parse_stage1(seg1 + seg2)
    assert vocal.tolist() == [1, 2, 3]
    assert inst.tolist() == [7, 8, 9]


def test_parse_stage1_rejects_unpaired_spans():
    with pytest.raises(ValueError, match="unpaired"):
        tokens.parse_stage1([tokens.SOA, tokens.XCODEC_SEP, 45334])


def test_split_sections_like_reference():
    lyrics = "[verse]\nhello there\n[chorus]  la la \n\n"
    assert tokens.split_sections(lyrics) == ["[verse]\nhello there\n\n", "[chorus]\nla la\n\n"]
    header = tokens.header_text("pop piano", tokens.split_sections(lyrics))
    assert header.startswith(
        "Generate music from the given lyrics segment by segment.\n[Genre] pop"
    )


def test_stage2_prompt_layout():
    prompt = tokens.stage2_prompt(np.array([[45334, 45335]]))
    assert prompt.tolist() == [[tokens.SOA, tokens.STAGE_1, 45334, 45335, tokens.STAGE_2]]


def test_repair_uses_most_frequent_first_seen():
    codes = np.array([[5, 5, 7, 7, -3, 2000], [1, 2, 3, 4, 5, 6]])
    fixed = tokens.repair_codes(codes)
    assert fixed[0].tolist() == [5, 5, 7, 7, 5, 5]  # tie 5/7: the first seen wins
    assert fixed[1].tolist() == [1, 2, 3, 4, 5, 6]


def test_repair_ignores_invalid_values_when_counting():
    fixed = tokens.repair_codes(np.array([[-1, -1, -1, 3], [2000, 2000, 2000, 2000]]))
    assert fixed.tolist() == [[3, 3, 3, 3], [0, 0, 0, 0]]
