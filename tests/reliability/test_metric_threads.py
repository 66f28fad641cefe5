"""The server's metrics recorded from several threads at once, in a real tritonserver.

The composer's scheduler reports its line and its answers from its stage-1 and stage-2 threads
while `execute` reports on the model's own thread. Before `ModelMetrics` serialised its calls,
two threads touching one series crashed tritonserver itself (signal 11 in the Python backend:
see v2bgm.triton.metrics); `make soak` died within 200 requests. This test drives the real
recorder in the same pattern as the scheduler (queued on one thread, started/ended/answered on
others), many times over, and checks that the server lives and that no update was lost.

Before the fix it crashed the server on the first request (under a second on the 2-core machine).
"""

from __future__ import annotations

import textwrap
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from v2bgm_contract import interface as contract

from tests.conftest import TINY_WEIGHTS
from tests.reliability.probes import metric
from tests.reliability.servers import start_server
from v2bgm.triton import metrics
from v2bgm.yue import composer as yue

pytestmark = pytest.mark.server

MODEL = "metric_threads"
THREADS = 4  # the composer's recorders: model thread, stage 1, stage 2, and one more for margin
ROUNDS = 100  # per thread and request: each round is the five calls of one request's life
REQUESTS = 20

MODEL_PY = textwrap.dedent(
    f'''
    """v2bgm's ModelMetrics driven from {THREADS} threads at once, as by the scheduler."""
    import threading

    import numpy as np
    import triton_python_backend_utils as pb_utils

    from v2bgm.composer import StageStats
    from v2bgm.triton import metrics


    class TritonPythonModel:
        def initialize(self, args):
            # as the composer declares itself: its stages, and a line of its own
            self.metrics = metrics.ModelMetrics(
                pb_utils, "{contract.COMPOSER_MODEL}", "1", {yue.STAGES}, {yue.TOKEN_STAGES}, "line"
            )
            self.metrics.ready(True, 2)

        def life(self, rounds):
            done = metrics.Outcome(stages={{"stage1": StageStats(0.01, 3)}}, audio_s=1.0)
            for _ in range(rounds):
                self.metrics.queued()
                self.metrics.started(0.001)
                self.metrics.ended()
                self.metrics.answered(done)

        def execute(self, requests):
            responses = []
            for request in requests:
                rounds = int(pb_utils.get_input_tensor_by_name(request, "ROUNDS").as_numpy()[0])
                threads = [
                    threading.Thread(target=self.life, args=(rounds,)) for _ in range({THREADS})
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                out = pb_utils.Tensor("DONE", np.array([{THREADS} * rounds], np.int64))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            return responses

        def finalize(self):
            self.metrics.ready(False)
            self.metrics.close()
    '''
)

CONFIG = textwrap.dedent(
    f"""
    name: "{MODEL}"
    backend: "python"
    max_batch_size: 0
    input [ {{ name: "ROUNDS" data_type: TYPE_INT32 dims: [ 1 ] }} ]
    output [ {{ name: "DONE" data_type: TYPE_INT64 dims: [ 1 ] }} ]
    instance_group [ {{ kind: KIND_CPU count: 1 }} ]
    """
)


def metric_sum(port: int, name: str) -> float:
    """The sum of every `name` series on the metrics port (one model here)."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + "{"))


def test_metrics_from_many_threads_keep_the_server_up_and_lose_nothing(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    (repository / MODEL / "1").mkdir(parents=True)
    (repository / MODEL / "1" / "model.py").write_text(MODEL_PY)
    (repository / MODEL / "config.pbtxt").write_text(CONFIG)
    log = tmp_path / "tritonserver.log"
    server = start_server(repository, TINY_WEIGHTS, log, ["--model-control-mode=none"])
    assert server.process is not None
    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        rounds = grpcclient.InferInput("ROUNDS", [1], "INT32")
        rounds.set_data_from_numpy(np.array([ROUNDS], np.int32))
        for sent in range(REQUESTS):
            try:
                result = client.infer(MODEL, [rounds])
            except Exception as exc:
                died = server.process.poll()
                pytest.fail(
                    f"request {sent + 1} failed ({exc}); tritonserver exit code {died}:\n"
                    + log.read_text()[-3000:]
                )
            assert int(result.as_numpy("DONE")[0]) == THREADS * ROUNDS
        client.close()
        lives = REQUESTS * THREADS * ROUNDS
        port = server.metrics_port
        # every update arrived: counters exact, gauges back where they started
        assert metric(port, metrics.REQUESTS, contract.COMPOSER_MODEL) == lives
        assert metric(port, metrics.AUDIO_SECONDS, contract.COMPOSER_MODEL) == lives
        assert metric(port, metrics.IN_GENERATION, contract.COMPOSER_MODEL) == 0
        assert metric(port, metrics.WAITING, contract.COMPOSER_MODEL) == 0
        assert metric(port, metrics.READY, contract.COMPOSER_MODEL) == 1
        assert metric_sum(port, metrics.QUEUE_SECONDS + "_count") == lives
        assert metric_sum(port, metrics.STAGE_SECONDS + "_count") == lives
        assert server.process.poll() is None, "tritonserver exited"
    finally:
        code = server.stop()
    assert code == 0, f"tritonserver exited with {code}:\n" + log.read_text()[-3000:]
