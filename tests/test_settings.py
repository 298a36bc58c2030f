"""Settings: TOML file, environment overrides, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccm.errors import SettingsError
from ccm.settings import load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ccm.toml"
    path.write_text(text)
    return path


def test_every_key_is_optional(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), environ={})
    assert settings.root == Path("/")
    assert settings.etcd.endpoints == ("http://127.0.0.1:2379",)
    assert settings.debounce.quiet == 10 and settings.debounce.max_wait == 60
    assert settings.lock.ttl == 30 and settings.reconcile_interval == 3600
    assert settings.checks == {}  # the configurations declare the checks' argv


def test_file_values_and_environment_overrides(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    path = write(
        tmp_path,
        f'node = "web01"\nroot = "{tmp_path}/a"\n[etcd]\nendpoints = ["http://10.0.0.1:2379"]\n'
        '[commands]\nreload_unit = ["true", "{unit}"]\n',
    )
    settings = load_settings(path, environ={})
    assert settings.node == "web01" and settings.commands.reload_unit == ("true", "{unit}")
    env = {
        "CCM_NODE": "web02",
        "CCM_ROOT": f"{tmp_path}/b",
        "CCM_ETCD_PREFIX": "/other",
        "CCM_ETCD_ENDPOINTS": "http://a:1, http://b:2",
    }
    overridden = load_settings(path, environ=env)
    assert overridden.node == "web02" and overridden.root == tmp_path / "b"
    assert overridden.etcd.endpoints == ("http://a:1", "http://b:2")
    assert overridden.etcd.prefix == "/other"


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, 'node = "fromenv"\n')
    assert load_settings(environ={"CCM_CONFIG": str(path)}).node == "fromenv"
    with pytest.raises(SettingsError, match="no such settings file"):
        load_settings(environ={"CCM_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("nod = 'x'\n", "nod", "unknown key"),
        ("[etcd]\nendpoint = []\n", "etcd.endpoint", "unknown key"),
        ("[debounce]\nquiet = -1\n", "debounce.quiet", "greater than or equal"),
        ("root = 'relative'\n", "root", "absolute"),
        ("[etcd]\nprefix = 'ccm/'\n", "etcd.prefix", "must start with"),
        ("[etcd]\nendpoints = ['localhost']\n", "etcd.endpoints", "http(s)://host:port"),
        ("[commands]\nreload_unit = []\n", "commands.reload_unit", "non-empty argv"),
        ("[lock]\nttl = 'long'\n", "lock.ttl", "integer"),
        ("node = 'web 01'\n", "node", "pattern"),
        ("x = [", "ccm.toml", "not valid TOML"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, text: str, key: str, reason: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(write(tmp_path, text), environ={})
    assert key in str(error.value) and reason in str(error.value)


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[lock]\nttl = '30'\n", "lock.ttl", "valid integer"),
        ("[debounce]\nquiet = '1'\n", "debounce.quiet", "valid number"),
        ("[accounts]\nuid_base = 2.5\n", "accounts.uid_base", "valid integer"),
        ("node = 7\n", "node", "valid string"),
        ("root = '/etc/passwd'\n", "root", "is not a directory"),
        ("root = '/nonexistent-ccm-root'\n", "root", "does not exist"),
        ("[ansible]\nplaybooks_dir = 1979-05-27\n", "ansible.playbooks_dir", "valid string"),
    ],
)
def test_settings_are_strict_and_the_root_must_exist(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(write(tmp_path, text), environ={})
    message = str(error.value)
    assert key in message and reason in message and "\n" not in message


def test_a_settings_file_that_is_not_utf8_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ccm.toml"
    path.write_bytes(b'node = "\xff"\n')
    with pytest.raises(SettingsError, match="not UTF-8"):
        load_settings(path, environ={})


def test_a_root_is_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(write(tmp_path, ""), environ={"CCM_ROOT": str(missing)})
    assert not missing.exists()


def test_checks_under_commands_as_design_spells_them_are_checks(tmp_path: Path) -> None:
    text = '[commands]\nnginx_check = ["true"]\n[checks]\nphp_fpm_check = ["false"]\n'
    settings = load_settings(write(tmp_path, text), environ={})
    assert settings.checks == {"nginx_check": ("true",), "php_fpm_check": ("false",)}


def test_an_unknown_check_is_refused_at_start_naming_the_known_ones(tmp_path: Path) -> None:
    from ccm.engine.registry import Registry
    from ccm.engine.run import Engine
    from configurations import CONFIGURATIONS

    settings = load_settings(write(tmp_path, '[checks]\nngnix_check = ["true"]\n'), environ={})
    with pytest.raises(SettingsError) as refused:
        Engine(Registry(CONFIGURATIONS), settings)
    assert "checks.ngnix_check" in str(refused.value)
    assert "nginx_check" in str(refused.value) and "php_fpm_check" in str(refused.value)
