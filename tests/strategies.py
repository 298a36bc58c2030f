"""Hypothesis strategies for every object type: plausible values and an attacker's ones.

One strategy per type in ``STRATEGIES`` (keyed by the type name of
``ccm.models.OBJECT_TYPES``): a new type must add its strategy here, and
``test_accepted_applies.test_every_object_type_has_a_strategy`` fails until it does.

Each per-type strategy takes a ``Context`` (the raw objects of the batch drawn so far) so
references point at objects of the same batch most of the time, and draws a *raw* JSON
value, as a Cluster API would send it: a dict that may be invalid in any field (wrong
type, boundary id, control characters, trailing newline, homoglyphs, several KB long).
``batches()`` draws a whole batch: a few objects of every type, in write order.

Most drawn values are plausible (so most objects are accepted and the node side is
exercised); a share is mutated from a plausible value (one attacker's edit: a trailing
``\\n``, an inserted U+2028, upper case, a homoglyph, a trailing dot, repetition up to
several KB), and a small share is wild (any JSON value).
"""

from __future__ import annotations

import functools
import graphlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from certs import TestCa, key_pem, new_key
from hypothesis import strategies as st

from ccm.models import OBJECT_TYPES

Raw = dict[str, Any]

#: characters and fragments an attacker tries in any string that reaches a config file
ADVERSARIAL_FRAGMENTS: tuple[str, ...] = (
    "\n",
    "\r",
    "\r\n",
    "\x85",  # NEL: str.splitlines() breaks on it, cron and nginx do not
    "\u2028",
    "\u2029",
    "\x00",
    "\t",
    "\x0b",
    "\x0c",
    " ",
    ";",
    "{",
    "}",
    "#",
    '"',
    "'",
    "\\",
    "$",
    "${HOME}",
    "$uri",
    "%",
    ":",
    "=",
    "/",
    "/..",
    "*",
    "[",
    "]",
    "é",
    "ß",
    "İ",  # lower() gives two code points
    "\u212a",  # KELVIN SIGN: NFKC and lower() give "k"
    "\ufeff",
    "\u200b",
    "ｅ",  # FULLWIDTH e: NFKC gives "e"
)
#: look-alike letters (Cyrillic, Greek) for the Latin ones
HOMOGLYPHS: dict[str, str] = {
    "a": "а",
    "e": "е",
    "o": "о",
    "c": "с",
    "p": "р",
    "x": "х",
    "i": "і",
    "y": "у",
    "k": "κ",
    "n": "п",
}

#: ids at the edges: uid_base (20000) + id landing on 65534 (nobody), on 2**31 and
#: 2**32 - 1 (the invalid uid -1), JSON's 2**53, int64, bigger, and not ints at all
BOUNDARY_IDS: tuple[Any, ...] = (
    1,
    2,
    45534,
    2**31 - 1 - 20000,
    2**31 - 20000,
    2**32 - 1 - 20000,
    2**31 - 1,
    2**31,
    2**32,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    10**30,
    0,
    -1,
    True,
    False,
    1.0,
    1.5,
    "1",
    "01",
    None,
)


def _names(path: str) -> tuple[str, ...]:
    """System account or group names in ``path`` (ids below 1000 or from 60000): a
    person's login (1000-59999) is this machine's, not every node's, so a write cannot
    know it; a node refuses a tenant of that name (tests/test_node_refusals.py)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return ()
    fields = [line.split(":") for line in lines if line and not line.startswith("#")]
    return tuple(
        f[0] for f in fields if len(f) > 2 and not (f[2].isdigit() and 1000 <= int(f[2]) < 60000)
    )


#: system account and group names the machine (a Debian node) already has
HOST_NAMES: tuple[str, ...] = tuple(
    sorted(set(_names("/etc/passwd")) | set(_names("/etc/group")) | {"crontab", "www-data"})
)


@dataclass
class Context:
    """The raw objects drawn so far in one batch, by type (for references)."""

    drawn: dict[str, list[Raw]] = field(default_factory=dict)
    #: percent of values that are not plausible (a fifth of them wild)
    hostility: int = 10
    #: a calm batch: several owners, few attacker's edits, vhost names from one family
    #: that overlaps through wildcards (``CONTESTED``), no ``clusters`` object: most
    #: objects are valid and reach the rules between owners and the node's refusals
    calm: bool = False

    def ids(self, type_name: str) -> list[Any]:
        return [raw.get("id") for raw in self.drawn.get(type_name, []) if isinstance(raw, dict)]

    def values(self, type_name: str, key: str) -> list[Any]:
        return [
            raw[key]
            for raw in self.drawn.get(type_name, [])
            if isinstance(raw, dict) and key in raw
        ]


# --- building blocks ----------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """One attacker's edit of a plausible value."""
    value = draw(base)
    fragment = draw(st.sampled_from(ADVERSARIAL_FRAGMENTS))
    how = draw(st.integers(0, 9))
    if how == 0:
        return value + "\n"
    if how == 1:
        return value + fragment
    if how == 2:
        return fragment + value
    if how == 3:
        at = draw(st.integers(0, len(value)))
        return value[:at] + fragment + value[at:]
    if how == 4:
        return value.upper() if draw(st.booleans()) else value.title()
    if how == 5:
        return value + "."
    if how == 6:
        letters = [i for i, ch in enumerate(value) if ch in HOMOGLYPHS]
        if not letters:
            return value + "\u2028"
        at = draw(st.sampled_from(letters))
        return value[:at] + HOMOGLYPHS[value[at]] + value[at + 1 :]
    if how == 7:  # long: up to several KB
        times = draw(st.sampled_from([2, 8, 64, 300, 1200]))
        joiner = draw(st.sampled_from(["", "-", ".", "/", " "]))
        return joiner.join([value] * times)[: draw(st.integers(64, 6000))]
    if how == 8:
        return value + "\r\n"
    return value + draw(st.sampled_from(["\x85", "\u2028", "\u2029", "\x00", " "]))


def wild() -> st.SearchStrategy[Any]:
    """Any JSON value, or a string of adversarial characters."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False),
        st.text(st.sampled_from("".join(ADVERSARIAL_FRAGMENTS) + "az09.-_"), max_size=40),
        st.text(max_size=20),
        st.lists(st.text(max_size=5), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
    )


def field_value(
    context: Context, plausible: st.SearchStrategy[Any], *, mutate: bool = True
) -> st.SearchStrategy[Any]:
    """Mostly ``plausible``; at the batch's hostility, an attacker's edit of it or, more
    rarely, any JSON value."""

    @st.composite
    def choose(draw: st.DrawFn) -> Any:
        roll = draw(st.integers(0, 99))
        if roll >= context.hostility:
            return draw(plausible)
        if roll >= context.hostility // 5 and mutate:
            value = draw(plausible)
            if isinstance(value, str):
                return draw(mutated(st.just(value)))
            return value
        return draw(wild())

    return choose()


def _rarely(context: Context, usual: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual``, or a boundary id at the batch's hostility."""
    return st.integers(0, 99).flatmap(
        lambda roll: usual if roll >= context.hostility else st.sampled_from(BOUNDARY_IDS)
    )


def object_id(context: Context, index: int) -> st.SearchStrategy[Any]:
    """The object's own id: mostly ``index``, sometimes a boundary value."""
    return _rarely(context, st.just(index))


def reference(context: Context, type_name: str) -> st.SearchStrategy[Any]:
    """An id of a drawn object of ``type_name`` (mostly), or a boundary value."""
    ids = [i for i in context.ids(type_name) if i is not None]
    if not ids:
        return st.sampled_from(BOUNDARY_IDS)
    return _rarely(context, st.sampled_from(ids))


def maybe(raw: Raw, key: str, value: Any, *, absent: bool) -> None:
    if not absent:
        raw[key] = value


label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
long_label = st.integers(40, 63).map(lambda n: "l" * n)
tld = st.sampled_from(["com", "net", "org", "nl", "example", "io", "co.uk"])
#: wildcards directly under a public suffix (ICANN and private): refused at write time
PUBLIC_SUFFIX_WILDCARDS = ("*.co.uk", "*.com.au", "*.github.io", "*.blogspot.com")
#: one family of names that overlap as nginx matches them (a wildcard takes any depth
#: below it, not its base): drawn by several owners, they contest each other's names
CONTESTED = (
    "bob.example.net",
    "x.bob.example.net",
    "a.b.bob.example.net",
    "example.net",
    "shop.example.net",
)
CONTESTED_WILDCARDS = ("*.bob.example.net", "*.x.bob.example.net", "*.example.net")


@st.composite
def plausible_domain(draw: st.DrawFn) -> str:
    labels = draw(st.lists(st.one_of(*[label] * 6, long_label), min_size=1, max_size=3))
    if draw(st.integers(0, 19)) == 0:  # near 253 characters
        labels = ["d" * 63, "e" * 63, "f" * 63, "g" * draw(st.integers(1, 56))]
    return ".".join([*labels, draw(tld)])


@st.composite
def plausible_username(draw: st.DrawFn) -> str:
    roll = draw(st.integers(0, 19))
    if roll == 0:
        return draw(st.sampled_from(HOST_NAMES))  # an account or group the node has
    if roll == 1:
        return "u" + "x" * draw(st.integers(25, 31))  # the 32-character limit
    return draw(st.from_regex(r"u[a-z0-9_-]{1,6}", fullmatch=True))


email = st.one_of(
    st.from_regex(r"[a-z0-9._+-]{1,12}@[a-z0-9]{1,10}\.(com|nl|org)", fullmatch=True),
    st.just("a@example.com"),
)


# --- one strategy per type ------------------------------------------------------------


@st.composite
def unix_user(draw: st.DrawFn, context: Context, index: int) -> Raw:
    raw: Raw = {"id": draw(object_id(context, index))}
    # calm batches: owners with distinct names (hypothesis likes to repeat a draw)
    usernames = st.just(f"uowner{index}") if context.calm else plausible_username()
    raw["username"] = draw(field_value(context, usernames))
    maybe(raw, "email", draw(field_value(context, email)), absent=draw(st.booleans()))
    shells = st.sampled_from(["/bin/bash", "/bin/sh", "/usr/sbin/nologin", "/bin/false"])
    maybe(raw, "shell", draw(field_value(context, shells)), absent=draw(st.booleans()))
    return raw


@st.composite
def cron(draw: st.DrawFn, context: Context, index: int) -> Raw:
    schedule = st.one_of(
        st.sampled_from(["* * * * *", "*/5 * * * *", "0 3 * * 1-5", "15,45 2 1 1 *"]),
        st.sampled_from(["@hourly", "@daily", "@reboot", "@weekly", "@yearly", "@midnight"]),
        st.just("0 0 * * sun"),
    )
    command = st.one_of(
        *[st.sampled_from(["php artisan schedule:run", "echo hi", "/usr/bin/true", "wp cron"])] * 4,
        st.text(st.sampled_from("abc xyz;|&<>'\"$`\\{}#!*?éß\x85\u2028/"), min_size=1, max_size=30),
        st.text(min_size=1, max_size=30),
        st.just("x" * 4096),
        st.just("echo " + "y" * 5000),
    )
    raw: Raw = {
        "id": draw(object_id(context, index)),
        "unix_user_id": draw(reference(context, "unix-users")),
        "name": draw(field_value(context, st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True))),
        "schedule": draw(field_value(context, schedule)),
        "command": draw(field_value(context, command)),
    }
    maybe(raw, "email_address", draw(field_value(context, email)), absent=draw(st.booleans()))
    return raw


setting_name = st.one_of(
    st.sampled_from(["memory_limit", "display_errors", "session.gc_probability", "error_log"]),
    st.from_regex(r"[a-z][a-z0-9_.]{0,15}", fullmatch=True),
)
setting_value = st.one_of(
    st.sampled_from(["256M", "On", "Off", "Europe/Berlin", ".:/usr/share/php", ""]),
    st.text(st.sampled_from("ab ;#$\\{}[]='é\x85\u2028"), max_size=20),
    st.text(max_size=20),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(),
    st.booleans(),
    st.just("v" * 5000),
)


@st.composite
def fpm_pool(draw: st.DrawFn, context: Context, index: int) -> Raw:
    # 8.2 is installed on the node; the others only if a clusters object lists them,
    # and without one (the README allows it) a pool of those is refused on the node
    if context.drawn.get("clusters"):
        versions = st.sampled_from(["8.2", "8.2", "8.2", "8.3", "7.4", "8.1", "9.9"])
    else:  # versions no clusters object provides: half of them the node lacks
        versions = st.sampled_from(["8.2", "8.2", "8.3", "7.4", "9.9", "5.0"])
    settings = st.dictionaries(
        st.one_of(*[setting_name] * 4, mutated(setting_name), st.text(max_size=8)),
        field_value(context, setting_value, mutate=False),
        max_size=3,
    )
    if context.calm:  # a pool that applies wherever its version is there
        return {
            "id": index,
            "name": f"pool{index}",
            "unix_user_id": draw(reference(context, "unix-users")),
            "php_version": draw(versions),
        }
    raw: Raw = {
        "id": draw(object_id(context, index)),
        "name": draw(
            field_value(
                context,
                st.one_of(
                    st.from_regex(r"[a-z0-9][a-z0-9_-]{0,10}", fullmatch=True),
                    st.just("p" * 64),
                    st.sampled_from(["www", "global", "ccm"]),
                ),
            )
        ),
        "unix_user_id": draw(reference(context, "unix-users")),
        "php_version": draw(field_value(context, versions)),
    }
    maybe(
        raw,
        "max_children",
        draw(field_value(context, st.sampled_from([1, 2, 5, 50, 1000]))),
        absent=draw(st.booleans()),
    )
    maybe(raw, "php_settings", draw(settings), absent=draw(st.booleans()))
    return raw


@st.composite
def document_root(draw: st.DrawFn, username: Any) -> str:
    base = f"/home/{username}" if isinstance(username, str) else "/home/x"
    segment = st.from_regex(r"[A-Za-z0-9._+@-]{1,12}", fullmatch=True).filter(
        lambda s: s not in {".", ".."}
    )
    parts = draw(st.lists(segment, min_size=1, max_size=3))
    if draw(st.integers(0, 14)) == 0:  # long: nginx refuses parameters of about 4 KB
        parts = ["r" * 200] * draw(st.integers(5, 25))
    return "/".join([base, *parts]) + ("/" if draw(st.integers(0, 9)) == 0 else "")


def overlapping(name: str) -> st.SearchStrategy[str]:
    """Names that share a host with ``name`` as nginx matches them: below it (any
    depth), a wildcard on it, or a wildcard on its parent (``*.example.net`` over
    ``shop.example.net``)."""
    base = name.removeprefix("*.")
    parent = base.partition(".")[2]
    found = [f"x.{base}", f"a.b.{base}", f"*.{base}", f"*.x.{base}"]
    if "." in parent:
        found.append(f"*.{parent}")
    return st.sampled_from(found)


@st.composite
def virtual_host(draw: st.DrawFn, context: Context, index: int) -> Raw:
    users = [r for r in context.drawn.get("unix-users", []) if isinstance(r, dict)]
    user_id = draw(reference(context, "unix-users"))
    if context.calm and users:  # the vhosts go round the owners
        user_id = users[(index - 1) % len(users)].get("id")
    owner = next((u for u in users if u.get("id") == user_id), {})
    taken = [d for d in context.values("virtual-hosts", "domain") if isinstance(d, str)]
    taken += [
        a
        for aliases in context.values("virtual-hosts", "server_aliases")
        if isinstance(aliases, list)
        for a in aliases
        if isinstance(a, str)
    ]
    # another tenant's name, as is, as an attacker spells it, or next to it through a
    # wildcard (a subdomain of it, a wildcard over it or over its parent)
    stolen = (
        st.sampled_from(taken).flatmap(
            lambda d: st.one_of(st.just(d), mutated(st.just(d)), overlapping(d))
        )
        if taken
        else plausible_domain()
    )
    name = st.one_of(*[plausible_domain()] * 3, stolen, st.sampled_from(CONTESTED))
    wildcard = st.one_of(
        *[plausible_domain().map(lambda d: "*." + d)] * 2,
        stolen.map(lambda d: d if d.startswith("*.") else "*." + d),
        st.sampled_from(CONTESTED_WILDCARDS),
        st.sampled_from(PUBLIC_SUFFIX_WILDCARDS),
    )
    if context.calm:  # each vhost another name of the family
        shift = draw(st.integers(0, len(CONTESTED) - 1)) + index
        name = st.just(CONTESTED[shift % len(CONTESTED)])
        wildcard = st.just(CONTESTED_WILDCARDS[shift % len(CONTESTED_WILDCARDS)])
    aliases = st.lists(
        st.one_of(field_value(context, name), field_value(context, wildcard)),
        max_size=3,
    )
    pool_ids = [
        r.get("id")
        for r in context.drawn.get("fpm-pools", [])
        if isinstance(r, dict) and r.get("unix_user_id") == user_id
    ]
    raw: Raw = {
        "id": draw(object_id(context, index)),
        "domain": draw(field_value(context, name)),
        "unix_user_id": user_id,
        "document_root": draw(field_value(context, document_root(owner.get("username")))),
    }
    if context.calm and draw(st.integers(0, 3)):
        raw["server_aliases"] = [draw(wildcard)]  # the wildcard that contests
    else:
        maybe(raw, "server_aliases", draw(aliases), absent=draw(st.booleans()))
    pool = st.sampled_from(pool_ids) if pool_ids else reference(context, "fpm-pools")
    maybe(raw, "fpm_pool_id", draw(st.one_of(pool, st.none())), absent=draw(st.booleans()))
    maybe(
        raw,
        "front_controller",
        draw(field_value(context, st.booleans())),
        absent=draw(st.booleans()),
    )
    use_certificate(draw, context, raw)
    maybe(
        raw,
        "force_https",
        draw(field_value(context, st.booleans())),
        absent=draw(st.booleans()),
    )
    return raw


#: the local parts mail objects share, so accounts, aliases and forwards meet and loop
MAIL_LOCAL_PARTS = ("info", "sales", "a", "b", "m" * 64)
_SAFE_HASHES = st.one_of(
    st.from_regex(r"\{SHA512-CRYPT\}\$6\$[a-zA-Z0-9./]{8}\$[a-zA-Z0-9./]{86}", fullmatch=True),
    st.from_regex(r"\{BLF-CRYPT\}\$2y\$10\$[a-zA-Z0-9./]{53}", fullmatch=True),
    st.just("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$CLOsjeUTcNCaKv3kgZrRNQ$" + "K" * 43),
)
#: mostly safe schemes; a sixth refused ones (no scheme, plain text)
PASSWORD_HASHES = st.one_of(
    *[_SAFE_HASHES] * 5,
    st.sampled_from(["$6$rounds=5000$salt$" + "h" * 86, "{PLAIN}$1$x$y", "{CLEARTEXT}secret"]),
)


def mail_domain_names(context: Context) -> st.SearchStrategy[str]:
    """A vhost's name (the owner rule), one of a small family, or any domain."""
    served = [d for d in context.values("virtual-hosts", "domain") if isinstance(d, str)]
    family = st.sampled_from(["example.com", "example.net", "mail.example.org", "bob.example.net"])
    return st.one_of(family, plausible_domain(), *([st.sampled_from(served)] if served else []))


@st.composite
def mail_address(draw: st.DrawFn, context: Context) -> str:
    """An address of a drawn mail domain (so forwards meet accounts, aliases and
    catch-alls, and loop), or one outside the cluster."""
    domains = [d for d in context.values("mail-domains", "domain") if isinstance(d, str)]
    domain = draw(st.sampled_from(domains)) if domains and draw(st.integers(0, 3)) else "x.example"
    return f"{draw(st.sampled_from(MAIL_LOCAL_PARTS[:4]))}@{domain}"


def forward_addresses(context: Context) -> st.SearchStrategy[Any]:
    return field_value(
        context,
        st.one_of(
            st.lists(mail_address(context), min_size=1, max_size=3),
            st.just([f"u{i}@example.org" for i in range(51)]),  # over the limit
            st.just([]),
        ),
        mutate=False,
    ).flatmap(
        lambda value: (
            st.just(value)
            if not isinstance(value, list) or not value
            else field_value(context, st.just(value[0])).map(lambda first: [first, *value[1:]])
        )
    )


@st.composite
def mail_domain(draw: st.DrawFn, context: Context, index: int) -> Raw:
    raw: Raw = {
        "id": draw(object_id(context, index)),
        "domain": draw(field_value(context, mail_domain_names(context))),
        "unix_user_id": draw(reference(context, "unix-users")),
    }
    maybe(
        raw,
        "catch_all_forward_addresses",
        draw(forward_addresses(context)),
        absent=draw(st.booleans()),
    )
    maybe(raw, "is_local", draw(field_value(context, st.booleans())), absent=draw(st.booleans()))
    return raw


@st.composite
def mail_account(draw: st.DrawFn, context: Context, index: int) -> Raw:
    local_parts = st.one_of(
        st.sampled_from(MAIL_LOCAL_PARTS),
        st.from_regex(r"[a-z0-9]([a-z0-9._+-]{0,10}[a-z0-9])?", fullmatch=True),
    )
    raw: Raw = {
        "id": draw(object_id(context, index)),
        "local_part": draw(field_value(context, local_parts)),
        "mail_domain_id": draw(reference(context, "mail-domains")),
        "password_hash": draw(field_value(context, PASSWORD_HASHES)),
    }
    maybe(
        raw,
        "quota_mib",
        draw(field_value(context, st.sampled_from([1, 1024, 2**31, 2**63, 10**20]))),
        absent=draw(st.booleans()),
    )
    return raw


@st.composite
def mail_alias(draw: st.DrawFn, context: Context, index: int) -> Raw:
    return {
        "id": draw(object_id(context, index)),
        "local_part": draw(field_value(context, st.sampled_from(MAIL_LOCAL_PARTS))),
        "mail_domain_id": draw(reference(context, "mail-domains")),
        "forward_addresses": draw(forward_addresses(context)),
    }


@st.composite
def cluster(draw: st.DrawFn, context: Context, index: int) -> Raw:
    used = [v for v in context.values("fpm-pools", "php_version") if isinstance(v, str)]
    versions = st.lists(
        field_value(context, st.sampled_from(["8.2", "8.3", "7.4", *used])), max_size=3
    )
    raw: Raw = {"id": draw(object_id(context, index))}
    maybe(raw, "php_versions", draw(versions), absent=draw(st.integers(0, 9)) == 0)
    return raw


@st.composite
def node(draw: st.DrawFn, context: Context, index: int) -> Raw:
    """Other nodes of the cluster (never the node the property applies as, which
    therefore runs everything): their groups and primaries are still validated."""
    groups = st.lists(
        field_value(context, st.sampled_from(["nginx", "php", "cron", "dovecot", "daemons"])),
        max_size=4,
    )
    hostname = st.sampled_from(["web1", "web2", "mail1", "db1"])
    raw: Raw = {
        "id": draw(object_id(context, index)),
        "hostname": draw(field_value(context, hostname)),
    }
    maybe(raw, "groups", draw(groups), absent=draw(st.booleans()))
    chosen = raw.get("groups") if isinstance(raw.get("groups"), list) else []
    primary = st.lists(st.sampled_from(chosen), max_size=1) if chosen else st.just([])
    maybe(raw, "primary_for", draw(field_value(context, primary)), absent=draw(st.booleans()))
    return raw


@st.composite
def redis_instance(draw: st.DrawFn, context: Context, index: int) -> Raw:
    ports = st.one_of(
        st.integers(16379, 16390), st.sampled_from([1023, 1024, 2379, 6379, 9813, 65535, 65536])
    )
    passwords = st.one_of(
        st.from_regex(r"[A-Za-z0-9._~+/=-]{16,40}", fullmatch=True),
        st.sampled_from(["short", 'quote"inside-1234567', "x" * 129, "spaces are here 1234"]),
    )
    raw: Raw = {
        "id": draw(object_id(context, index)),
        "name": draw(field_value(context, st.sampled_from(["shop", "blog", "cache", "a-b"]))),
        "port": draw(field_value(context, ports)),
        "password": draw(field_value(context, passwords)),
        "memory_limit_mib": draw(field_value(context, st.sampled_from([16, 64, 2048, 15]))),
    }
    maybe(
        raw,
        "max_databases",
        draw(field_value(context, st.sampled_from([1, 16, 256, 0, 257]))),
        absent=draw(st.booleans()),
    )
    policies = st.sampled_from(["noeviction", "allkeys-lru", "volatile-ttl", "lru"])
    maybe(
        raw,
        "eviction_policy",
        draw(field_value(context, policies)),
        absent=draw(st.booleans()),
    )
    return raw


@st.composite
def daemon(draw: st.DrawFn, context: Context, index: int) -> Raw:
    usernames = [u for u in context.values("unix-users", "username") if isinstance(u, str)]
    homes = [f"/home/{u}/bin/run" for u in usernames] or ["/home/alice/bin/run"]
    programs = st.one_of(
        st.sampled_from(homes),
        st.sampled_from(["/usr/bin/python3", "/bin/sh", "/usr/sbin/useradd", "relative"]),
    )
    arguments = st.lists(
        st.one_of(
            st.sampled_from(["--queue", "default", "100%", "$HOME", '"q"', "a\\b", "x y"]),
            st.text(st.sampled_from("abc %$\\\"'`;{}#é"), min_size=1, max_size=12),
        ),
        max_size=4,
    )
    raw: Raw = {
        "id": draw(object_id(context, index)),
        "name": draw(field_value(context, st.sampled_from(["worker", "queue", "ws"]))),
        "unix_user_id": draw(reference(context, "unix-users")),
        "command": [draw(field_value(context, programs)), *draw(arguments)],
        "node_ids": [draw(reference(context, "nodes"))],
    }
    for key, values in (("memory_limit_mib", [16, 512, 1]), ("cpu_limit_percent", [1, 150, 0])):
        maybe(
            raw,
            key,
            draw(field_value(context, st.sampled_from(values))),
            absent=draw(st.booleans()),
        )
    return raw


#: the names certificates are made for: the contested family, so that vhosts and
#: redirects of several owners draw names a certificate covers (or nearly covers)
TLS_NAMES = (*CONTESTED, *CONTESTED_WILDCARDS, "shop.example.com", "www.shop.example.com")
#: the property's CA; its certificates are valid now (the writer checks at the real time)
PROPERTY_CA = TestCa("ccm property")
#: what a drawn certificate is: sound, or one of the ways a PEM is refused
CERTIFICATE_KINDS = ("sound", "sound", "sound", "expired", "wrong-key", "foreign-chain", "no-san")


@functools.cache
def _certificate(names: tuple[str, ...], kind: str) -> tuple[str, str, str]:
    """(certificate, key, chain) PEM for ``names`` (cached: a key pair costs ~1 ms)."""
    now = datetime.now(UTC)
    if kind == "expired":
        issued = PROPERTY_CA.issue(list(names), valid_from=now - timedelta(days=100), days=90)
    else:
        issued = PROPERTY_CA.issue(list(names), san=kind != "no-san")
    key = key_pem(new_key()) if kind == "wrong-key" else issued.private_key
    chain = _foreign_chain() if kind == "foreign-chain" else issued.ca_chain
    return issued.certificate, key, chain


@functools.cache
def _foreign_chain() -> str:
    return TestCa("ccm foreign").chain_pem


@st.composite
def certificate(draw: st.DrawFn, context: Context, index: int) -> Raw:
    names = tuple(sorted(set(draw(st.lists(st.sampled_from(TLS_NAMES), min_size=1, max_size=3)))))
    kind = draw(st.sampled_from(CERTIFICATE_KINDS))
    leaf, key, chain = _certificate(names, kind)
    listed = list(names) if kind != "no-san" else [names[0]]
    raw: Raw = {
        "id": draw(object_id(context, index)),
        "common_names": draw(field_value(context, st.just(listed))),
        "certificate": draw(field_value(context, st.just(leaf))),
        "private_key": draw(field_value(context, st.just(key))),
    }
    maybe(raw, "ca_chain", draw(field_value(context, st.just(chain))), absent=draw(st.booleans()))
    return raw


def use_certificate(draw: st.DrawFn, context: Context, raw: Raw) -> None:
    """Maybe a ``certificate_id``: mostly a drawn certificate's, whose names then often
    become the object's (so coverage is met, or missed by one name)."""
    certificates = [c for c in context.drawn.get("certificates", []) if isinstance(c, dict)]
    if not certificates or draw(st.integers(0, 2)) == 0:
        maybe(raw, "certificate_id", draw(reference(context, "certificates")), absent=True)
        return
    chosen = draw(st.sampled_from(certificates))
    raw["certificate_id"] = draw(_rarely(context, st.just(chosen.get("id"))))
    names = chosen.get("common_names")
    if isinstance(names, list) and names and draw(st.booleans()):
        exact = [n for n in names if isinstance(n, str)]
        if exact:
            raw["domain"] = draw(st.sampled_from(exact)).removeprefix("*.")
            raw["server_aliases"] = draw(st.lists(st.sampled_from(exact), max_size=2))


GOOD_DESTINATIONS = (
    "https://new.example.com/",
    "https://new.example.com",
    "http://new.example.com:8080/landing/",
    "https://shop.example.net/",
)
BAD_DESTINATIONS = (
    "https://new.example.com/?campaign=1",  # refused with keep_path/keep_query only
    "https://new.example.com/page#top",
    "javascript:alert(1)",
    "data:text/html,x",
    "ftp://new.example.com/",
    "https://new.example.com/$host",
    'https://new.example.com/"; return 200 "x',
    "https://NEW.example.com/",
    "https://new.example.com:70000/",
    "//new.example.com/",
)


@st.composite
def url_redirect(draw: st.DrawFn, context: Context, index: int) -> Raw:
    taken = [
        d
        for type_name in ("virtual-hosts", "url-redirects")
        for d in context.values(type_name, "domain")
        if isinstance(d, str)
    ]
    stolen = (
        st.sampled_from(taken).flatmap(lambda d: st.one_of(st.just(d), overlapping(d)))
        if taken
        else plausible_domain()
    )
    name = st.one_of(plausible_domain(), stolen, st.sampled_from(CONTESTED))
    if context.calm:  # plausible fields: the names contest the vhosts' (or are free)
        raw = {
            "id": index,
            "domain": draw(st.sampled_from([*CONTESTED, f"r{index}.example.org"])),
            "unix_user_id": draw(st.sampled_from(context.ids("unix-users") or [1])),
            "destination_url": draw(st.sampled_from(GOOD_DESTINATIONS)),
            "status_code": draw(st.sampled_from([301, 302, 303, 307, 308])),
            "keep_path": draw(st.booleans()),
            "keep_query": draw(st.booleans()),
        }
        use_certificate(draw, context, raw)
        return raw
    raw: Raw = {
        "id": draw(object_id(context, index)),
        "domain": draw(field_value(context, name)),
        "unix_user_id": draw(reference(context, "unix-users")),
        "destination_url": draw(
            field_value(
                context,
                st.one_of(
                    *[st.sampled_from(GOOD_DESTINATIONS)] * 3, st.sampled_from(BAD_DESTINATIONS)
                ),
            )
        ),
    }
    aliases = st.lists(st.one_of(name, st.sampled_from(CONTESTED_WILDCARDS)), max_size=2)
    maybe(raw, "server_aliases", draw(field_value(context, aliases)), absent=draw(st.booleans()))
    codes = st.sampled_from([301, 302, 303, 307, 308, 200, 399, "301"])
    maybe(raw, "status_code", draw(field_value(context, codes)), absent=draw(st.booleans()))
    for key in ("keep_path", "keep_query"):
        flag = field_value(context, st.booleans())
        maybe(raw, key, draw(flag), absent=draw(st.booleans()))
    use_certificate(draw, context, raw)
    return raw


BCRYPT_HASH = "$2y$10$chpmzJ.a9300VT.cdBzibu5JlugPaF.4DBchXtrNJzbg7SjBgMy56"
SHA512_HASH = (
    "$6$aNo4UHUZ1x0b9i1s$MhCXVO0xtqvNWHngnmTZTFdBx1VFonMR/fEXRtW3jLls9z4yWz/86i0176fOvUuxvOd"
    "w5aNeXrs7wdQxhrbUl1"
)


@st.composite
def basic_auth_realm(draw: st.DrawFn, context: Context, index: int) -> Raw:
    def mostly(good: list[Any], bad: list[Any]) -> st.SearchStrategy[Any]:
        return st.integers(0, 9).flatmap(lambda roll: st.sampled_from(bad if roll == 0 else good))

    paths = mostly(
        ["/", "/admin/", "/admin", "/wp-admin/", "/a/b/c/"], ["admin/", "/../etc", "/.git/", "/a b"]
    )
    hashes = mostly(
        [BCRYPT_HASH, SHA512_HASH],
        [
            "{PLAIN}secret",
            "$apr1$abcdefgh$0123456789abcdefghijkl",
            BCRYPT_HASH.replace("$10$", "$31$"),
            "secret",
        ],
    )
    usernames = mostly(["admin", "visitor", "a.b@c"], ["ad:min", "x" * 65])
    users = st.lists(
        st.fixed_dictionaries(
            {
                "username": field_value(context, usernames),
                "password_hash": field_value(context, hashes),
            }
        ),
        min_size=1,
        max_size=2,
    )
    if context.calm:  # a realm that applies wherever its vhost does
        return {
            "id": index,
            "virtual_host_id": draw(st.sampled_from(context.ids("virtual-hosts") or [1])),
            "path": draw(st.sampled_from(["/", "/admin/", "/wp-admin/", f"/p{index}"])),
            "name": "Admin area",
            "users": [
                {
                    "username": "admin",
                    "password_hash": draw(st.sampled_from([BCRYPT_HASH, SHA512_HASH])),
                }
            ],
        }
    return {
        "id": draw(object_id(context, index)),
        "virtual_host_id": draw(reference(context, "virtual-hosts")),
        "path": draw(field_value(context, paths)),
        "name": draw(field_value(context, mostly(["Admin area", "Staff (only)"], ['a"b', "$x"]))),
        "users": draw(field_value(context, users)),
    }


#: database and user names: plausible, reserved, a pattern's wildcard, hostile to SQL
SQL_NAMES = st.sampled_from(
    ["shop", "blog", "shop_1", "shopx1", "ccm", "mysql", "pg_x", "shop_deleted_7", "a`b",
     "x'; DROP DATABASE mysql; --", 's"x', "s;x", "Shop", "d" * 64]
)  # fmt: skip
SQL_SOFTWARE = st.sampled_from(["mariadb", "postgresql", "mysql"])


@st.composite
def database(draw: st.DrawFn, context: Context, index: int) -> Raw:
    return {
        "id": draw(object_id(context, index)),
        "name": draw(field_value(context, SQL_NAMES)),
        "unix_user_id": draw(reference(context, "unix-users")),
        "server_software": draw(field_value(context, SQL_SOFTWARE)),
    }


@st.composite
def certificate_manager(draw: st.DrawFn, context: Context, index: int) -> Raw:
    """Names the batch's vhosts and redirects serve (theirs, or another owner's), names
    below their wildcards, names nobody serves, and hostile ones."""
    served = [
        name
        for type_name in ("virtual-hosts", "url-redirects")
        for key in ("domain", "server_aliases")
        for value in context.values(type_name, key)
        for name in (value if isinstance(value, list) else [value])
        if isinstance(name, str)
    ]
    below = [f"x{index}." + name.removeprefix("*.") for name in served if name.startswith("*.")]
    plausible = st.sampled_from([*served, *below, *CONTESTED, f"free{index}.example.org"])
    names = st.lists(field_value(context, plausible), min_size=1, max_size=3)
    raw: Raw = {"id": draw(object_id(context, index)), "common_names": draw(names)}
    owner = st.one_of(reference(context, "unix-users"), st.none())
    maybe(raw, "unix_user_id", draw(owner), absent=draw(st.booleans()))
    return raw


@st.composite
def database_user(draw: st.DrawFn, context: Context, index: int) -> Raw:
    hashes = st.one_of(
        st.from_regex(r"\*[0-9A-F]{40}", fullmatch=True),
        st.from_regex(
            r"SCRAM-SHA-256\$4096:[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=",
            fullmatch=True,
        ),
        st.sampled_from(["plain-password", "md5" + "0" * 32, "*" + "a" * 40, "*" + "A" * 40 + "'"]),
    )
    raw: Raw = {
        "id": draw(object_id(context, index)),
        "name": draw(field_value(context, SQL_NAMES)),
        "unix_user_id": draw(reference(context, "unix-users")),
        "server_software": draw(field_value(context, SQL_SOFTWARE)),
        "password_hash": draw(field_value(context, hashes)),
    }
    hosts = st.sampled_from(["%", "localhost", "10.0.%", "a'b", "a`b", "h;x", ""])
    maybe(raw, "host", draw(field_value(context, hosts)), absent=draw(st.booleans()))
    return raw


@st.composite
def database_user_grant(draw: st.DrawFn, context: Context, index: int) -> Raw:
    return {
        "id": draw(object_id(context, index)),
        "database_id": draw(reference(context, "databases")),
        "database_user_id": draw(reference(context, "database-users")),
        "privilege": draw(field_value(context, st.sampled_from(["ALL", "SELECT", "INSERT"]))),
    }


#: FTP logins several owners draw, so that two of them claim one (a write-time refusal)
FTP_USERNAMES = ("shop", "web", "a.b-c", "f" * 64)
#: what an attacker tries as a login: reserved, upper case, a passwd-file separator, long
BAD_FTP_USERNAMES = ("root", "anonymous", "ftp", "Shop", "a:b", "f" * 65, ".hidden")
FTP_HASHES = (SHA512_HASH, "$6$rounds=5000$ftpsalt$" + "F" * 86)
BAD_FTP_HASHES = (
    "{PLAIN}secret",
    "{SHA512-CRYPT}" + SHA512_HASH,  # Dovecot's form: ProFTPD's crypt() never matches it
    "$1$saltsalt$" + "m" * 22,
    BCRYPT_HASH,
    "$6$rounds=999999999$ftpsalt$" + "F" * 86,
)


@st.composite
def ftp_directory(draw: st.DrawFn, context: Context, owner: Any) -> str:
    """Mostly inside the owner's home (or the home itself); sometimes another tenant's
    home, a path beside the home (``/home/ownerx``) or outside ``/home``."""
    usernames = [u for u in context.values("unix-users", "username") if isinstance(u, str)]
    own = owner if isinstance(owner, str) else "x"
    elsewhere = [f"/home/{u}/www" for u in usernames if u != own]
    roll = draw(st.integers(0, 15))
    if roll == 0 and elsewhere:
        return draw(st.sampled_from(elsewhere))
    if roll == 1:
        return draw(st.sampled_from([f"/home/{own}x/www", "/var/www", "/home", "/"]))
    if roll == 2:
        return f"/home/{own}"
    return draw(document_root(owner))


@st.composite
def ftp_user(draw: st.DrawFn, context: Context, index: int) -> Raw:
    users = [r for r in context.drawn.get("unix-users", []) if isinstance(r, dict)]
    owner_id = draw(reference(context, "unix-users"))
    if context.calm and users:  # the logins go round the owners
        owner_id = users[(index - 1) % len(users)].get("id")
    owner = next((u for u in users if u.get("id") == owner_id), {})

    def mostly(good: tuple[Any, ...], bad: tuple[Any, ...]) -> st.SearchStrategy[Any]:
        return st.integers(0, 9).flatmap(
            lambda roll: st.sampled_from(bad if roll == 0 and not context.calm else good)
        )

    names = st.one_of(
        mostly(FTP_USERNAMES, BAD_FTP_USERNAMES),
        st.from_regex(r"[a-z0-9][a-z0-9._-]{0,10}[a-z0-9]", fullmatch=True),
    )
    return {
        "id": draw(object_id(context, index)),
        "username": draw(field_value(context, names)),
        "unix_user_id": owner_id,
        "password_hash": draw(field_value(context, mostly(FTP_HASHES, BAD_FTP_HASHES))),
        "directory_path": draw(field_value(context, ftp_directory(context, owner.get("username")))),
    }


#: type name → (context, index) → a raw object of that type. A new type adds its own.
Strategy = Callable[[Context, int], st.SearchStrategy[Raw]]
STRATEGIES: dict[str, Strategy] = {
    "unix-users": unix_user,
    "crons": cron,
    "fpm-pools": fpm_pool,
    "virtual-hosts": virtual_host,
    "mail-domains": mail_domain,
    "mail-accounts": mail_account,
    "mail-aliases": mail_alias,
    "clusters": cluster,
    "nodes": node,
    "redis-instances": redis_instance,
    "daemons": daemon,
    "certificates": certificate,
    "url-redirects": url_redirect,
    "basic-auth-realms": basic_auth_realm,
    "certificate-managers": certificate_manager,
    "databases": database,
    "database-users": database_user,
    "database-user-grants": database_user_grant,
    "ftp-users": ftp_user,
}
#: how many objects of a type one batch holds (at most); half the batches have no
#: ``clusters`` object (the README allows it: PHP versions are then not managed)
MAX_PER_TYPE: dict[str, int] = {"clusters": 1, "unix-users": 3}


def write_order() -> list[str]:
    """Every type after the types it references or reads; ``clusters`` (which pools are
    checked against) first, so pools have versions to be listed in."""
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name, model in sorted(OBJECT_TYPES.items()):
        # a type it reads comes first, unless that type reads it too (mail accounts and
        # aliases read each other: either order)
        reads = [
            other
            for other in model.READS
            if other != name and other in OBJECT_TYPES and name not in OBJECT_TYPES[other].READS
        ]
        sorter.add(name, *model.REFERENCES.values(), *reads)
    order = list(sorter.static_order())
    return sorted(order, key=lambda name: (name != "clusters", order.index(name)))


@dataclass
class Batch:
    """Raw objects per type, in write order; ``together``: one put per type, else one
    put per object."""

    objects: list[tuple[str, list[Raw]]]
    together: bool

    def __repr__(self) -> str:  # hypothesis prints this for a failing example
        lines = [f"Batch(together={self.together})"]
        for type_name, raws in self.objects:
            for raw in raws:
                lines.append(f"  {type_name}: {raw!r}")
        return "\n".join(lines)


@st.composite
def batches(draw: st.DrawFn, types: tuple[str, ...] | None = None) -> Batch:
    """A few objects of every type (or of ``types``), referring to each other."""
    calm = draw(st.integers(0, 3)) == 0  # a quarter of the batches (see Context)
    context = Context(
        hostility=draw(st.sampled_from([0, 3] if calm else [0, 3, 10, 25, 50])), calm=calm
    )
    objects: list[tuple[str, list[Raw]]] = []
    for type_name in write_order():
        if types is not None and type_name not in types:
            continue
        strategy = STRATEGIES[type_name]  # KeyError: a new type without a strategy
        count = draw(st.integers(0, MAX_PER_TYPE.get(type_name, 3)))
        if type_name == "unix-users":
            count = max(count, 2 if calm else 1)
        if type_name == "virtual-hosts" and calm:
            count = max(count, 2)
        if type_name == "clusters" and calm:
            count = 0  # PHP versions not managed: pools of a version the node lacks
        raws: list[Raw] = []
        context.drawn[type_name] = raws
        for index in range(1, count + 1):
            raws.append(draw(strategy(context, index)))
        objects.append((type_name, raws))
    return Batch(objects, together=draw(st.integers(0, 5)) == 0)
