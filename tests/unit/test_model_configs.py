from pathlib import Path

from v2bgm.triton.model_configs import render

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"


def test_configs_on_disk_are_rendered_from_the_interface():
    for relative, text in render().items():
        assert (REPOSITORY / relative).read_text() == text, f"run `make configs` ({relative})"


def test_every_python_model_has_a_thin_adapter():
    for model in ("video_captioner", "music_composer"):
        source = (REPOSITORY / model / "1" / "model.py").read_text()
        assert len(source.splitlines()) < 150
        assert "TritonPythonModel" in source
