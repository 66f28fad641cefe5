"""gRPC with TLS on dedicated servers, with certificates the test makes (openssl).

Server-only TLS: a client that trusts the server's certificate is served, a plaintext one is
refused. Mutual TLS (`--grpc-use-ssl-mutual`): the client's blocking, streaming and asyncio paths
and the CLI are served with a client certificate the server's CA signed; without one, with one
from another CA, or without trusting the server, the connection is refused with one clear line.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from v2bgm_client import aio, stream
from v2bgm_client import api as client_api
from v2bgm_client.connection import TlsOptions
from v2bgm_client.errors import ServerError
from v2bgm_client.options import SoundtrackOptions
from v2bgm_contract import events
from v2bgm_contract import interface as contract

from tests import videos
from tests.conftest import ROOT
from tests.reliability.certs import Pair, make_ca, make_self_signed, make_signed, needs_openssl
from tests.reliability.servers import render_repository, start_server
from v2bgm.serve import TritonServer

pytestmark = [pytest.mark.server, needs_openssl]

CLI_TIMEOUT_S = 600  # one short video through the stream on a loaded 2-core machine
CALL_TIMEOUT_S = 300.0


@pytest.fixture(scope="module")
def tls_server(
    weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TritonServer, Path]]:
    tmp = tmp_path_factory.mktemp("tls")
    server_pair = make_self_signed(tmp)
    repo = render_repository(tmp / "repo", (contract.COMPOSER_MODEL,))
    ssl = [
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={server_pair.cert}",
        f"--grpc-server-key={server_pair.key}",
    ]
    triton = start_server(repo, weights, tmp / "tritonserver.log", ssl)
    yield triton, server_pair.cert
    triton.stop(timeout_s=10)


def compose(client: grpcclient.InferenceServerClient) -> np.ndarray:
    inputs = []
    for name, value, dtype in [
        ("TAGS", np.array([[b"pop piano"]], np.object_), "BYTES"),
        ("DURATION_S", np.array([[1.0]], np.float32), "FP32"),
    ]:
        tensor = grpcclient.InferInput(name, list(value.shape), dtype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return client.infer(contract.COMPOSER_MODEL, inputs, client_timeout=120).as_numpy("AUDIO")


def test_tls_client_is_served(tls_server):
    server, cert = tls_server
    client = grpcclient.InferenceServerClient(
        f"localhost:{server.grpc_port}", ssl=True, root_certificates=str(cert)
    )
    assert compose(client).size > 0


def test_plaintext_client_is_refused(tls_server):
    server, _ = tls_server
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    with pytest.raises(InferenceServerException) as err:
        compose(client)
    assert err.value.status() == "StatusCode.UNAVAILABLE", err.value


def test_plaintext_v2bgm_client_is_told_to_use_tls(tls_server):
    server, _ = tls_server
    request = client_api.build_request(np.zeros((1, 16, 16, 3), np.uint8), 1.0, 1.0, 0)
    with pytest.raises(ServerError, match=r"does it require TLS \(--ssl\)\?"):
        client_api.infer(f"localhost:{server.grpc_port}", request, CALL_TIMEOUT_S)


@dataclass(frozen=True)
class MutualTls:
    server: TritonServer
    ca: Pair
    client: Pair
    intruder: Pair  # signed by another CA

    @property
    def url(self) -> str:
        return f"localhost:{self.server.grpc_port}"

    def options(self, client: Pair | None = None) -> TlsOptions:
        if client is None:
            return TlsOptions(root_cert=self.ca.cert)
        return TlsOptions(self.ca.cert, client.cert, client.key)


@pytest.fixture(scope="module")
def mutual(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MutualTls]:
    """The whole model repository (ensemble and stream) behind mutual TLS."""
    tmp = tmp_path_factory.mktemp("mtls")
    ca = make_ca(tmp)
    server_pair = make_signed(tmp, ca, "server", "serverAuth")
    client = make_signed(tmp, ca, "client", "clientAuth")
    intruder = make_signed(tmp, make_ca(tmp, "other-ca"), "intruder", "clientAuth")
    ssl = [
        "--grpc-use-ssl=true",
        "--grpc-use-ssl-mutual=true",
        f"--grpc-server-cert={server_pair.cert}",
        f"--grpc-server-key={server_pair.key}",
        f"--grpc-root-cert={ca.cert}",
    ]
    triton = start_server(ROOT / "model_repository", weights, tmp / "tritonserver.log", ssl)
    yield MutualTls(triton, ca, client, intruder)
    triton.stop(timeout_s=10)


def small_request() -> dict[str, np.ndarray]:
    return client_api.build_request(np.zeros((1, 16, 16, 3), np.uint8), 1.0, 1.0, 0)


def stream_request() -> dict[str, np.ndarray]:
    options = SoundtrackOptions(seed=1, duration_s=1.0)
    return stream.build_stream_request(np.zeros((1, 16, 16, 3), np.uint8), 1.0, options)


def test_mutual_tls_blocking_call_with_a_client_certificate(mutual):
    outputs = client_api.infer(
        mutual.url, small_request(), CALL_TIMEOUT_S, tls=mutual.options(mutual.client)
    )
    assert client_api.parse_response(outputs).audio.size > 0


def test_mutual_tls_stream_with_a_client_certificate(mutual):
    seen = list(
        stream.stream_events(
            mutual.url, stream_request(), CALL_TIMEOUT_S, tls=mutual.options(mutual.client)
        )
    )
    assert isinstance(seen[-1], events.Done)
    assert any(isinstance(e, events.Composed) and e.audio.size > 0 for e in seen)


def test_mutual_tls_asyncio_stream_with_a_client_certificate(mutual):
    async def collect() -> list[events.Event]:
        tls = mutual.options(mutual.client)
        return [e async for e in aio.stream_events(mutual.url, stream_request(), 300.0, tls)]

    seen = asyncio.run(collect())
    assert isinstance(seen[-1], events.Done)


@pytest.mark.parametrize(
    ("who", "hint"),
    [
        ("no client certificate", "does it require a client certificate"),
        ("another CA's certificate", "does it trust this client certificate"),
        ("server not trusted", "--root-cert names the CA that signed it"),
    ],
)
def test_mutual_tls_refusals_are_one_clear_line(mutual, who, hint):
    tls = {
        "no client certificate": mutual.options(),
        "another CA's certificate": mutual.options(mutual.intruder),
        "server not trusted": TlsOptions(None, mutual.client.cert, mutual.client.key),
    }[who]
    with pytest.raises(ServerError) as blocking:
        client_api.infer(mutual.url, small_request(), CALL_TIMEOUT_S, tls=tls)
    with pytest.raises(ServerError) as streaming:
        list(stream.stream_events(mutual.url, stream_request(), CALL_TIMEOUT_S, tls=tls))

    async def refused() -> None:
        async for _ in aio.stream_events(mutual.url, stream_request(), CALL_TIMEOUT_S, tls):
            pass

    with pytest.raises(ServerError) as asynchronous:
        asyncio.run(refused())
    for err in (blocking, streaming, asynchronous):
        message = str(err.value)
        assert message.startswith(f"cannot reach the server at {mutual.url}"), message
        assert hint in message and "\n" not in message, message


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "v2bgm_client", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def test_cli_with_mutual_tls(mutual, tmp_path):
    source = videos.make_video(tmp_path / "clip.mp4", seconds=1)
    out = tmp_path / "out.mp4"
    base = [str(source), "-o", str(out), "--url", mutual.url, "--seed", "3", "--quiet"]

    refused = run_cli(*base, "--root-cert", str(mutual.ca.cert))
    assert refused.returncode == 1 and not out.exists()
    (line,) = refused.stderr.splitlines()
    assert line.startswith("v2bgm: error: cannot reach the server"), refused.stderr
    assert "--client-cert, --client-key" in line

    tls = ["--root-cert", str(mutual.ca.cert), "--client-cert", str(mutual.client.cert)]
    served = run_cli(*base, *tls, "--client-key", str(mutual.client.key))
    assert served.returncode == 0, served.stderr
    assert videos.audio_duration(out) > 0


def test_tls_client_of_a_plaintext_server_is_one_clear_line(grpc_url):
    tls = TlsOptions()  # the session's server speaks plaintext
    with pytest.raises(ServerError) as err:
        client_api.infer(grpc_url, small_request(), CALL_TIMEOUT_S, tls=tls)
    message = str(err.value)
    assert message.startswith(f"cannot reach the server at {grpc_url}"), message
    assert "is the server plaintext (no --ssl)?" in message and "\n" not in message, message
