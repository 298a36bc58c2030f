"""The extension point: a new object type as a separately installed distribution.

``tests/plugins/ccm-motd`` is a whole extension (type, configuration, template) that
touches nothing in ``ccm/``. The test installs it with pip into a directory of its own
and runs the real ``ccm`` command with that directory on the path: the type is known to
the writer (its rules apply), the daemon side plans and writes it, and without the
distribution the type does not exist.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from noderoot import seed_root

from ccm.settings import EtcdSettings

PLUGIN = Path(__file__).parent / "plugins" / "ccm-motd"
CCM = str(Path(sys.executable).parent / "ccm")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("source") / "ccm-motd"
    shutil.copytree(PLUGIN, source)  # the build writes beside the sources: not the checkout
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
         "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    yield target


def ccm(
    config: Path, site: Path | None, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCM_")}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run(
        [CCM, "--config", str(config), *args],
        input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def config(tmp_path: Path, etcd_settings: EtcdSettings) -> Path:
    root = seed_root(tmp_path / "root")
    path = tmp_path / "ccm.toml"
    path.write_text(
        f'node = "motd"\nroot = "{root}"\n'
        f"[etcd]\nendpoints = {json.dumps(list(etcd_settings.endpoints))}\n"
        f'prefix = "{etcd_settings.prefix}"\n'
        '[commands]\nreload_unit = ["true"]\nrestart_unit = ["true"]\n'
        '[checks]\nnginx_check = ["true"]\nphp_fpm_check = ["true"]\n'
        '[probes]\nnginx_probe = ["true"]\nphp_fpm_probe = ["true"]\n'
    )
    return path


def test_an_installed_extension_adds_a_type_with_no_change_in_ccm(
    installed: Path, config: Path
) -> None:
    message = json.dumps([{"id": 1, "text": "maintenance on Sunday 02:00 UTC"}])
    put = ccm(config, installed, "objects", "put", "motd-messages", "-", stdin=message)
    assert put.returncode == 0, put.stderr
    refused = ccm(
        config, installed, "objects", "put", "motd-messages", "-",
        stdin=json.dumps([{"id": 2, "text": "line\nbreak"}]),
    )  # fmt: skip
    assert refused.returncode == 1 and "motd-messages/2: text" in refused.stderr

    graph = ccm(config, installed, "graph")
    assert "motd-messages — messages of the day" in graph.stdout

    applied = ccm(config, installed, "apply", "--all")
    assert applied.returncode == 0, applied.stderr
    root = Path(config.read_text().split('root = "')[1].split('"')[0])
    assert (root / "etc/motd.d/1").read_text() == "maintenance on Sunday 02:00 UTC\n"

    without = ccm(config, None, "objects", "put", "motd-messages", "-", stdin=message)
    assert without.returncode == 2 and "'motd-messages' is not an object type" in without.stderr
