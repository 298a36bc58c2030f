"""Where the shipped templates and playbooks are: in the package, or in the checkout.

A wheel carries the top-level ``templates/`` and ``playbooks/`` folders as
``ccm/data/templates`` and ``ccm/data/playbooks`` (see pyproject.toml), found with
``importlib.resources``; an editable install from a checkout reads the folders
themselves, so an edit to a template takes effect without a reinstall.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def resource_dir(name: str) -> Path:
    """``ccm/data/<name>`` of an installed wheel, else ``<checkout>/<name>``."""
    packaged = Path(str(files("ccm").joinpath("data", name)))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / name
