"""Client of the video-to-background-music service.

- `interface`: the Triton contract (names, dtypes, shapes, limits); numpy only, the server
  imports it too.
- `video`: `probe` and `sample_frames` (PyAV checks, decord decodes).
- `mux`: `mux_audio` puts the music into the video without re-encoding the picture.
- `api`: `score_video`, the whole round trip, and its pure request/response helpers.
- `cli`: the `v2bgm` command.

Nothing is imported here, so `import v2bgm_client.interface` stays light.
"""
