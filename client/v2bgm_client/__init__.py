"""Client of the video-to-background-music service.

- `video`: `probe` and `sample_frames` (PyAV checks, decord decodes).
- `cuts`: `detect_cuts`, the video's shot boundaries (every frame, small), for `--cuts auto`.
- `mux`: `mux_audio` puts the music into the video without re-encoding the picture.
- `api`: `score_video`, the whole round trip, and its pure request/response helpers.
- `cli`: the `v2bgm` command.

The contract itself (tensor names, limits, stream events) is the `v2bgm-contract` distribution
(`v2bgm_contract.interface`, `v2bgm_contract.events`), which the server shares. Nothing is
imported here.
"""
