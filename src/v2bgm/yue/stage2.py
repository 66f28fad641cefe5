"""YuE stage 2: codebook 0 of a track -> codebooks 0..7, by teacher forcing, greedy.

For every frame the codebook-0 token is fed and the model picks 7 tokens among codebooks 1..7,
as YuE's `stage2_generate` does; a 6-second chunk's prompt is `<SOA><stage_1> cb0... <stage_2>`.
The reference calls `generate` anew for every frame and recomputes the whole prefix; here one
KV cache is carried through the chunk and all full chunks of a track run as one batch (the
exllamav2 port's approach), which gives the same greedy tokens with far fewer operations.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel

from v2bgm.composer import Progress
from v2bgm.yue import tokens

TOKENS_PER_FRAME = tokens.STAGE2_CODEBOOKS - 1  # codebooks 1..7 are generated


class Stage2:
    def __init__(self, model: PreTrainedModel, max_batch: int = 16) -> None:
        self.model = model
        self.max_batch = max_batch
        # The reference blocks [0, 46358) and [53526, 83738): codebooks 1..7 stay allowed at each
        # of the 7 positions; a pick from the wrong codebook is repaired afterwards.
        self.allowed_first = tokens.codebook_range(1)[0]
        self.allowed_last = tokens.codebook_range(tokens.STAGE2_CODEBOOKS - 1)[1]

    def fill(self, codes0: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """Codebook-0 codes [T] -> codes [8, T] (out-of-range picks repaired)."""
        chunk = tokens.STAGE2_CHUNK_FRAMES
        n_full = len(codes0) // chunk
        ids0 = tokens.codes_to_ids(np.asarray(codes0)[None])[0]
        pieces: list[np.ndarray] = []
        full = ids0[: n_full * chunk].reshape(n_full, chunk)
        for start in range(0, n_full, self.max_batch):
            rows = full[start : start + self.max_batch]
            report = _frame_reporter(progress, start * chunk, len(rows), len(codes0))
            pieces.extend(self._teacher_force(rows, report))
            if progress is not None:
                progress("stage2", min(start + self.max_batch, n_full) * chunk / len(codes0))
        if len(ids0) > n_full * chunk:  # the leftover frames run as one shorter chunk
            report = _frame_reporter(progress, n_full * chunk, 1, len(codes0))
            pieces.extend(self._teacher_force(ids0[None, n_full * chunk :], report))
        if progress is not None:
            progress("stage2", 1.0)
        ids = np.concatenate(pieces, axis=1)  # [8, T]
        return tokens.repair_codes(tokens.ids_to_codes(ids))

    @torch.inference_mode()
    def _teacher_force(
        self, cb0_ids: np.ndarray, on_frame: Callable[[int], None] | None = None
    ) -> list[np.ndarray]:
        """cb0 ids [B, F] -> one [8, F] id array per row; `on_frame(frames_done)` after each."""
        device = self.model.device
        batch, n_frames = cb0_ids.shape
        prompt = torch.as_tensor(tokens.stage2_prompt(cb0_ids), device=device)
        cb0 = torch.as_tensor(cb0_ids, device=device)
        cache = DynamicCache()
        self.model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
        out = torch.empty(
            (batch, n_frames, tokens.STAGE2_CODEBOOKS), dtype=torch.long, device=device
        )
        out[:, :, 0] = cb0
        feed = cb0[:, :1]
        for frame in range(n_frames):
            for k in range(1, tokens.STAGE2_CODEBOOKS):
                logits = self.model(
                    input_ids=feed, past_key_values=cache, use_cache=True, logits_to_keep=1
                ).logits[:, -1, self.allowed_first : self.allowed_last]
                picked = logits.argmax(dim=-1) + self.allowed_first
                out[:, frame, k] = picked
                feed = picked[:, None]
            if frame + 1 < n_frames:  # the last pick and the next frame's codebook 0, in one step
                feed = torch.cat([feed, cb0[:, frame + 1 : frame + 2]], dim=1)
            if on_frame is not None:
                on_frame(frame + 1)
        return [row.T for row in out.cpu().numpy()]


def _frame_reporter(
    progress: Progress | None, done_before: int, rows: int, total: int
) -> Callable[[int], None] | None:
    """Per-frame progress inside one teacher-forcing batch (`rows` chunks side by side), so a
    caller that cancels waits for one frame, not for a whole batch of chunks."""
    if progress is None:
        return None
    return lambda frames: progress("stage2", min((done_before + rows * frames) / total, 1.0))
