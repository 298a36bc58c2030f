"""``[acme]`` settings: defaults, and bad values refused with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccm.errors import SettingsError
from ccm.settings import LETS_ENCRYPT_DIRECTORY, Settings, load_settings


def load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "ccm.toml"
    path.write_text(f'root = "{tmp_path}"\n{text}')
    return load_settings(path, environ={})


def test_the_defaults_order_from_lets_encrypt_and_answer_on_loopback(tmp_path: Path) -> None:
    settings = load(tmp_path, "")
    acme = settings.acme
    assert acme.directory_url == LETS_ENCRYPT_DIRECTORY
    assert acme.responder_listen == "127.0.0.1:8402"
    assert (acme.renew_before_days, acme.retry_initial, acme.retry_max) == (30, 300.0, 86400.0)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('directory_url = "http://acme.example/dir"', "acme.directory_url"),
        ('email = "not an address"', "acme.email"),
        ('email = "a@b"', "acme.email"),
        ('responder_listen = "8402"', "acme.responder_listen"),
        ("renew_before_days = 0", "acme.renew_before_days"),
        ('retry_initial = "300"', "acme.retry_initial"),
        ("retry_initial = 600.0\nretry_max = 60.0", "acme"),
        ("unknown = 1", "acme.unknown"),
    ],
)
def test_bad_acme_settings_are_refused_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load(tmp_path, f"[acme]\n{text}\n")
    assert refused.value.key == key


def test_a_test_server_on_loopback_may_use_http_and_a_ca_file(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        '[acme]\ndirectory_url = "http://127.0.0.1:14000/dir"\nca_file = "/tmp/ca.pem"\n'
        'email = "ops@example.org"\nresponder_listen = ""\n',
    )
    acme = settings.acme
    assert acme.directory_url == "http://127.0.0.1:14000/dir" and acme.responder_listen == ""
