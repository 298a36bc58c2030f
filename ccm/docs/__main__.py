"""``python -m ccm.docs [--check] FILE…``: rewrite the generated blocks of markdown files.

``scripts/gen-docs`` runs it on ``docs/*.md``. With ``--check`` nothing is written: the
stale files are listed and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ccm.docs.blocks import DocsError
from ccm.docs.generate import render_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ccm.docs", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--check", action="store_true", help="only list the stale files")
    options = parser.parse_args(argv)
    stale = []
    try:
        for path in options.files:
            text = path.read_text()
            rendered = render_file(path)
            if rendered != text:
                stale.append(path)
                if not options.check:
                    path.write_text(rendered)
    except (DocsError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    verb = "stale" if options.check else "rewritten"
    for path in stale:
        print(f"{verb}: {path}")
    return 1 if options.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
