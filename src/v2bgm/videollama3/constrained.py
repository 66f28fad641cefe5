"""Constrained decoding of the captioner's answer: a free caption line, then one YuE tag per family.

The answer is a fixed sequence of segments (forced literals, one bounded free-text line, choices
from a tag list). `AnswerGrammar.walk` replays the tokens generated so far and says which tokens
may come next, so any model, even one with random weights, writes an answer that parses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from v2bgm.videollama3.prompt import CAPTION_FIELD, MAX_CAPTION_TOKENS, field_label


@dataclass(frozen=True)
class Literal:
    ids: tuple[int, ...]


@dataclass(frozen=True)
class FreeLine:
    max_tokens: int


@dataclass
class Choice:
    family: str
    options: dict[tuple[int, ...], str]  # token ids -> tag
    prefixes: dict[tuple[int, ...], set[int]] = field(
        default_factory=dict
    )  # trie as prefix -> next

    def __post_init__(self) -> None:
        for ids in self.options:
            for i in range(len(ids)):
                self.prefixes.setdefault(ids[:i], set()).add(ids[i])


Segment = Literal | FreeLine | Choice


@dataclass
class Answer:
    caption_ids: list[int] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # family -> tag
    done: bool = False


@dataclass
class _State:
    allowed: set[int] | None  # None: the free caption line
    free_count: int = 0


class AnswerGrammar:
    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        vocabulary: dict[str, tuple[str, ...]],
        families: tuple[str, ...],
        vocab_size: int,
    ) -> None:
        def encode(text: str) -> tuple[int, ...]:
            return tuple(tokenizer.encode(text, add_special_tokens=False))

        newline = encode("\n")
        if len(newline) != 1:
            raise ValueError("the captioner's tokenizer must encode a newline as one token")
        self.newline = newline[0]
        self.eos = int(tokenizer.convert_tokens_to_ids(tokenizer.eos_token))
        self.segments: list[Segment] = [
            Literal(encode(CAPTION_FIELD)),
            FreeLine(MAX_CAPTION_TOKENS),
        ]
        for family in families:
            options = {encode(" " + tag): tag for tag in vocabulary[family]}
            self.segments += [Literal(encode(field_label(family))), Choice(family, options)]
            self.segments.append(Literal((self.newline,)))
        self.segments[-1] = Literal((self.eos,))  # the last tag ends the answer
        self.max_tokens = sum(self._longest(s) for s in self.segments)
        self.free_mask = self._free_line_mask(tokenizer, vocab_size)

    def _longest(self, segment: Segment) -> int:
        if isinstance(segment, Literal):
            return len(segment.ids)
        if isinstance(segment, FreeLine):
            return segment.max_tokens + 1
        return max(len(ids) for ids in segment.options)

    def _free_line_mask(self, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> torch.Tensor:
        """Additive mask for caption tokens: printable text only (no line break, no special)."""
        mask = torch.full((vocab_size,), float("-inf"))
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
        for i, text in enumerate(texts):
            if i < vocab_size and i not in special and text.isprintable():
                mask[i] = 0.0
        return mask

    def walk(self, generated: list[int]) -> tuple[Answer, _State]:
        """Replay `generated`; return what it says so far and what may come next."""
        answer = Answer()
        pos = 0
        for segment in self.segments:
            if isinstance(segment, Literal):
                for expected in segment.ids:
                    if pos == len(generated):
                        return answer, _State({expected})
                    pos += 1  # the processor forced it
            elif isinstance(segment, FreeLine):
                count = 0
                while True:
                    if pos == len(generated):
                        return answer, _State(None, count)
                    token = generated[pos]
                    pos += 1
                    if token == self.newline:
                        break
                    answer.caption_ids.append(token)
                    count += 1
            else:
                prefix: tuple[int, ...] = ()
                while True:
                    following = segment.prefixes.get(prefix, set())
                    complete = prefix in segment.options
                    if pos == len(generated):
                        nxt = set(following)
                        if complete:
                            nxt.add(self._first_of_next(segment))
                        return answer, _State(nxt)
                    token = generated[pos]
                    if complete and token not in following:
                        answer.tags[segment.family] = segment.options[prefix]
                        break  # the token belongs to the next segment
                    prefix += (token,)
                    pos += 1
        answer.done = True
        return answer, _State(set())

    def _first_of_next(self, choice: Choice) -> int:
        nxt = self.segments[self.segments.index(choice) + 1]
        assert isinstance(nxt, Literal)
        return nxt.ids[0]


class GrammarLogitsProcessor(LogitsProcessor):
    """Applies `AnswerGrammar` to every row of a batch (rows share the prompt length)."""

    def __init__(self, grammar: AnswerGrammar, prompt_length: int) -> None:
        self.grammar = grammar
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        bias = torch.full_like(scores, float("-inf"))
        for row, ids in enumerate(input_ids[:, self.prompt_length :].tolist()):
            _, state = self.grammar.walk(ids)
            if state.allowed is None:
                bias[row] = self.grammar.free_mask.to(scores.device, scores.dtype)
                if state.free_count == 0:
                    continue  # a caption has at least one token
                if state.free_count >= MAX_CAPTION_TOKENS:
                    bias[row] = float("-inf")
                bias[row, self.grammar.newline] = 0.0
            elif state.allowed:
                bias[row, list(state.allowed)] = 0.0
            else:  # finished rows wait for the others: keep emitting the end token
                bias[row, self.grammar.eos] = 0.0
        return scores + bias
