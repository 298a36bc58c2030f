"""Field types and validation helpers every object type uses: the public toolkit of a type.

Validation is strict because these values become paths, usernames, unit names and
config lines on every node: names are matched against safe patterns with ``fullmatch``,
free text may not contain control characters (a newline in a cron command would add a
crontab line), and paths are absolute and normalised (no ``..``). A built-in type and a
third-party type import the same names from here::

    from ccm.models.fields import Hostname, ObjectId, Ref, Text, pattern

* ``fullmatch(compiled, value, what)`` and ``pattern(regex, what)`` — a whole-value match
  (``$`` in ``re.match`` also matches before a final newline: ``"shop.example.com\\n"``
  once passed as a name nginx then saw as new);
* ``CONTROL`` / ``no_control`` — C0, DEL, C1 (U+0085 NEL among them) and the Unicode line
  and paragraph separators, which some parsers read as line ends;
* ``Hostname``, ``Alias`` (``*.`` allowed), ``HOST_LABEL`` — lower-case fully qualified
  names, at most 253 characters;
* ``AbsolutePath``, ``path_inside(path, directory)`` — safe absolute paths and the rule
  "inside this home";
* ``SafeFileName`` — one path component ccm may write;
* ``Text``, ``Email``, ``ObjectId``, ``Ref`` (a reference to another type's object),
  ``GroupName``;
* ``Secret`` — ``password: Annotated[str, Secret, ...]``: a refusal never echoes it.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated

from pydantic import AfterValidator, Field

from ccm.models.base import MAX_OBJECT_ID, References
from ccm.models.base import Secret as Secret  # the public toolkit's name for it
from ccm.models.names import is_public_suffix

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: one DNS label of a host name ccm serves: lower case, no leading or trailing hyphen
HOST_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_TLD = r"(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})"
HOSTNAME = re.compile(rf"(?:{HOST_LABEL}\.)+{_TLD}")
#: a path component: what ccm puts on a command line or into a config file unquoted
_PATH_COMPONENT = r"[A-Za-z0-9._+@-]{1,255}"
_SAFE_PATH = re.compile(rf"(?:/{_PATH_COMPONENT})+/?|/")
_SAFE_FILE_NAME = re.compile(_PATH_COMPONENT)
#: an e-mail address as ccm writes it into a crontab MAILTO line and a GECOS field
_EMAIL = re.compile(rf"[A-Za-z0-9._%+-]{{1,64}}@(?:{HOST_LABEL}\.)+[a-z]{{2,63}}")
#: PATH_MAX is 4096, but nginx cannot read a directive parameter near its 4 KiB buffer
MAX_PATH_LENGTH = 1024


def fullmatch(compiled: re.Pattern[str], value: str, what: str) -> str:
    """``value`` if ``compiled`` matches all of it, else ``ValueError`` saying ``what``."""
    if not compiled.fullmatch(value):
        raise ValueError(f"{value!r} is not {what}")
    return value


def pattern(regex: str, what: str) -> AfterValidator:
    """A validator that ``fullmatch``es ``regex`` (compiled once)."""
    compiled = re.compile(regex)
    return AfterValidator(lambda value: fullmatch(compiled, value, what))


def no_control(value: str) -> str:
    if CONTROL.search(value):
        raise ValueError("must not contain control characters or line breaks (newline, …)")
    return value


def hostname(value: str) -> str:
    if len(value) > 253:
        raise ValueError(f"{len(value)} characters: a domain name has at most 253")
    return fullmatch(HOSTNAME, value, "a lower-case fully qualified domain name")


def alias(value: str) -> str:
    """A host name, or a wildcard ``*.name`` that is not directly under a public suffix."""
    if not value.startswith("*."):
        return hostname(value)
    base = hostname(value[2:])
    if is_public_suffix(base):
        raise ValueError(
            f"{value!r} is a wildcard directly under the public suffix {base!r}: it would "
            "take the domains of everyone who registered one there"
        )
    return value


def safe_absolute_path(value: str) -> str:
    if len(value) > MAX_PATH_LENGTH:
        raise ValueError(f"{len(value)} characters: a path has at most {MAX_PATH_LENGTH}")
    fullmatch(_SAFE_PATH, value, "an absolute path of letters, digits and ._/+@-")
    if posixpath.normpath(value) != (value.rstrip("/") or "/"):
        raise ValueError(f"{value!r} must be a normalised path (no '..', '.', '//')")
    # one spelling per path: a trailing slash is dropped, so equal paths compare equal
    return value.rstrip("/") or "/"


def path_inside(path: str, directory: str) -> bool:
    """``path`` (normalised, from ``AbsolutePath``) lies strictly below ``directory``."""
    return path.startswith(directory.rstrip("/") + "/")


def safe_file_name(value: str) -> str:
    fullmatch(_SAFE_FILE_NAME, value, "a file name of letters, digits and ._+@- (at most 255)")
    if value in {".", ".."}:
        raise ValueError(f"{value!r} is not a file name")
    return value


def email(value: str) -> str:
    if len(value) > 254:
        raise ValueError(f"{len(value)} characters: an e-mail address has at most 254")
    return fullmatch(_EMAIL, value, "an e-mail address (local@domain, lower-case domain)")


Text = Annotated[str, Field(strict=True), AfterValidator(no_control)]
Hostname = Annotated[str, Field(strict=True), AfterValidator(hostname)]
Alias = Annotated[str, Field(strict=True), AfterValidator(alias)]
AbsolutePath = Annotated[str, Field(strict=True), AfterValidator(safe_absolute_path)]
SafeFileName = Annotated[str, Field(strict=True), AfterValidator(safe_file_name)]
ObjectId = Annotated[int, Field(gt=0, le=MAX_OBJECT_ID, strict=True)]
Email = Annotated[str, Field(strict=True), AfterValidator(email)]

#: ``unix_user_id: Annotated[ObjectId, Ref("unix-users")]``: an id that refers to an object
Ref = References

#: a node group (``nginx``, ``php``, ``cron`` …): which configurations run on a node
GroupName = Annotated[
    str, Field(strict=True), pattern(r"[a-z][a-z0-9-]{0,31}", "a group name of a-z, 0-9, -")
]
