"""The documentation in ``docs/`` matches the code, and nothing in the repository points
outside it.

The tables between ``<!-- generated: … -->`` markers are written by ``ccm.docs`` from the
registered object types, ``ccm.settings.Settings`` and the click commands; a page whose
tables differ from what the code says now fails here, with the command that fixes it.
A clone of the repository must be readable on its own: no pointer to a file it does not
have, no link to a missing page or heading.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar

import pytest
from pydantic import BaseModel, Field

from ccm.docs import DocsError, stale
from ccm.docs.__main__ import main as gen_docs
from ccm.docs.blocks import replace_blocks
from ccm.docs.generate import generate
from ccm.models import CcmObject, ObjectId, ObjectsView, Ref, pattern
from ccm.settings import Settings

CHECKOUT = Path(__file__).resolve().parents[1]
DOCS = sorted((CHECKOUT / "docs").glob("*.md"))
PLUGIN = Path(__file__).parent / "plugins" / "ccm-motd"
REGENERATE = "run scripts/gen-docs and commit the result"


# -- the committed pages -------------------------------------------------------------------


def test_the_committed_docs_match_the_code() -> None:
    outdated = [str(path.relative_to(CHECKOUT)) for path in stale(DOCS)]
    assert not outdated, (
        f"{', '.join(outdated)}: the generated tables differ from the code "
        f"(a model, a setting or a command changed): {REGENERATE}"
    )


def test_every_generated_table_has_a_page() -> None:
    """A deleted marker would make the staleness test pass vacuously."""
    found = {
        match["name"]
        for path in DOCS
        for match in re.finditer(r"<!-- generated: (?P<name>[a-z-]+)", path.read_text())
    }
    assert found >= {"object-types", "settings", "environment", "cli"}


def _settings_fields(model: type[BaseModel], path: str = "") -> Iterator[tuple[str, Any]]:
    for name, info in model.model_fields.items():
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            assert nested.__doc__, f"[{path}{name}]: the settings class needs a docstring"
            yield from _settings_fields(nested, f"{path}{name}.")
        else:
            yield f"{path}{name}", info


def test_every_settings_key_is_described_in_the_docs() -> None:
    page = (CHECKOUT / "docs" / "settings.md").read_text()
    keys = list(_settings_fields(Settings))
    assert {"node", "etcd.endpoints", "rollout.soak"} <= {key for key, _ in keys}
    for key, info in keys:
        assert info.description, f"{key}: give it a docstring in ccm/settings.py"
        name = key.rpartition(".")[2]
        assert f"| `{name}` |" in page, f"{key} is not in docs/settings.md: {REGENERATE}"


# -- the generator -------------------------------------------------------------------------


def test_a_type_defined_outside_ccm_is_documented_from_its_model(registry: None) -> None:
    class Widget(CcmObject):
        """A widget a tenant owns.

        The second paragraph is not shown.
        """

        TYPE: ClassVar[str] = "docs-widgets"
        IMMUTABLE: ClassVar[tuple[str, ...]] = ("name",)
        READS: ClassVar[tuple[str, ...]] = ("unix-users",)
        name: Annotated[str, Field(strict=True, max_length=40), pattern(r"[a-z]+", "a name")]
        size: int = Field(default=3, ge=1, le=9, description="How big, in ``units``.")
        tags: list[str] = Field(default_factory=list, max_length=5)
        unix_user_id: Annotated[ObjectId, Ref("unix-users")]

        def unique_keys(self) -> dict[str, Any]:
            return {"name": self.name, f"owner {self.unix_user_id}": 1}

        def problems(self, view: ObjectsView) -> list[str]:
            """No two widgets of one owner share a size."""
            return []

    text = generate("object-types", (__name__,))
    assert "unix-users`](#" not in text and "### `unix-users`" not in text  # only this module
    assert "| [`docs-widgets`](#docs-widgets) |  | A widget a tenant owns. |" in text
    section = text[text.index("### `docs-widgets`") :]
    assert "A widget a tenant owns." in section and "second paragraph" not in section
    for fact in (
        f"- Model: `{__name__}.{Widget.__qualname__}`.",
        "- References (must exist when written): `unix_user_id` → `unix-users`.",
        "- Unique among the `docs-widgets`: `name`, `owner {self.unix_user_id}`.",
        "- Immutable: `name` (never changed;",
        "- Its rules read every object of: `unix-users`.",
        "- Cross-object rules: No two widgets of one owner share a size.",
        "| `id` | integer | required | > 0; ≤ 2147483647 |  |",
        "| `name` | string | required | at most 40 characters; fullmatch `[a-z]+` |  |",
        "| `size` | integer | `3` | ≥ 1; ≤ 9 | How big, in `units`. |",
        "| `tags` | array of string | `[]` | at most 5 items |  |",
        "| `unix_user_id` | integer | required | > 0; ≤ 2147483647 |  |",
    ):
        assert fact in section, fact
    # the built-in types see it too: it reads unix-users and refers to them
    builtin = generate("object-types", ())
    users = builtin[builtin.index("### `unix-users`") :]
    assert "`docs-widgets.unix_user_id`" in users.split("###")[1]
    assert "re-checked when it changes): `docs-widgets`" in users.split("###")[1]


def test_a_package_that_defines_no_type_is_an_error() -> None:
    with pytest.raises(DocsError, match="no registered object type is defined in no_such_pkg"):
        generate("object-types", ("no_such_pkg",))


@pytest.fixture(scope="module")
def motd_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example extension, installed with pip into a directory of its own."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("source") / "ccm-motd"
    shutil.copytree(PLUGIN, source)  # the build writes beside the sources: not the checkout
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
         "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return target


def _gen_docs(page: Path, site: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run(
        [sys.executable, "-m", "ccm.docs", str(page)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def test_an_installed_extensions_types_come_through_its_entry_point(
    motd_site: Path, tmp_path: Path
) -> None:
    page = tmp_path / "motd.md"
    page.write_text("# motd\n<!-- generated: object-types ccm_motd -->\n<!-- end generated -->\n")
    without = _gen_docs(page, None)
    assert without.returncode == 1
    assert "no registered object type is defined in ccm_motd" in without.stderr
    assert "motd.md:2:" in without.stderr

    done = _gen_docs(page, motd_site)
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert "### `motd-messages`" in text
    assert "Configuration `motd-messages` (groups: every node): messages of the day" in text
    assert "| `text` | string | required | at least 1 characters; at most 1000 characters;" in text
    assert "### `unix-users`" not in text


# -- the blocks ----------------------------------------------------------------------------


def _fake(name: str, args: tuple[str, ...]) -> str:
    return f"{name} {' '.join(args)}".strip() + "\n"


def test_only_the_blocks_are_rewritten_and_examples_in_code_are_left_alone() -> None:
    text = (
        "# title\n\nprose\n"
        "<!-- generated: one a b -->\nold\nlines\n<!-- end generated -->\n"
        "```\n<!-- generated: example -->\n```\n"
        "tail\n"
    )
    once = replace_blocks(text, _fake, "page.md")
    assert once == (
        "# title\n\nprose\n"
        "<!-- generated: one a b -->\n\none a b\n\n<!-- end generated -->\n"
        "```\n<!-- generated: example -->\n```\n"
        "tail\n"
    )
    assert replace_blocks(once, _fake, "page.md") == once


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("x\n<!-- generated: one -->\nno end\n", r"page.md:2: no <!-- end generated -->"),
        ("x\n\n<!-- end generated -->\n", r"page.md:3: <!-- end generated --> without"),
        (
            "<!-- generated: one -->\n<!-- generated: two -->\n<!-- end generated -->\n",
            r"page.md:2: a generated block inside another",
        ),
    ],
)
def test_a_half_edited_page_is_refused_with_its_line(text: str, error: str) -> None:
    with pytest.raises(DocsError, match=error):
        replace_blocks(text, _fake, "page.md")


def test_an_unknown_block_or_an_argument_it_does_not_take_is_refused() -> None:
    with pytest.raises(DocsError, match=r"page.md:1: unknown generated block 'tables'"):
        replace_blocks("<!-- generated: tables -->\n<!-- end generated -->\n", generate, "page.md")
    with pytest.raises(DocsError, match=r"block 'settings' takes no arguments"):
        generate("settings", ("etcd",))


def test_check_lists_a_stale_page_and_changes_nothing(tmp_path: Path, capsys: Any) -> None:
    page = tmp_path / "page.md"
    text = "<!-- generated: environment -->\nstale\n<!-- end generated -->\n"
    page.write_text(text)
    assert gen_docs(["--check", str(page)]) == 1
    assert page.read_text() == text
    assert f"stale: {page}" in capsys.readouterr().out
    assert gen_docs([str(page)]) == 0
    assert "| `CCM_ETCD_PREFIX` | `etcd.prefix` |" in page.read_text()
    assert gen_docs(["--check", str(page)]) == 0


# -- nothing points outside the repository -------------------------------------------------


def _tracked() -> list[Path]:
    listed = subprocess.run(
        ["git", "-C", str(CHECKOUT), "ls-files", "-z"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return [CHECKOUT / name for name in listed.decode().split("\0") if name]


def _texts() -> Iterator[tuple[Path, str]]:
    for path in _tracked():
        try:
            yield path, path.read_text()
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue  # binary, or deleted in the work tree


def _outside_code(text: str, spans: bool = False) -> Iterator[str]:
    """The lines of a markdown text outside fenced code blocks, without inline code
    (``spans``: with it)."""
    fence = ""
    for line in text.splitlines():
        marker = re.match(r"\s*(`{3,}|~{3,})", line)
        if marker and not fence:
            fence = marker[1]
        elif marker and marker[1].startswith(fence):
            fence = ""
        elif not fence:
            yield line if spans else re.sub(r"(`+).+?\1", "", line)


#: the shared folder beside the checkout, spelt without matching this file itself
_OUTSIDE = re.compile("|".join([r"\.\./" + "shared", "/work/" + "shared", "shared" + r"\s+docs"]))
_MD_NAME = re.compile(r"[\w./-]*\b[\w-]+\.md\b")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_no_tracked_file_points_to_the_shared_folder_outside_the_checkout() -> None:
    found = [
        f"{path.relative_to(CHECKOUT)}:{number}: {line.strip()}"
        for path, text in _texts()
        for number, line in enumerate(text.splitlines(), 1)
        if _OUTSIDE.search(line.lower())
    ]
    assert not found, "these point outside the repository:\n" + "\n".join(found)


def test_every_markdown_file_a_tracked_file_names_is_in_the_repository() -> None:
    tracked = set(_tracked())
    names = {path.name for path in tracked}
    missing = []
    for path, text in _texts():
        if path.is_relative_to(CHECKOUT / "tests"):
            continue  # tests name the files they make (``page.md`` in a temporary folder)
        for mention in _MD_NAME.findall(text):
            here = {(path.parent / mention).resolve(), (CHECKOUT / mention).resolve()}
            bare = "/" not in mention and mention in names
            if not bare and not here & tracked:
                missing.append(f"{path.relative_to(CHECKOUT)}: {mention}")
    assert not missing, "no such file in the repository:\n" + "\n".join(missing)


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    found: set[str] = set()
    for line in _outside_code(text, spans=True):
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            slug = _slug(heading[1])
            count = sum(1 for known in found if re.fullmatch(rf"{re.escape(slug)}(-\d+)?", known))
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def test_every_link_in_the_markdown_reaches_a_file_and_heading_in_the_repository() -> None:
    tracked = set(_tracked())
    folders = {parent for path in tracked for parent in path.parents}
    broken = []
    for path, text in _texts():
        if path.suffix != ".md":
            continue
        for line in _outside_code(text):
            for target in _LINK.findall(line):
                if re.match(r"[a-z]+:", target):
                    continue  # https:, mailto:
                file, _, anchor = target.partition("#")
                resolved = (path.parent / file).resolve() if file else path
                if resolved not in tracked and resolved not in folders:
                    broken.append(f"{path.relative_to(CHECKOUT)}: {target} (no such file)")
                elif anchor and resolved.suffix == ".md":
                    if anchor not in _anchors(resolved.read_text()):
                        broken.append(f"{path.relative_to(CHECKOUT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)
