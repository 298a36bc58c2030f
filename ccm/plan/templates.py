"""Jinja2 rendering for configurations; template errors name the file and line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jinja2

from ccm.errors import PlanError
from ccm.plan.resources import resource_dir


class TemplateRenderer:
    """A ``Render`` over a templates folder: strict undefined, trailing newline kept.

    ``extra`` folders are searched after ``directory``: an extension's configuration
    ships its templates in a ``templates/`` folder beside its module.
    """

    def __init__(self, directory: Path, extra: Sequence[Path] = ()) -> None:
        self.directory = directory
        self.environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(directory), *map(str, extra)]),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
            # no stat() of the template file per render: templates change with a
            # deployment, and the daemon builds a new renderer on SIGHUP
            auto_reload=False,
        )
        self.configuration = "(template)"

    def __call__(self, template: str, /, **variables: object) -> str:
        try:
            return self.environment.get_template(template).render(**variables)
        except jinja2.TemplateSyntaxError as error:
            raise PlanError(
                self.configuration,
                f"template {error.filename or template}, line {error.lineno}: {error.message}",
            ) from error
        except jinja2.TemplateNotFound as error:
            raise PlanError(
                self.configuration, f"template {error.name!r} not found in {self.directory}"
            ) from error
        except jinja2.UndefinedError as error:
            raise PlanError(self.configuration, f"template {template}: {error.message}") from error


def default_templates_dir() -> Path:
    """The templates shipped in the package (``ccm/data/templates`` of a wheel), or the
    ``templates/`` folder of the checkout an editable install runs from."""
    return resource_dir("templates")
