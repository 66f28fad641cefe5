"""`v2bgm-weights check` (v2bgm.weights): the tiny checkpoints pass; each kind of damage to a copy
fails with its own line naming the file and what is wrong, and nothing is loaded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from export.spm_writer import NormalizerSpec, encode_model_proto
from export.yue_tokenizer import build_pieces, trainer_spec
from v2bgm import checkpoints
from v2bgm import weights as check
from v2bgm.yue import tokens


@pytest.fixture
def copy(weights: Path, tmp_path: Path) -> Path:
    out = tmp_path / "weights"
    shutil.copytree(weights, out)
    return out


def problems(folder: Path) -> list[str]:
    return [p for c in check.check(folder) for p in c.problems]


def test_the_tiny_checkpoints_pass_with_a_table(weights: Path, capsys) -> None:
    code = check.main(["check", str(weights)])
    table = capsys.readouterr().out.splitlines()
    assert code == 0, table
    assert table[0].split() == ["component", "files", "parameters", "dtype", "ok"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert set(rows) == set(check.CHECKS)
    assert all(row[-1] == "ok" for row in rows.values())
    assert int(rows[checkpoints.YUE_STAGE1][2].replace(",", "")) > 0


def test_a_missing_file(copy: Path) -> None:
    (copy / checkpoints.YUE_STAGE2 / check.SAFETENSORS).unlink()
    assert problems(copy) == [f"{copy / checkpoints.YUE_STAGE2 / check.SAFETENSORS}: missing"]


def test_a_truncated_safetensors_file(copy: Path) -> None:
    path = copy / checkpoints.XCODEC / check.SAFETENSORS
    data = path.read_bytes()
    path.write_bytes(data[:-1000])
    (line,) = problems(copy)
    assert line.startswith(f"{path}: truncated: ") and "1000 bytes short" in line


def test_a_tensor_of_the_wrong_shape(copy: Path) -> None:
    path = copy / checkpoints.YUE_STAGE1 / check.SAFETENSORS
    state = load_file(path)
    state["model.norm.weight"] = state["model.norm.weight"][:32].clone()
    save_file(state, path, metadata={"format": "pt"})
    (line,) = problems(copy)
    assert line == (
        f"{copy / checkpoints.YUE_STAGE1}: wrong shape: model.norm.weight is [32], expected [64]"
    )


def test_a_wrong_model_type(copy: Path) -> None:
    path = copy / checkpoints.YUE_STAGE2 / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "model_type": "mistral"}))
    assert problems(copy) == [f"{path}: model_type is 'mistral', expected 'llama'"]


def test_a_swapped_tokenizer(copy: Path) -> None:
    """A SentencePiece model whose special pieces sit at other ids (another YuE release's, say)."""
    pieces = build_pieces()
    soa, eoa = tokens.SPECIAL_TOKENS["<SOA>"], tokens.SPECIAL_TOKENS["<EOA>"]
    pieces[soa], pieces[eoa] = pieces[eoa], pieces[soa]
    path = copy / checkpoints.YUE_TOKENIZER
    normalizer = NormalizerSpec(name="identity", add_dummy_prefix=True)
    path.write_bytes(encode_model_proto(pieces, trainer_spec(), normalizer))
    assert problems(copy) == [f"{path}: id {soa} is not <SOA>"]


def test_a_tokenizer_that_is_not_sentencepiece(copy: Path) -> None:
    path = copy / checkpoints.YUE_TOKENIZER
    shutil.copy(copy / checkpoints.VIDEOLLAMA3 / "tokenizer.json", path)
    (line,) = problems(copy)
    assert line.startswith(f"{path}: not a SentencePiece model")


def test_a_vocoder_decoder_from_another_config(copy: Path) -> None:
    folder = copy / checkpoints.YUE_VOCODER
    config = (folder / "config.yaml").read_text()
    assert "intermediate_dim: " in config
    (folder / "config.yaml").write_text(config.replace("intermediate_dim: ", "intermediate_dim: 1"))
    lines = problems(copy)
    assert lines and all(line.startswith(str(folder)) for line in lines)
    assert any("wrong shape" in line for line in lines), lines


def test_a_missing_folder(tmp_path: Path) -> None:
    assert check.main(["check", str(tmp_path / "nowhere")]) == 1


def test_the_server_never_starts_on_a_folder_that_fails(copy: Path, tmp_path: Path) -> None:
    (copy / checkpoints.YUE_STAGE2 / check.SAFETENSORS).unlink()
    launched = subprocess.run(
        [sys.executable, "-m", "v2bgm.serve", "--weights", str(copy), "--device", "cpu",
         "--model-repository", str(tmp_path / "no-repository")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert launched.returncode == 2
    assert "fail the check; tritonserver not started" in launched.stderr
    assert f"{copy / checkpoints.YUE_STAGE2 / check.SAFETENSORS}: missing" in launched.stderr


def test_fetch_tokenizer_keeps_only_the_pinned_bytes(tmp_path, capsys):
    import hashlib

    from v2bgm.weights import main

    source = tmp_path / "published.model"
    source.write_bytes(b"the tokenizer's bytes")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    out = tmp_path / "weights"
    url = source.as_uri()  # urllib reads file:// as it reads https://
    assert main(["fetch-tokenizer", str(out), "--url", url, "--sha256", digest]) == 0
    assert (out / "yue-tokenizer" / "tokenizer.model").read_bytes() == source.read_bytes()
    other = tmp_path / "other"
    assert main(["fetch-tokenizer", str(other), "--url", url, "--sha256", "0" * 64]) == 1
    assert f"SHA-256 {digest}, expected {'0' * 64}; not written" in capsys.readouterr().err
    assert not other.exists()


def test_the_pinned_tokenizer_url_names_a_commit_not_a_branch():
    from v2bgm import checkpoints

    assert checkpoints.YUE_REPOSITORY_COMMIT in checkpoints.YUE_TOKENIZER_URL
    assert (
        len(checkpoints.YUE_REPOSITORY_COMMIT) == 40 and len(checkpoints.YUE_TOKENIZER_SHA256) == 64
    )
