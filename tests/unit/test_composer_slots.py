"""The composer's slots: the model config's `slots`, overridden by $V2BGM_COMPOSER_SLOTS."""

from __future__ import annotations

import pytest

from v2bgm.triton.handlers import DEFAULT_SLOTS, SLOTS_ENV, composer_slots


def test_the_config_gives_the_slots_unless_the_environment_does():
    assert composer_slots({"slots": "4"}, {}) == 4
    assert composer_slots({}, {}) == DEFAULT_SLOTS
    assert composer_slots({"slots": "4"}, {SLOTS_ENV: "8"}) == 8
    assert composer_slots({"slots": "4"}, {SLOTS_ENV: " "}) == 4  # unset in effect


@pytest.mark.parametrize("bad", ["0", "-2", "eight", "1.5"])
def test_a_bad_override_is_refused_naming_the_variable(bad):
    with pytest.raises(ValueError, match=SLOTS_ENV):
        composer_slots({"slots": "4"}, {SLOTS_ENV: bad})
