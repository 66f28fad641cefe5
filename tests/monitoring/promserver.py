"""A real Prometheus for the tests: scrapes one tritonserver, evaluates the rules file, answers
PromQL over its HTTP API."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.monitoring.files import PROMETHEUS_CONFIG, RULES_FILE

SCRAPE_INTERVAL_S = 1  # short, so that the test sees scrapes and evaluations within seconds
JOB = "v2bgm-triton"
READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


def config(metrics_port: int) -> dict:
    """monitoring/prometheus.yml, with short intervals and the test's server as its target."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    interval = f"{SCRAPE_INTERVAL_S}s"
    config["global"] = {
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "evaluation_interval": interval,
    }
    config["rule_files"] = [
        str((PROMETHEUS_CONFIG.parent / f).resolve()) for f in config["rule_files"]
    ]
    assert config["rule_files"] == [str(RULES_FILE)], config["rule_files"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == JOB, job
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    return config


class Prometheus:
    def __init__(self, binary: Path, workdir: Path, port: int, metrics_port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = workdir / "prometheus.log"
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config(metrics_port)))
        command = [
            str(binary),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready after {timeout_s} s: {self.log}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        """An instant query (at `at`, Unix seconds, or now) through /api/v1/query."""
        params = {"query": expr} | ({} if at is None else {"time": f"{at:.3f}"})
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        assert body["data"]["resultType"] == "vector", body
        return [Sample(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]

    def value(self, expr: str, at: float | None = None, **labels: str) -> float:
        """The value of the one series of `expr` whose labels include `labels`."""
        found = [s for s in self.query(expr, at) if labels.items() <= s.labels.items()]
        assert len(found) == 1, f"{expr} {labels}: {found}"
        return found[0].value

    def rules_health(self) -> list[tuple[str, str, str]]:
        """(rule, health, last error) for every rule that is not healthy."""
        with urllib.request.urlopen(f"{self.url}/api/v1/rules", timeout=10) as response:
            groups = json.load(response)["data"]["groups"]
        return [
            (r["name"], r["health"], r.get("lastError", ""))
            for g in groups
            for r in g["rules"]
            if r["health"] != "ok"
        ]
