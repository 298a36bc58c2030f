"""``php-versions``: the PHP versions the ``clusters`` objects list, installed by Ansible.

Plans one change, ``Playbook("php-versions.yml", {"php_versions": [...]})``: every
version listed by any ``clusters`` object, sorted. ``playbooks/php-versions.yml``
installs them (``phpX.Y-fpm``, ``phpX.Y-cli``, the service enabled), keeps a placeholder
pool ``ccm.placeholder.conf`` in each version's ``pool.d/`` so php-fpm always has a pool,
and removes the versions it installed earlier that are no longer listed (packages,
service, pool directory); see the playbook's header for the details.

No ``clusters`` object at all plans nothing: the object store applies its rule "a pool's
``php_version`` must be listed" only when a ``clusters`` object exists, so without one
PHP versions are not managed, and ccm must not read that as "remove every version".
A ``clusters`` object listing no version does remove them all.

It runs before ``php-fpm-pools`` (which depends on it), so a new version's packages and
pool directory are in place before its first pool is written and checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, ClassVar

from pydantic import Field, field_validator

from ccm.models.base import CcmObject
from ccm.models.fields import pattern
from ccm.models.snapshot import Snapshot
from ccm.plan.changes import Change, Playbook
from ccm.plan.configuration import Configuration, Render

PhpVersion = Annotated[str, Field(strict=True), pattern(r"[5-9]\.[0-9]", "a PHP version like 8.3")]


class Cluster(CcmObject):
    """The PHP versions the cluster provides. A pool's rule reads every ``clusters``
    object (``FpmPool.READS``), so writing or deleting one re-runs it: a version still in
    use cannot be taken away (rules hold both ways)."""

    TYPE: ClassVar[str] = "clusters"
    php_versions: list[PhpVersion] = Field(default_factory=list, max_length=20)

    @field_validator("php_versions")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("PHP versions must be distinct")
        return value


PLAYBOOK = "php-versions.yml"


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


class PhpVersions(Configuration):
    name = "php-versions"
    subscribes = (Cluster.TYPE,)
    summary = "PHP versions listed by the clusters objects, installed and removed by Ansible"
    groups = ("php",)

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        clusters = snapshot.all(Cluster)
        if not clusters:
            return []
        versions = {version for cluster in clusters for version in cluster.php_versions}
        return [Playbook(PLAYBOOK, {"php_versions": sorted(versions, key=version_key)})]
