"""The contract between v2bgm's server and its callers, written down once (numpy only).

- `interface`: model names, tensor names, datatypes, shapes and limits, and the checks both
  sides run on them; the server renders its `config.pbtxt` files from it.
- `events`: the typed events of the streaming model, encoded and decoded by both sides.

The server (`v2bgm`) and the client (`v2bgm-client`) both depend on this distribution; a
backend service that builds its own requests needs nothing else.
"""
