"""The composer's slots and precision: the model config's values, overridden by the environment."""

from __future__ import annotations

import pytest

from v2bgm.triton.handlers import (
    DEFAULT_SLOTS,
    PRECISION_ENV,
    SLOTS_ENV,
    composer_precision,
    composer_slots,
)


def test_the_config_gives_the_slots_unless_the_environment_does():
    assert composer_slots({"slots": "4"}, {}) == 4
    assert composer_slots({}, {}) == DEFAULT_SLOTS
    assert composer_slots({"slots": "4"}, {SLOTS_ENV: "8"}) == 8
    assert composer_slots({"slots": "4"}, {SLOTS_ENV: " "}) == 4  # unset in effect


@pytest.mark.parametrize("bad", ["0", "-2", "eight", "1.5"])
def test_a_bad_override_is_refused_naming_the_variable(bad):
    with pytest.raises(ValueError, match=SLOTS_ENV):
        composer_slots({"slots": "4"}, {SLOTS_ENV: bad})


def test_the_precision_comes_from_the_environment_then_the_config_then_the_default():
    assert composer_precision({}, {}) == "bf16"
    assert composer_precision({"precision": "fp8"}, {}) == "fp8"
    assert composer_precision({"precision": "bf16"}, {PRECISION_ENV: "fp8"}) == "fp8"
    assert composer_precision({"precision": "fp8"}, {PRECISION_ENV: " "}) == "fp8"


def test_an_unknown_precision_is_refused_by_the_engine_naming_the_choices(stage1_model):
    from v2bgm.engine.llama import StaticLlama

    with pytest.raises(ValueError, match=r"precision must be one of bf16, fp8, got 'int4'"):
        StaticLlama(stage1_model, precision="int4")
