"""gRPC with TLS: a dedicated server with a certificate the test makes (openssl), reached by a
client that trusts it, refused to a plaintext client."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from v2bgm_client import interface as api

from tests.reliability.servers import render_repository, start_server
from v2bgm.serve import TritonServer

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]


def make_certificate(out: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""
    cert, key = out / "server.crt", out / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_server(
    weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TritonServer, Path]]:
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = make_certificate(tmp)
    repo = render_repository(tmp / "repo", (api.COMPOSER_MODEL,))
    ssl = ["--grpc-use-ssl=true", f"--grpc-server-cert={cert}", f"--grpc-server-key={key}"]
    triton = start_server(repo, weights, tmp / "tritonserver.log", ssl)
    yield triton, cert
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
    return client.infer(api.COMPOSER_MODEL, inputs, client_timeout=120).as_numpy("AUDIO")


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
