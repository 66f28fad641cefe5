"""YuE stage 2: codebook 0 of each track -> codebooks 0..7, every chunk teacher-forced side by side.

For every frame the codebook-0 token is fed and the model picks 7 tokens among codebooks 1..7,
greedily, as YuE's `stage2_generate` does. Same tokens as the reference path
(`v2bgm.yue.reference.GenerateStage2`: greedy, codebooks 1..7 allowed, a chunk's prompt
`<SOA><stage_1> cb0... <stage_2>`), with the work of a frame — one forward of the previous
frame's last pick and this frame's codebook 0, then six of one token — captured as one CUDA
graph and replayed frame after frame, with nothing read back until the chunk is done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from v2bgm.composer import Progress
from v2bgm.engine.decoder import bucket_rows
from v2bgm.engine.graphs import StepGraphs
from v2bgm.engine.llama import Part, StaticLlama
from v2bgm.yue import tokens

STAGE = "stage2"

PICKS = tokens.STAGE2_CODEBOOKS - 1  # codebooks 1..7 are generated for every frame
KV_BUCKET = 512


class Stage2:
    def __init__(self, model: StaticLlama, rows: int = 16) -> None:
        self.model, self.rows = model, rows
        chunk = tokens.STAGE2_CHUNK_FRAMES
        # a chunk feeds its prompt (3 + F tokens, codebook 0 included) and then, per frame,
        # codebook 0 again and the 7 picks (the last one of the chunk is never fed)
        self.length = _round_up(3 + chunk * (tokens.STAGE2_CODEBOOKS + 1), 128)
        self.pool = model.pool(rows, self.length)
        device = model.device
        self.cb0 = torch.zeros(rows, dtype=torch.long, device=device)  # this frame's codebook 0
        self.last = torch.zeros(rows, dtype=torch.long, device=device)  # last frame's last pick
        self.pos = torch.zeros(rows, dtype=torch.long, device=device)  # where `last` goes
        self.picks = torch.zeros((rows, PICKS), dtype=torch.long, device=device)
        self.first = tokens.codebook_range(1)[0]
        self.end = tokens.codebook_range(tokens.STAGE2_CODEBOOKS - 1)[1]
        self.graphs = StepGraphs(device, lambda: [self.last, self.pos, self.picks])

    @torch.inference_mode()
    def capture(self) -> int:
        """Capture the frame step of every row and cache bucket now (GPU only): a request would
        otherwise pay the captures of the shapes it meets first (a 30-s track is 5 chunks, its
        rows a bucket no warm-up request reaches). Returns how many graphs exist."""
        if not self.graphs.enabled:
            return 0
        kvs = sorted({self._kv(need) for need in range(1, self.length + 1, KV_BUCKET)})
        for rows in sorted({bucket_rows(n, self.rows) for n in range(1, self.rows + 1)}):
            for kv in kvs:
                self.pos[:rows] = 0  # replays write position 0..7 of idle slots: harmless
                self.graphs.run((rows, kv), lambda rows=rows, kv=kv: self._frame_step(rows, kv))
        return len(self.graphs)

    def fill(self, codes0: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """Codebook-0 codes [T] -> codes [8, T] (out-of-range picks repaired)."""
        return self.fill_many([codes0], progress)[0]

    def fill_many(
        self, tracks: Sequence[np.ndarray], progress: Progress | None = None
    ) -> list[np.ndarray]:
        """Several tracks' codebook 0 at once: all their chunks share the steps."""
        pieces = [(t, chunk) for t, codes0 in enumerate(tracks) for chunk in split(codes0)]
        out = self.fill_chunks([chunk for _, chunk in pieces], progress)
        return [
            assemble([o for (tt, _), o in zip(pieces, out, strict=True) if tt == t])
            for t in range(len(tracks))
        ]

    def fill_chunks(
        self, chunks: Sequence[np.ndarray], progress: Progress | None = None
    ) -> list[np.ndarray]:
        """Codebook-0 codes of 6-s chunks (`split`) -> each chunk's ids [8, F] as stage 2 picked
        them, unrepaired (`assemble` makes a track's codes of its chunks, in order). A chunk
        does not depend on the others: a track's chunks may be filled in any groups, at any
        time, and `assemble` gives the same codes as `fill_many` of the whole track."""
        ids0 = [tokens.codes_to_ids(np.asarray(c)[None])[0] for c in chunks]
        total = sum(len(c) for c in ids0)
        done = 0
        out: list[np.ndarray] = []
        for start in range(0, len(ids0), self.rows):
            batch = ids0[start : start + self.rows]
            out += self._teacher_force(batch, _reporter(progress, done, batch, total))
            done += sum(len(c) for c in batch)
        if progress is not None:
            progress(STAGE, 1.0)
        return out

    @torch.inference_mode()
    def _teacher_force(
        self, chunks: list[np.ndarray], on_frame: Callable[[int], None] | None
    ) -> list[np.ndarray]:
        """cb0 ids of up to `rows` chunks -> one [8, F_i] id array per chunk."""
        device, n = self.model.device, len(chunks)
        frames = max(len(c) for c in chunks)
        cb0 = np.zeros((n, frames), np.int64)
        for i, c in enumerate(chunks):  # a shorter chunk repeats its last code past its end
            cb0[i, : len(c)], cb0[i, len(c) :] = c, c[-1]
        cb0_t = torch.as_tensor(cb0, device=device)
        out = torch.empty((n, frames, tokens.STAGE2_CODEBOOKS), dtype=torch.long, device=device)
        out[:, :, 0] = cb0_t
        # frame 0: each chunk's prompt and first code in one prefill, then six single steps
        picks = []
        for i, c in enumerate(chunks):
            prompt = np.append(tokens.stage2_prompt(c)[0], c[0])
            ids = torch.as_tensor(prompt, device=device)[None]
            positions = torch.arange(len(prompt), device=device)[None]
            picks.append(self._forward(ids, positions, [Part(self.pool, i, 1, len(prompt))]))
            self.pos[i] = len(prompt)
        pick = torch.cat(picks)
        self.picks[:n, 0] = pick
        start = max(len(c) for c in chunks) + 4  # the longest prefill
        self.pos[:n] = self._singles(pick, self.pos[:n].clone(), n, self._kv(start + PICKS))
        start += PICKS - 1  # where the next frame's first token goes, for the longest chunk
        out[:, 0, 1:] = self.picks[:n]
        if on_frame is not None:
            on_frame(1)
        rows = bucket_rows(n, self.rows) if self.graphs.enabled else n
        self.pos[n:rows] = 0  # idle rows of the graph's batch stay inside their slots
        for f in range(1, frames):
            self.cb0[:n] = cb0_t[:, f]
            kv = self._kv(start + tokens.STAGE2_CODEBOOKS)
            start += tokens.STAGE2_CODEBOOKS
            self.graphs.run((rows, kv), lambda rows=rows, kv=kv: self._frame_step(rows, kv))
            out[:, f, 1:] = self.picks[:n]
            if on_frame is not None:
                on_frame(f + 1)
        ids = out.cpu().numpy()
        return [ids[i, : len(c)].T for i, c in enumerate(chunks)]

    def _frame_step(self, rows: int, kv: int) -> Callable[[], None]:
        part = [Part(self.pool, 0, rows, kv)]

        def step() -> None:
            ids = torch.stack([self.last[:rows], self.cb0[:rows]], 1)
            pos = self.pos[:rows, None] + torch.arange(2, device=ids.device)
            pick = self._forward(ids, pos, part)
            self.picks[:rows, 0] = pick
            self.pos[:rows] = self._singles(pick, pos[:, 1] + 1, rows, kv)

        return step

    def _singles(self, pick: torch.Tensor, pos: torch.Tensor, rows: int, kv: int) -> torch.Tensor:
        """Picks 2..7 of a frame, one token each; returns where the next frame starts."""
        part = [Part(self.pool, 0, rows, kv)]
        for k in range(1, PICKS):
            pick = self._forward(pick[:, None], pos[:, None], part)
            self.picks[:rows, k] = pick
            pos = pos + 1
        self.last[:rows] = pick
        return pos

    def _forward(self, ids: torch.Tensor, pos: torch.Tensor, parts: list[Part]) -> torch.Tensor:
        """The greedy pick among codebooks 1..7 after each row's last position (only those
        rows of the lm_head are read: a fifth of the model's bytes is the whole lm_head)."""
        logits = self.model.forward(ids, pos, parts, vocab=(self.first, self.end))
        return logits.argmax(-1) + self.first

    def _kv(self, need: int) -> int:
        """Cache positions attention reads to reach position `need - 1` (bucketed on a GPU)."""
        if self.graphs.enabled:
            need = _round_up(need, KV_BUCKET)
        return min(need, self.length)


def split(codes0: np.ndarray) -> list[np.ndarray]:
    """A track's codebook 0 [T] -> its 6-s chunks, as YuE's stage 2 cuts it (the last one may be
    shorter)."""
    chunk = tokens.STAGE2_CHUNK_FRAMES
    codes0 = np.asarray(codes0)
    return [codes0[i : i + chunk] for i in range(0, len(codes0), chunk)]


def assemble(chunk_ids: Sequence[np.ndarray]) -> np.ndarray:
    """A track's chunks' ids [8, F_i], in order -> its codes [8, T], out-of-range picks repaired
    over the whole track (the repair counts codes across chunks, as the reference does)."""
    return tokens.repair_codes(tokens.ids_to_codes(np.concatenate(list(chunk_ids), 1)))


def _reporter(
    progress: Progress | None, before: int, batch: list[np.ndarray], total: int
) -> Callable[[int], None] | None:
    """Per-frame progress of a batch of chunks side by side (a cancel waits one frame)."""
    if progress is None:
        return None
    frames = sum(len(chunk) for chunk in batch)
    return lambda f: progress(STAGE, min((before + min(f * len(batch), frames)) / total, 1.0))


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step
