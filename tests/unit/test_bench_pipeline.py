"""The pipeline benchmark's reading of the server's stage histograms (its GPU run is separate)."""

from __future__ import annotations

from v2bgm.bench.pipeline import stage_totals
from v2bgm.triton.metrics import STAGE_SECONDS

METRICS = f"""# HELP {STAGE_SECONDS} Seconds a request spent in a stage
# TYPE {STAGE_SECONDS} histogram
{STAGE_SECONDS}_bucket{{model="video_captioner",version="1",stage="captioning",le="1.0"}} 0
{STAGE_SECONDS}_sum{{model="video_captioner",version="1",stage="captioning"}} 3.25
{STAGE_SECONDS}_count{{model="video_captioner",version="1",stage="captioning"}} 1
{STAGE_SECONDS}_sum{{model="music_composer",version="1",stage="stage1"}} 12.5
{STAGE_SECONDS}_count{{model="music_composer",version="1",stage="stage1"}} 2
{STAGE_SECONDS}_sum{{model="video_to_music_stream",version="1",stage="stage1"}} 1.5
{STAGE_SECONDS}_count{{model="video_to_music_stream",version="1",stage="stage1"}} 1
nv_inference_request_success{{model="music_composer",version="1"}} 7
"""


def test_stage_totals_sum_every_model_and_skip_buckets_and_other_series():
    assert stage_totals(METRICS) == {"captioning": (3.25, 1.0), "stage1": (14.0, 3.0)}
