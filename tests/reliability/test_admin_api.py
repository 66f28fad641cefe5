"""Triton's administrative APIs need the admin key; health, metadata and inference stay open.

Against real tritonservers, over gRPC (tritonclient) and HTTP (plain requests): a caller without
the key cannot register a Python-backend stub's own /dev/shm region as system shared memory (the
first step of the attack that killed the composer's stub), change logging or tracing, read
statistics, model configs or the repository; with the key it can; and a server started as Triton
leaves it (`open_admin`) accepts the very same calls without any key, so these refusals are the
restriction's doing.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from v2bgm_contract import interface as contract

from tests.reliability.probes import stub_pids
from tests.reliability.servers import ADMIN_KEY, render_repository, start_server
from v2bgm import admin_api
from v2bgm.serve import SHM_DIR, TritonServer

pytestmark = pytest.mark.server

MODEL = contract.CAPTIONER_MODEL  # one Python-backend model is enough: the rules are the server's
REGION = "v2bgm_admin_test"
REGION_BYTES = 1 << 20
REFUSED_GRPC = "This protocol is restricted"  # Triton 2.51's words, with gRPC UNAVAILABLE
REFUSED_HTTP = 403


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_repository(tmp_path_factory.mktemp("admin") / "repo", (MODEL,))


@pytest.fixture(scope="module")
def restricted(
    repository: Path, weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    log = tmp_path_factory.mktemp("restricted") / "tritonserver.log"
    server = start_server(repository, weights, log)
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def open_server(
    repository: Path, weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    log = tmp_path_factory.mktemp("open") / "tritonserver.log"
    server = start_server(repository, weights, log, open_admin=True)
    yield server
    assert server.stop() == 0


def stub_region_key(server: TritonServer) -> str:
    """A live Python-backend stub's own shared-memory region, as a shm key ("/name")."""
    assert server.stub_regions, "the server's stubs were not noted"
    return "/" + server.stub_regions[0]


# --- the calls: (name, gRPC call, HTTP method, path, body) -------------------------------------
GrpcCall = Callable[[grpcclient.InferenceServerClient, str, dict[str, str]], object]


def grpc_calls(region_key: str) -> dict[str, GrpcCall]:
    return {
        "shared-memory": lambda c, _m, h: c.register_system_shared_memory(
            REGION, region_key, REGION_BYTES, headers=h
        ),
        "logging": lambda c, _m, h: c.update_log_settings({"log_verbose_level": 0}, headers=h),
        "trace": lambda c, _m, h: c.update_trace_settings(
            settings={"trace_rate": "1000"}, headers=h
        ),
        "statistics": lambda c, m, h: c.get_inference_statistics(m, headers=h),
        "model-config": lambda c, m, h: c.get_model_config(m, headers=h),
        "model-repository": lambda c, _m, h: c.get_model_repository_index(headers=h),
    }


def http_calls(region_key: str, model: str) -> dict[str, tuple[str, str, dict | None]]:
    return {
        "shared-memory": (
            "POST",
            f"/v2/systemsharedmemory/region/{REGION}/register",
            {"key": region_key, "offset": 0, "byte_size": REGION_BYTES},
        ),
        "logging": ("POST", "/v2/logging", {"log_verbose_level": 0}),
        "trace": ("POST", "/v2/trace/setting", {"trace_rate": "1000"}),
        "statistics": ("GET", f"/v2/models/{model}/stats", None),
        "model-config": ("GET", f"/v2/models/{model}/config", None),
        "model-repository": ("POST", "/v2/repository/index", {}),
    }


def http(
    server: TritonServer, method: str, path: str, body: dict | None, headers: dict[str, str]
) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    url = f"http://127.0.0.1:{server.http_port}{path}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_api_groups_are_all_covered():
    assert set(grpc_calls("/x")) == set(admin_api.RESTRICTED_APIS) == set(http_calls("/x", "m"))


@pytest.mark.parametrize("group", admin_api.RESTRICTED_APIS)
def test_without_the_key_every_administrative_call_is_refused(server, group):
    """The shared server runs as `v2bgm-serve` starts it with no key configured."""
    region = stub_region_key(server)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    with pytest.raises(InferenceServerException, match=REFUSED_GRPC) as refused:
        grpc_calls(region)[group](client, contract.COMPOSER_MODEL, {})
    assert refused.value.status() == "StatusCode.UNAVAILABLE"
    method, path, body = http_calls(region, contract.COMPOSER_MODEL)[group]
    code, text = http(server, method, path, body, {})
    assert code == REFUSED_HTTP, text
    assert admin_api.ADMIN_HEADER in text  # Triton names the header it expects
    client.close()


def test_a_wrong_key_is_refused_too(restricted):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{restricted.grpc_port}")
    wrong = "not-the-admin-key-0000"
    with pytest.raises(InferenceServerException, match=REFUSED_GRPC):
        client.get_inference_statistics(MODEL, headers=admin_api.grpc_headers(wrong))
    code, _ = http(restricted, "POST", "/v2/logging", {}, admin_api.http_headers(wrong))
    assert code == REFUSED_HTTP


def test_refused_calls_leave_the_server_and_its_stubs_alone(server):
    assert server.process is not None
    before = sorted(stub_pids(server.process.pid))
    region = stub_region_key(server)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    for call in grpc_calls(region).values():
        with pytest.raises(InferenceServerException):
            call(client, contract.COMPOSER_MODEL, {})
    # nothing was registered, so the status call itself is refused too: the region stays theirs
    with pytest.raises(InferenceServerException, match=REFUSED_GRPC):
        client.get_system_shared_memory_status()
    assert client.is_server_ready() and client.is_model_ready(contract.COMPOSER_MODEL)
    assert sorted(stub_pids(server.process.pid)) == before
    client.close()


def test_health_metadata_and_inference_stay_open(server):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata().version
    inputs = {i.name for i in client.get_model_metadata(contract.COMPOSER_MODEL).inputs}
    assert {s.name for s in contract.COMPOSER.inputs if not s.optional} <= inputs
    for path in ("/v2/health/ready", "/v2", f"/v2/models/{contract.COMPOSER_MODEL}"):
        assert http(server, "GET", path, None, {})[0] == 200, path
    client.close()  # inference itself: every other server test


@pytest.mark.parametrize("group", ["logging", "trace", "statistics", "model-config"])
def test_with_the_key_the_calls_are_served(restricted, group):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{restricted.grpc_port}")
    grpc_calls("/unused")[group](client, MODEL, admin_api.grpc_headers(ADMIN_KEY))
    method, path, body = http_calls("/unused", MODEL)[group]
    code, text = http(restricted, method, path, body, admin_api.http_headers(ADMIN_KEY))
    assert code == 200, text
    client.close()


def test_as_triton_leaves_it_the_same_calls_are_accepted_from_anyone(open_server):
    """What `v2bgm-serve` did before: every caller could register shared memory (here a region
    of the test's own, not a stub's), change logging and tracing, and read statistics."""
    region = SHM_DIR / f"{REGION}_{open_server.grpc_port}"
    region.write_bytes(b"\0" * REGION_BYTES)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{open_server.grpc_port}")
    try:
        for group, call in grpc_calls("/" + region.name).items():
            call(client, MODEL, {})  # raises if refused
            if group == "shared-memory":
                assert REGION in str(client.get_system_shared_memory_status())
                client.unregister_system_shared_memory(REGION)
        for group, (method, path, body) in http_calls("/" + region.name, MODEL).items():
            code, text = http(open_server, method, path, body, {})
            assert code == 200, (group, text)
            if group == "shared-memory":
                client.unregister_system_shared_memory(REGION)
    finally:
        client.close()
        region.unlink(missing_ok=True)
