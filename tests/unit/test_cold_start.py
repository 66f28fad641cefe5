"""The cold-start log line (v2bgm.triton.coldstart), the /proc reading behind it and the
benchmark's, and the composer's warm-up setting (`full` or `first`)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from v2bgm.composer import WARM_UPS, ComposerOptions
from v2bgm.serve import NO_AUTO_COMPLETE_FLAG, TritonInstall, TritonServer
from v2bgm.triton import coldstart
from v2bgm.triton.handlers import WARM_UP_ENV, composer_warm_up
from v2bgm.yue.composer import YuEComposer

STATUS = """Name:\ttriton_python_b
Umask:\t0022
State:\tS (sleeping)
VmPeak:\t 9999999 kB
VmHWM:\t 5242880 kB
VmRSS:\t 1048576 kB
RssAnon:\t  786432 kB
RssFile:\t  262144 kB
RssShmem:\t       0 kB
Threads:\t12
"""


def fake_proc(root: Path, pid: int, status: str = STATUS, started_ticks: int = 1000) -> Path:
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "status").write_text(status)
    # comm with a space and a parenthesis: the fields are counted after the last ")"
    fields = ["S", *["0"] * 18, str(started_ticks), "0"]
    (root / str(pid) / "stat").write_text(f"{pid} (a (b) c) {' '.join(fields)}\n")
    ticks = os.sysconf("SC_CLK_TCK")
    (root / "uptime").write_text(f"{started_ticks / ticks + 12.5:.2f} 1.00\n")
    return root


def test_memory_is_read_from_proc_status_in_mib(tmp_path: Path):
    proc = fake_proc(tmp_path, 42)
    assert coldstart.memory_mib(42, proc) == {
        "VmHWM": 5120,
        "VmRSS": 1024,
        "RssAnon": 768,
        "RssFile": 256,
    }
    assert coldstart.memory_mib(43, proc) == {}  # gone
    own = coldstart.memory_mib()  # this process, for real
    assert own["VmHWM"] >= own["VmRSS"] > 0


def test_process_age_counts_from_the_kernels_start_time(tmp_path: Path):
    proc = fake_proc(tmp_path, 42)
    assert coldstart.process_age_s(42, proc) == pytest.approx(12.5, abs=0.02)
    assert 0 <= coldstart.process_age_s() < 3600  # this process, for real


def timer(memory: dict[str, int] | None = None) -> coldstart.ColdStart:
    times = iter([100.0, 103.25, 104.0, 130.5])
    return coldstart.ColdStart(
        "music_composer",
        "cuda:0",
        clock=lambda: next(times),
        memory=lambda: {"VmHWM": 5120, "RssAnon": 700} if memory is None else memory,
        age_s=lambda: 9.125,
    )


def test_the_line_holds_each_phase_with_its_seconds_and_memory_and_reads_back():
    cold = timer()
    cold.lap("weights: yue-s1")
    cold.lap("warm-up; first request")  # a ";" would split phases: it is replaced
    cold.lap("metrics")
    line = cold.line()
    assert "\n" not in line
    assert line.startswith(
        "music_composer cold start on cuda:0: 39.62 s, host memory peak (VmHWM) 5120 MiB; "
        "stub start + imports 9.12 s (VmHWM 5120 MiB, RssAnon 700 MiB); weights: yue-s1 3.25 s"
    )
    # as Triton's log writes it: a prefix, the message quoted
    log = (
        f'I1205 10:00:00.000 7 backend.py:80] "loading"\nI1205 10:00:41 7 backend.py:96] "{line}"\n'
    )
    assert coldstart.read_lines(log) == {
        "music_composer": {
            "device": "cuda:0",
            "seconds": 39.62,
            "vm_hwm_mib": 5120,
            "phases": [
                {"phase": name, "s": s, "vm_hwm_mib": 5120, "rss_anon_mib": 700}
                for name, s in (
                    ("stub start + imports", 9.12),
                    ("weights: yue-s1", 3.25),
                    ("warm-up, first request", 0.75),
                    ("metrics", 26.5),
                )
            ],
        }
    }


def test_unknown_memory_reads_as_a_question_mark_and_back_as_none():
    cold = timer(memory={})
    cold.lap("weights")
    found = coldstart.read_lines(cold.line())["music_composer"]
    assert found["vm_hwm_mib"] is None
    assert [p["rss_anon_mib"] for p in found["phases"]] == [None, None]


def test_a_restart_leaves_the_last_line_of_each_model():
    first, second = timer(), timer()
    second.lap("weights")
    log = "\n".join([first.line(), "other", second.line()])
    assert len(coldstart.read_lines(log)["music_composer"]["phases"]) == 2


# -- the composer's warm-up setting ---------------------------------------------------------------
def test_the_warm_up_setting_env_then_config_then_full():
    assert composer_warm_up({}, {}) == "full" == ComposerOptions.warm_up
    assert composer_warm_up({"warm_up": "first"}, {}) == "first"
    assert composer_warm_up({"warm_up": "first"}, {WARM_UP_ENV: " full "}) == "full"
    assert composer_warm_up({}, {WARM_UP_ENV: "first"}) == "first"
    with pytest.raises(ValueError, match=rf"\${WARM_UP_ENV} must be one of full, first"):
        composer_warm_up({}, {WARM_UP_ENV: "none"})
    with pytest.raises(ValueError, match="the model config's warm_up must be one of"):
        composer_warm_up({"warm_up": "all"}, {})
    assert set(WARM_UPS) == {"full", "first"}


class Recording:
    """Stands in for a loaded YuEComposer's parts: records what the warm-up runs."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.stage2_engine = SimpleNamespace(capture=lambda: self.calls.append("capture") or 12)
        self.stage1 = SimpleNamespace(
            run=lambda jobs: self.calls.append(f"stage1 x{len(jobs)}"),
            decoder=SimpleNamespace(capture=lambda: self.calls.append("stage1 capture") or 6),
        )

    def compose(self, request):
        self.calls.append(f"compose {request.duration_s:g} s")

    def plan(self, request):
        return SimpleNamespace(stage1=request.seed)


@pytest.mark.parametrize(
    ("mode", "calls", "laps"),
    [
        (
            "full",
            ["compose 1 s", "capture", "stage1 x2", "stage1 capture"],
            [
                "warm-up: first request",
                "warm-up: stage-2 shapes (12 graphs)",
                "warm-up: stage 1, two requests",
                "warm-up: stage-1 shapes (6 graphs)",
            ],
        ),
        ("first", ["compose 1 s"], ["warm-up: first request"]),
    ],
)
def test_warm_up_first_runs_the_first_request_alone(mode, calls, laps):
    composer, heard = Recording(), []
    YuEComposer.warm_up(composer, mode, lap=heard.append)  # type: ignore[arg-type]
    assert composer.calls == calls
    assert heard == laps


def test_an_unknown_warm_up_is_refused():
    with pytest.raises(ValueError, match="warm-up must be one of full, first"):
        YuEComposer.warm_up(Recording(), "none")  # type: ignore[arg-type]


# -- the server's command ------------------------------------------------------------------------
def test_the_server_skips_the_auto_complete_stubs_unless_asked():
    install = TritonInstall(Path("/x/tritonserver"), Path("/x/backends"))
    cmd = TritonServer(Path("repo"), Path("weights")).command(install)
    assert cmd.count(NO_AUTO_COMPLETE_FLAG) == 1
    own = ["--strict-model-config=false"]  # auto-complete on, asked for
    cmd = TritonServer(Path("repo"), Path("weights"), extra_args=own).command(install)
    assert NO_AUTO_COMPLETE_FLAG not in cmd and cmd[-1] == own[0]
