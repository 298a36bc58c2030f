"""``url-redirects``: names that answer every request with a redirect to another URL.

Writes ``/etc/nginx/sites-enabled/redirect_<domain>.conf`` (0644 root) from
``templates/url-redirects/redirect.conf.j2``: a server block for the domain and its
aliases on port 80, and on 443 too with a ``certificate_id`` (which must cover every
name, as for a vhost), that answers ``return <status_code> <destination_url>``, followed
by the request's path (``keep_path``) and query (``keep_query``) as the client sent them
(``$request_uri``, never nginx's decoded ``$uri``: a ``%0d%0a`` stays encoded). Planned by
``nginx-vhosts``, with the vhosts and the certificates, so one ``nginx -t`` sees them all.

The file name has ``_``, which no domain has: ``redirect-<domain>.conf`` (as first
planned) is also the file of a vhost named ``redirect-<domain>``.

**One namespace.** A redirect serves its names like a vhost: no name is served by two
vhosts or redirects, and between owners no wildcard reaches another's names
(``configurations.server_names``). Its ``READS`` are both types, so writing a vhost runs
every redirect's rule again: the rule holds both ways. A redirect therefore has an owner,
``unix_user_id`` (a field DESIGN's first table did not list; without it the wildcard
rules between owners, and the ACME names "of the same owner", could not be decided).

**The destination** is an absolute ``http``/``https`` URL to a lower-case host name, in
the characters of RFC 3986 and nothing nginx would read itself: no ``$`` (a variable),
no quotes, no backslash, no space or control character; ``javascript:``, ``data:`` and
every other scheme are refused. With ``keep_path`` or ``keep_query`` it has no query and
no fragment (the request's own would follow them). It may not point at one of the
redirect's own names (a loop).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from ccm.models.base import CcmObject, ObjectsView
from ccm.models.fields import Alias, Hostname, ObjectId, Ref
from ccm.models.names import ServedNames
from ccm.models.snapshot import Snapshot
from ccm.plan.changes import Change, File
from ccm.plan.configuration import Render, referenced
from ccm.plan.paths import file_name
from configurations.certificates import Certificate
from configurations.server_names import NAME_TYPES, coverage_problems, name_problems

SITES_DIR = "/etc/nginx/sites-enabled/"
MAX_SERVER_ALIASES = 100
MAX_URL = 2048
_HOST = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})"
#: RFC 3986's characters less what nginx would read (``$``), quotes and backslashes;
#: ``%`` only as an escape
_URL_CHARS = r"(?:[A-Za-z0-9._~!&()*+,;=:@/?#-]|%[0-9A-Fa-f]{2})"
DESTINATION = re.compile(rf"https?://{_HOST}(?::(?P<port>[1-9][0-9]{{0,4}}))?(?:/{_URL_CHARS}*)?")


def _destination(value: str) -> str:
    if len(value) > MAX_URL:
        raise ValueError(f"{len(value)} characters: a destination has at most {MAX_URL}")
    found = DESTINATION.fullmatch(value)
    if found is None:
        scheme = value.partition(":")[0].lower() if ":" in value else ""
        if scheme and scheme not in ("http", "https"):
            raise ValueError(f"the scheme {scheme!r} is not allowed: only http and https")
        raise ValueError(
            "is not an absolute http or https URL to a lower-case host name in URL "
            "characters (no $, quotes, backslash, space or control character)"
        )
    if found["port"] is not None and int(found["port"]) > 65535:
        raise ValueError(f"port {found['port']} is not a port")
    return value


class UrlRedirect(CcmObject):
    """Names that redirect every request to ``destination_url``."""

    TYPE: ClassVar[str] = "url-redirects"
    #: every vhost and every redirect: one namespace (``configurations.server_names``)
    READS: ClassVar[tuple[str, ...]] = NAME_TYPES
    domain: Hostname
    server_aliases: list[Alias] = Field(default_factory=list, max_length=MAX_SERVER_ALIASES)
    #: the owner: names are owned like a vhost's
    unix_user_id: Annotated[ObjectId, Ref("unix-users")]
    destination_url: str = Field(strict=True)
    status_code: Literal[301, 302, 303, 307, 308] = 301
    keep_path: bool = Field(default=True, strict=True)
    keep_query: bool = Field(default=True, strict=True)
    #: served on port 443 too, with this certificate (it must cover every name)
    certificate_id: Annotated[ObjectId, Ref("certificates")] | None = None

    @field_validator("destination_url")
    @classmethod
    def _safe_destination(cls, value: str) -> str:
        """An absolute http(s) URL to a lower-case host name, in URL characters without
        ``$``, quotes or backslashes; at most 2048 characters."""
        return _destination(value)

    def unique_keys(self) -> dict[str, Any]:
        return {"domain": self.domain}

    @cached_property
    def served(self) -> ServedNames:
        return ServedNames((self.domain, *self.server_aliases))

    def problems(self, view: ObjectsView) -> list[str]:
        where = self.describe()
        problems = name_problems(self, view, self.READS)
        parts = urlsplit(self.destination_url)
        kept = " and ".join(
            name
            for name, on in (("keep_path", self.keep_path), ("keep_query", self.keep_query))
            if on
        )
        if kept and ("?" in self.destination_url or "#" in self.destination_url):
            problems.append(
                f"{where}: destination_url: has a query or a fragment, which the request's "
                f"own would follow ({kept}): remove it, or turn {kept} off"
            )
        if parts.hostname is not None and self.served.overlaps(ServedNames((parts.hostname,))):
            problems.append(
                f"{where}: destination_url: {parts.hostname} is served by this redirect "
                "itself (a loop)"
            )
        problems += coverage_problems(self, view)
        return problems

    @property
    def target(self) -> str:
        """What follows ``return <status_code>``: the destination, then the request's
        path and query as sent (``$request_uri``), its path only (``$ccm_request_path``,
        a map of the default server) or its query only."""
        base = self.destination_url
        if self.keep_path:  # the request's path starts with its own /
            return base.rstrip("/") + ("$request_uri" if self.keep_query else "$ccm_request_path")
        if self.keep_query:
            return base + "$is_args$args"
        return base


def redirect_file(
    redirect: UrlRedirect, snapshot: Snapshot, render: Render, configuration: str
) -> File:
    """The redirect's server block (with its certificate's paths when it has one)."""
    certificate = None
    if redirect.certificate_id is not None:
        certificate = referenced(
            snapshot,
            Certificate,
            redirect.certificate_id,
            referrer=redirect,
            field="certificate_id",
            configuration=configuration,
        )
    return File(
        SITES_DIR + file_name("redirect_" + redirect.domain, ".conf"),
        render(
            "url-redirects/redirect.conf.j2",
            redirect=redirect,
            server_names=(redirect.domain, *redirect.server_aliases),
            certificate=certificate,
        ),
        origin=(redirect.describe(),),
    )


def redirect_files(snapshot: Snapshot, render: Render, configuration: str) -> Sequence[Change]:
    return [
        redirect_file(redirect, snapshot, render, configuration)
        for redirect in snapshot.all(UrlRedirect)
    ]
