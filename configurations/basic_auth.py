"""``basic-auth-realms``: HTTP basic authentication for a path of a vhost.

A realm protects every URI of its ``virtual_host_id`` that starts with ``path`` (``/``:
the whole site), PHP below it included: nginx matches the prefix as ``location ^~``, so
no regular-expression location (``\\.php$``) takes a request past it, and the PHP of the
protected path runs inside that location (``nginx-vhost.conf.j2``). Paths are compared as
nginx compares them: after it decoded ``%XX`` and resolved ``..``, so neither spelling
gets around the prefix.

On the node, ``/etc/nginx/htpasswd/<id>`` (0640 root:www-data: nginx's workers read it,
the tenants cannot) holds ``username:hash`` lines, rendered from
``templates/basic-auth-realms/htpasswd.j2`` as a secret file (``ccm diff`` shows
fingerprints only). nginx reads it at every request: a changed user list needs no reload.
It is planned by ``nginx-vhosts``, with the server block that names it.

Hashes are the ones nginx checks through the C library's ``crypt``, that are safe: bcrypt
(``$2y$``/``$2b$``) and SHA-512 crypt (``$6$``). nginx's own weak schemes (``{PLAIN}``,
``{SHA}``, ``{SSHA}``, ``$apr1$``) are refused. Every request with credentials pays for
one hash, so the cost is bounded: a bcrypt cost of at most 12, at most 100,000 SHA-512
rounds (a tenant's cost 31 would take a worker minutes per request).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ccm.models.base import CcmObject
from ccm.models.fields import ObjectId, Ref, Secret, pattern
from ccm.plan.changes import File
from ccm.plan.configuration import Render

HTPASSWD_DIR = "/etc/nginx/htpasswd/"
MAX_USERS = 1000
MAX_BCRYPT_COST = 12
MAX_SHA512_ROUNDS = 100_000

_BCRYPT = r"\$2[by]\$(?P<cost>0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}"
_SHA512 = r"\$6\$(?:rounds=(?P<rounds>[1-9][0-9]{0,8})\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{86}"
#: a path prefix nginx compares literally: segments of safe characters, none starting
#: with a dot (no ``.``/``..``, no dotfile nginx refuses anyway), no empty segment
URI_PREFIX = r"/|(?:/[A-Za-z0-9_~@+-][A-Za-z0-9._~@+-]{0,254})+/?"


def _hash_cost(value: str) -> str:
    bcrypt = re.fullmatch(_BCRYPT, value)
    if bcrypt is not None:
        if int(bcrypt["cost"]) > MAX_BCRYPT_COST:
            raise ValueError(
                f"a bcrypt cost of {int(bcrypt['cost'])}: at most {MAX_BCRYPT_COST} (nginx "
                "checks the hash at every request)"
            )
        return value
    sha512 = re.fullmatch(_SHA512, value)
    if sha512 is not None:
        rounds = int(sha512["rounds"] or 5000)
        if not 1000 <= rounds <= MAX_SHA512_ROUNDS:
            raise ValueError(
                f"{rounds} SHA-512 rounds: 1000 to {MAX_SHA512_ROUNDS} (nginx checks the "
                "hash at every request)"
            )
        return value
    raise ValueError("is not a bcrypt ($2y$, $2b$) or SHA-512 crypt ($6$) hash")


class RealmUser(BaseModel):
    """One user of a realm: a name and a crypt hash of the password."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    username: Annotated[
        str,
        Field(strict=True, max_length=64),
        pattern(r"[A-Za-z0-9._@+-]{1,64}", "a user name of letters, digits and ._@+-"),
    ]
    password_hash: Annotated[str, Field(strict=True, max_length=256), Secret]

    @field_validator("password_hash")
    @classmethod
    def _safe_scheme(cls, value: str) -> str:
        """bcrypt (cost 4-12) or SHA-512 crypt (1,000-100,000 rounds)."""
        return _hash_cost(value)


class BasicAuthRealm(CcmObject):
    """HTTP basic authentication for every URI of a vhost below ``path``, PHP included."""

    TYPE: ClassVar[str] = "basic-auth-realms"
    virtual_host_id: Annotated[ObjectId, Ref("virtual-hosts")]
    path: Annotated[
        str,
        Field(strict=True, max_length=1024),
        pattern(URI_PREFIX, "a URI prefix (/, or /segments of letters, digits and ._~@+-)"),
    ]
    #: the realm's text, shown by the browser
    name: Annotated[
        str,
        Field(strict=True, max_length=64),
        pattern(
            r"[A-Za-z0-9][A-Za-z0-9 ._,:()@/+-]{0,63}", "text of letters, digits, space, ._,:()@/+-"
        ),
    ]
    users: list[RealmUser] = Field(min_length=1, max_length=MAX_USERS)

    @field_validator("users")
    @classmethod
    def _distinct_users(cls, value: list[RealmUser]) -> list[RealmUser]:
        """No user name twice."""
        names = [user.username for user in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} given twice")
        return value

    def unique_keys(self) -> dict[str, Any]:
        # two locations of one path in one server block: nginx -t refuses the vhost
        return {"virtual_host_id, path": (self.virtual_host_id, self.path)}

    @property
    def htpasswd_path(self) -> str:
        return f"{HTPASSWD_DIR}{self.id}"


def htpasswd_file(realm: BasicAuthRealm, render: Render) -> File:
    """The realm's user file: readable by nginx's workers (www-data), a secret."""
    return File(
        realm.htpasswd_path,
        render("basic-auth-realms/htpasswd.j2", realm=realm),
        mode=0o640,
        owner="root",
        group="www-data",
        origin=(realm.describe(),),
        secret=True,
    )
