"""GPU check of cancellation: a composition cancelled mid-stage-1 stops within a token and gives
its GPU memory back. In-process (the composer's request handler, no server); not in `make test`.

    python tests/gpu/cancel_memory.py --weights models/tiny --out $OUT

Prints and writes a JSON report: CUDA memory allocated and reserved before, at the cancel and
after, and the seconds from the cancel to the handler's answer.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from v2bgm.composer import Cancelled
from v2bgm.triton.handlers import ComposerHandler
from v2bgm.triton.progress_channel import ComposerReport, ProgressChannel

LONG_MUSIC_S = 120.0
WARM_UP_MUSIC_S = 1.0
CANCEL_AT_FRACTION = 0.05  # far enough into stage 1 for its KV cache to have grown


def megabytes(n: int) -> float:
    return round(n / 2**20, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()

    handler = ComposerHandler.load(args.weights, "cuda:0", {"slots": "2"})

    def compose(inputs: dict, progress=None) -> object:
        answered: list = []
        done = threading.Event()
        handler.submit(
            inputs, progress, lambda result, _cost: (answered.append(result), done.set())
        )
        assert done.wait(600), "no answer"
        return answered[0]

    request = {
        "TAGS": np.array([[b"pop piano calm"]], np.object_),
        "DURATION_S": np.array([[LONG_MUSIC_S]], np.float32),
        "SEED": np.array([[1]], np.int64),
    }
    # A short composition first: cuBLAS's workspace and other one-time allocations stay.
    warm_up = {**request, "DURATION_S": np.array([[WARM_UP_MUSIC_S]], np.float32)}
    compose(warm_up)
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    before = (torch.cuda.memory_allocated(), torch.cuda.memory_reserved())
    channel = ProgressChannel.create(Path(tempfile.mkdtemp()))
    report = ComposerReport(ProgressChannel(channel.token, channel.root))
    at_cancel: dict[str, float] = {}

    def progress(stage: str, fraction: float) -> None:
        if fraction >= CANCEL_AT_FRACTION and not at_cancel:
            at_cancel.update(
                time=time.perf_counter(),
                fraction=fraction,
                allocated=torch.cuda.memory_allocated(),
                reserved=torch.cuda.memory_reserved(),
            )
            threading.Thread(target=channel.cancel).start()  # as the streaming model does
        report(stage, fraction)

    result = compose(request, progress)
    answered_s = time.perf_counter() - at_cancel["time"]
    torch.cuda.synchronize()
    after = (torch.cuda.memory_allocated(), torch.cuda.memory_reserved())
    summary = {
        "device": torch.cuda.get_device_name(0),
        "cancelled": isinstance(result, Cancelled),
        "cancelled_at_stage1_fraction": round(at_cancel["fraction"], 3),
        "seconds_from_cancel_to_answer": round(answered_s, 3),
        "allocated_mb": {
            "before": megabytes(before[0]),
            "at_cancel": megabytes(int(at_cancel["allocated"])),
            "after": megabytes(after[0]),
        },
        "reserved_mb": {
            "before": megabytes(before[1]),
            "at_cancel": megabytes(int(at_cancel["reserved"])),
            "after": megabytes(after[1]),
        },
    }
    handler.close()
    print(json.dumps(summary, indent=2))
    (args.out / "cancel_memory.json").write_text(json.dumps(summary, indent=2))
    assert summary["cancelled"] and answered_s < 1.0
    assert after[0] <= before[0], "a cancelled composition left tensors allocated"
    assert after[1] <= before[1], "a cancelled composition left memory reserved"


if __name__ == "__main__":
    main()
