"""The pipeline benchmark's host memory of tritonserver and its stubs, read from /proc/PID/status
(a fake /proc here; the server's real one in the benchmark's own run)."""

from __future__ import annotations

from pathlib import Path

from v2bgm.bench.pipeline import host_memory


def status(hwm_kib: int, rss_kib: int) -> str:
    return f"Name:\tx\nVmHWM:\t{hwm_kib} kB\nVmRSS:\t{rss_kib} kB\nRssAnon:\t{rss_kib} kB\n"


def test_tritonserver_and_each_stub_by_its_model(tmp_path: Path):
    for pid, hwm in ((10, 2048), (11, 4096), (12, 8192), (13, 1024)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "status").write_text(status(hwm, hwm // 2))
    stub = "/opt/x/triton_python_backend_stub"
    stubs = {
        12: [stub, "/repo/music_composer/1/model.py", "/region_12", "1", "1", "10"],
        11: [stub, "/repo/video_captioner/1/model.py", "/region_11", "1", "1", "10"],
        13: [stub, "/repo/video_captioner/1/model.py", "/region_13", "1", "1", "10"],  # 2nd
        14: [stub, "/repo/video_to_music_stream/1/model.py", "/r", "1", "1", "10"],  # gone
    }
    found = host_memory(10, stubs=lambda pid: stubs if pid == 10 else {}, proc=tmp_path)
    assert found == {
        "tritonserver": {"VmHWM": 2, "VmRSS": 1, "RssAnon": 1},
        "video_captioner": {"VmHWM": 4, "VmRSS": 2, "RssAnon": 2},
        "music_composer": {"VmHWM": 8, "VmRSS": 4, "RssAnon": 4},
        "video_captioner (pid 13)": {"VmHWM": 1, "VmRSS": 0, "RssAnon": 0},
        "video_to_music_stream": {},
    }
