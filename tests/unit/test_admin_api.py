"""The admin key: where it comes from and what it may be (v2bgm.admin_api)."""

from __future__ import annotations

import pytest

from v2bgm import admin_api

KEY = "Abc.def_ghi~jkl-0123"


def test_the_key_comes_from_the_environment_first(tmp_path):
    secret = tmp_path / "admin-key"
    secret.write_text("from-the-file-0123456789\n")
    both = {admin_api.KEY_ENV: KEY, admin_api.KEY_FILE_ENV: str(secret)}
    assert admin_api.admin_key(both) == KEY
    assert admin_api.admin_key({admin_api.KEY_FILE_ENV: str(secret)}) == "from-the-file-0123456789"


def test_no_key_configured_gives_a_fresh_random_one():
    first, second = admin_api.admin_key({}), admin_api.admin_key({})
    assert first != second
    assert admin_api.KEY_PATTERN.fullmatch(first)


@pytest.mark.parametrize(
    "bad", ["short", "has space in it here", "colon:breaks-the-flag", "equals=breaks-the-flag"]
)
def test_an_unusable_key_is_refused_naming_its_setting(bad):
    with pytest.raises(admin_api.AdminKeyError, match=admin_api.KEY_ENV):
        admin_api.admin_key({admin_api.KEY_ENV: bad})


def test_an_unreadable_key_file_is_refused(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(admin_api.AdminKeyError, match="cannot read"):
        admin_api.admin_key({admin_api.KEY_FILE_ENV: str(missing)})


def test_headers_for_each_protocol():
    assert admin_api.http_headers(KEY) == {"v2bgm-admin-key": KEY}
    assert admin_api.grpc_headers(KEY) == {"triton-grpc-protocol-v2bgm-admin-key": KEY}
