"""YuE's text tokenizer: LLaMA's SentencePiece model extended with YuE's special and codec ids."""

from __future__ import annotations

from os import PathLike

import sentencepiece as spm

from v2bgm.yue import tokens


class YuETokenizer:
    """Encodes prompt text to ids < 32000, as `mmtokenizer.tokenize` does for plain text.

    Unlike the reference, special-token names inside text ("<EOA>" in lyrics) stay plain text:
    specials enter a prompt only by id, so user text cannot break the <SOA>/<EOA> pairing.
    """

    def __init__(self, model_file: str | PathLike[str]) -> None:
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        if self.sp.get_piece_size() != tokens.SPM_PIECES:
            raise ValueError(
                f"{model_file}: {self.sp.get_piece_size()} pieces, YuE's tokenizer has "
                f"{tokens.SPM_PIECES}"
            )
        for name, token_id in tokens.SPECIAL_TOKENS.items():
            if self.sp.id_to_piece(token_id) != name:
                raise ValueError(f"{model_file}: id {token_id} is not {name}")

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode_as_ids(text))

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode_ids([i for i in ids if i < tokens.TEXT_VOCAB_SIZE])
