"""Constrained decoding of the captioner's answer (its format: `prompt.py`).

An answer is a fixed sequence of segments: forced literals, bounded free-text lines, and choices
from a tag list. `AnswerGrammar.walk` replays the tokens generated so far and says which tokens may
come next, so any model, even one with random weights, writes an answer that parses. The costly
parts (the tag tries, the mask of printable tokens) are built once in `GrammarParts`; a grammar
for one request (its families, fixed tags, lyrics sections) is assembled from them cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from v2bgm.videollama3 import prompt

CAPTION = "caption"
LYRICS = "lyrics"


@dataclass(frozen=True)
class Literal:
    ids: tuple[int, ...]
    region: str | None = None  # answer text this segment belongs to


@dataclass(frozen=True)
class FreeLine:
    """1..max_tokens printable tokens, then a newline."""

    max_tokens: int
    region: str


@dataclass
class Choice:
    family: str
    options: dict[tuple[int, ...], str]  # token ids -> tag
    prefixes: dict[tuple[int, ...], set[int]] = field(default_factory=dict)  # trie: prefix -> next

    def __post_init__(self) -> None:
        for ids in self.options:
            for i in range(len(ids)):
                self.prefixes.setdefault(ids[:i], set()).add(ids[i])


Segment = Literal | FreeLine | Choice


@dataclass
class Answer:
    regions: dict[str, list[int]] = field(default_factory=dict)  # region -> its tokens
    tags: dict[str, str] = field(default_factory=dict)  # family -> tag
    done: bool = False


@dataclass
class State:
    allowed: set[int] | None  # None: inside a free line
    free_count: int = 0
    free_max: int = 0


class GrammarParts:
    """What every grammar of one tokenizer and tag vocabulary shares."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        vocabulary: dict[str, tuple[str, ...]],
        vocab_size: int,
    ) -> None:
        self.tokenizer = tokenizer
        newline = self.encode("\n")
        if len(newline) != 1:
            raise ValueError("the captioner's tokenizer must encode a newline as one token")
        self.newline = newline[0]
        self.eos = int(tokenizer.convert_tokens_to_ids(tokenizer.eos_token))
        self.choices = {
            family: Choice(family, {self.encode(" " + tag): tag for tag in tags})
            for family, tags in vocabulary.items()
        }
        self.free_mask = self._printable_mask(vocab_size)

    def encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text, add_special_tokens=False))

    def _printable_mask(self, vocab_size: int) -> torch.Tensor:
        """Additive mask for free text: printable tokens only (no line break, no special)."""
        mask = torch.full((vocab_size,), float("-inf"))
        texts = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
        special = set(self.tokenizer.all_special_ids) | set(self.tokenizer.added_tokens_decoder)
        for i, text in enumerate(texts):
            if i < vocab_size and i not in special and text.isprintable():
                mask[i] = 0.0
        return mask

    def grammar(
        self, families: tuple[str, ...], fixed: dict[str, str], sections: list[str]
    ) -> AnswerGrammar:
        """Caption, one tag per family (a fixed tag is forced), then lyrics `sections` if any."""
        nl = (self.newline,)
        segments: list[Segment] = [
            Literal(self.encode(prompt.CAPTION_FIELD)),
            FreeLine(prompt.MAX_CAPTION_TOKENS, CAPTION),
            Literal(nl),
        ]
        for family in families:
            choice = self.choices[family]
            if family in fixed:
                tag = fixed[family]
                choice = Choice(family, {ids: t for ids, t in choice.options.items() if t == tag})
            segments += [Literal(self.encode(prompt.field_label(family))), choice, Literal(nl)]
        if sections:
            segments.append(Literal(self.encode(prompt.LYRICS_FIELD) + nl))
            for index, label in enumerate(sections):
                opening = (nl if index else ()) + self.encode(f"[{label}]") + nl
                segments.append(Literal(opening, LYRICS))
                for _ in range(prompt.LYRIC_LINES):
                    segments += [FreeLine(prompt.MAX_LINE_TOKENS, LYRICS), Literal(nl, LYRICS)]
        segments.append(Literal((self.eos,)))
        return AnswerGrammar(self, segments)


class AnswerGrammar:
    def __init__(self, parts: GrammarParts, segments: list[Segment]) -> None:
        self.parts = parts
        self.segments = segments
        self.max_tokens = sum(self._longest(s) for s in segments)

    @staticmethod
    def _longest(segment: Segment) -> int:
        if isinstance(segment, Literal):
            return len(segment.ids)
        if isinstance(segment, FreeLine):
            return segment.max_tokens
        return max(len(ids) for ids in segment.options)

    def walk(
        self, generated: list[int], resume: tuple[int, int] = (0, 0)
    ) -> tuple[Answer, State, tuple[int, int]]:
        """Replay `generated`; return what it says so far, what may come next, and where the
        segment in progress starts (segment index, token position).

        Tokens are only ever appended, so a later call may `resume` from that checkpoint: the
        processor then replays only the segment in progress, not the whole answer. An answer read
        from a resumed walk holds only what follows the checkpoint.
        """
        answer = Answer()
        first, pos = resume
        for index in range(first, len(self.segments)):
            segment, checkpoint = self.segments[index], (index, pos)
            if isinstance(segment, Literal):
                for expected in segment.ids:
                    if pos == len(generated):
                        return answer, State({expected}), checkpoint
                    self._keep(answer, segment.region, generated[pos])
                    pos += 1  # the processor forced it
            elif isinstance(segment, FreeLine):
                count = 0
                # A free line ends where the newline literal that follows it starts.
                while pos < len(generated) and generated[pos] != self.parts.newline:
                    self._keep(answer, segment.region, generated[pos])
                    pos, count = pos + 1, count + 1
                if pos == len(generated):
                    return answer, State(None, count, segment.max_tokens), checkpoint
            else:
                prefix: tuple[int, ...] = ()
                while True:
                    following = segment.prefixes.get(prefix, set())
                    complete = prefix in segment.options
                    if pos == len(generated):
                        nxt = set(following)
                        if complete:
                            nxt.add(self._first_id(index + 1))
                        return answer, State(nxt), checkpoint
                    token = generated[pos]
                    if complete and token not in following:
                        answer.tags[segment.family] = segment.options[prefix]
                        break  # the token belongs to the next segment
                    prefix += (token,)
                    pos += 1
        answer.done = True
        return answer, State(set()), (len(self.segments), pos)

    @staticmethod
    def _keep(answer: Answer, region: str | None, token: int) -> None:
        if region is not None:
            answer.regions.setdefault(region, []).append(token)

    def _first_id(self, index: int) -> int:
        segment = self.segments[index]
        assert isinstance(segment, Literal), "a choice is always followed by a literal"
        return segment.ids[0]


class GrammarLogitsProcessor(LogitsProcessor):
    """Applies one grammar per row of a batch (rows share the prompt length: left padding)."""

    def __init__(self, grammars: list[AnswerGrammar], prompt_length: int) -> None:
        self.grammars = grammars
        self.prompt_length = prompt_length
        self.checkpoints = [(0, 0)] * len(grammars)  # where each row's walk resumes

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        bias = torch.full_like(scores, float("-inf"))
        for row, ids in enumerate(input_ids[:, self.prompt_length :].tolist()):
            grammar = self.grammars[row]
            parts = grammar.parts
            _, state, self.checkpoints[row] = grammar.walk(ids, self.checkpoints[row])
            if state.allowed is None:
                if state.free_count < state.free_max:
                    bias[row] = parts.free_mask.to(scores.device, scores.dtype)
                if state.free_count > 0:  # a free line holds at least one token
                    bias[row, parts.newline] = 0.0
            elif state.allowed:
                bias[row, list(state.allowed)] = 0.0
            else:  # a finished row waits for the others: keep emitting the end token
                bias[row, parts.eos] = 0.0
        return scores + bias
