"""The renderer's memo: equal variables give the text rendered before without
rendering again; anything else renders. Real templates in a temporary folder; a
template's file is changed behind the renderer's back to see whether it rendered."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from ccm.plan.templates import TemplateRenderer


@dataclass(frozen=True)
class View:
    name: str
    aliases: tuple[str, ...] = ()


SITE = "server {{ view.name }} {{ view.aliases | join(',') }}\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "site.j2").write_text(SITE)
    (tmp_path / "flag.j2").write_text("flag={{ flag }}\n")
    return tmp_path


def renders_again(folder: Path, renderer: TemplateRenderer, **variables: object) -> bool:
    """Whether ``renderer`` renders now, rather than giving a remembered text: the
    compiled template is swapped for one that says so."""
    renderer.environment.cache.clear()  # type: ignore[union-attr]
    (folder / "site.j2").write_text("RENDERED\n")
    try:
        return renderer("site.j2", **variables) == "RENDERED\n"
    finally:
        renderer.environment.cache.clear()  # type: ignore[union-attr]
        (folder / "site.j2").write_text(SITE)


def test_equal_variables_are_not_rendered_again_within_a_run_or_the_next(folder: Path) -> None:
    renderer = TemplateRenderer(folder)
    first = renderer("site.j2", view=View("a.example", ("b.example",)))
    assert first == "server a.example b.example\n"
    assert renderer("site.j2", view=View("a.example", ("b.example",))) is first
    assert not renders_again(folder, renderer, view=View("a.example", ("b.example",)))
    renderer.next_run()
    assert not renders_again(folder, renderer, view=View("a.example", ("b.example",)))
    assert renders_again(folder, renderer, view=View("c.example"))  # not seen: rendered


def test_a_text_not_used_for_a_whole_run_is_forgotten(folder: Path) -> None:
    renderer = TemplateRenderer(folder)
    renderer("site.j2", view=View("a.example"))
    renderer.next_run()
    renderer.next_run()  # a run that did not render it
    assert renders_again(folder, renderer, view=View("a.example"))


def test_equal_values_of_other_types_render_apart_and_lists_are_compared_too(
    folder: Path,
) -> None:
    renderer = TemplateRenderer(folder)
    assert renderer("flag.j2", flag=1) == "flag=1\n"
    assert renderer("flag.j2", flag=True) == "flag=True\n"  # 1 == True, rendered apart
    assert renderer("flag.j2", flag=1.0) == "flag=1.0\n"
    assert renderer("flag.j2", flag=[1]) == "flag=[1]\n"
    assert renderer("flag.j2", flag=[1, 2]) == "flag=[1, 2]\n"
    listed = renderer("site.j2", view={"name": "a", "aliases": ["b"]})
    assert listed == "server a b\n"
    assert not renders_again(folder, renderer, view={"name": "a", "aliases": ["b"]})
    assert renders_again(folder, renderer, view={"name": "a", "aliases": ["c"]})


def test_variables_that_cannot_be_pickled_are_rendered_every_time(folder: Path) -> None:
    renderer = TemplateRenderer(folder)
    view = View("a.example")
    assert renderer("site.j2", view=view, hook=lambda: None) == "server a.example \n"
    assert renders_again(folder, renderer, view=view, hook=lambda: None)
