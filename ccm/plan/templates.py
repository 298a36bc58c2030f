"""Jinja2 rendering for configurations; template errors name the file and line.

A renderer remembers what it rendered in the last run and the current one: a template
rendered with equal variables gives the same text without rendering again (a full run at
100,000 objects rendered 60,000 unchanged files again every hour). Variables are compared
by a 128-bit BLAKE2 digest of their pickle, which encodes every value with its type
(``1`` and ``True`` differ); the memo keeps digests, not the variables, so it costs a few
megabytes where keeping the views cost a hundred. So a template must depend on its
variables and ``node_settings`` only (no clock, no randomness), as a plan must anyway.

Every configuration renders from its own package's ``templates/`` folder, the one beside
its module (``configurations/templates/virtual-hosts/…`` for a built-in type, which is
the top-level ``templates/`` folder; ``ccm_motd/templates/motd.j2`` for a plugin), so two
packages can never shadow each other's templates. An operator's ``templates_dir`` is
searched first: a template of the same name there replaces the shipped one.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path

import jinja2

from ccm.errors import PlanError


class TemplateRenderer:
    """A ``Render`` over template folders (searched in order): strict undefined,
    trailing newline kept; errors name ``configuration``."""

    def __init__(
        self,
        *directories: Path,
        configuration: str = "(template)",
        globals: Mapping[str, object] | None = None,
    ) -> None:
        self.directories = directories
        self.environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(d) for d in directories]),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
            # no stat() of the template file per render: templates change with a
            # deployment, and the daemon builds a new renderer on SIGHUP
            auto_reload=False,
        )
        #: what every template may read besides its variables (``node_settings``)
        self.environment.globals.update(globals or {})
        self.configuration = configuration
        #: memo key → text, rendered (or reused) in this run, and in the run before
        self._now: dict[bytes, str] = {}
        self._before: dict[bytes, str] = {}

    def next_run(self) -> None:
        """A new run begins: keep what the last one rendered, forget what it did not use
        (the memo never holds more than two runs' texts)."""
        self._before, self._now = self._now, {}

    def __call__(self, template: str, /, **variables: object) -> str:
        key = _memo_key(template, variables)
        if key is None:
            return self._render(template, variables)
        text = self._now.get(key)
        if text is None:
            text = self._before.get(key)
            if text is None:
                text = self._render(template, variables)
            self._now[key] = text
        return text

    def _render(self, template: str, variables: Mapping[str, object]) -> str:
        try:
            return self.environment.get_template(template).render(**variables)
        except jinja2.TemplateSyntaxError as error:
            raise PlanError(
                self.configuration,
                f"template {error.filename or template}, line {error.lineno}: {error.message}",
            ) from error
        except jinja2.TemplateNotFound as error:
            raise PlanError(
                self.configuration,
                f"template {error.name!r} not found in "
                + ", ".join(str(d) for d in self.directories),
            ) from error
        except jinja2.UndefinedError as error:
            raise PlanError(self.configuration, f"template {template}: {error.message}") from error


def _memo_key(template: str, variables: Mapping[str, object]) -> bytes | None:
    """A digest of the template's name and the variables, each by name, type and value;
    None when a variable cannot be pickled (then it is rendered every time)."""
    try:
        data = pickle.dumps((template, sorted(variables.items())), pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        return None
    return hashlib.blake2b(data, digest_size=16).digest()


def package_templates(owner: type) -> Path:
    """The ``templates/`` folder beside the module that defines ``owner`` (a configuration)."""
    source = getattr(sys.modules.get(owner.__module__), "__file__", None)
    if source is None:
        raise PlanError(owner.__qualname__, f"module {owner.__module__} has no file")
    return Path(source).parent / "templates"


def renderer_for(
    owner: type,
    name: str,
    override: Path | None = None,
    globals: Mapping[str, object] | None = None,
) -> TemplateRenderer:
    """The ``Render`` of one configuration: ``override`` (an operator's folder), then its
    own package's templates. ``globals``: what every template reads besides its variables
    (the engine passes ``node_settings``, the node's settings: where its ACME responder
    listens, for one)."""
    folders = [override] if override is not None else []
    return TemplateRenderer(*folders, package_templates(owner), configuration=name, globals=globals)
