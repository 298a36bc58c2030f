"""Reference tables generated from the code, so the documentation cannot drift from it.

``docs/*.md`` hold hand-written prose and, between marker comments, tables this package
writes from the code itself::

    <!-- generated: object-types ccm configurations -->
    … (rewritten by ``scripts/gen-docs``) …
    <!-- end generated -->

The blocks (``ccm.docs.blocks``) and what writes them:

* ``object-types [PACKAGE…]`` — every registered object type (``ccm.models.base.object_types``
  after loading the ``ccm.configurations`` entry points, like the CLI), or only those
  defined in the given top-level packages: fields, JSON types, defaults, constraints,
  references, identity, rules and the configurations that use it (``object_types``);
* ``settings`` and ``environment`` — every key of ``ccm.settings.Settings`` (``settings_keys``);
* ``cli`` — every ``ccm`` command with its options (``commands``).

``python -m ccm.docs FILE…`` rewrites the blocks; ``--check`` only says which files are
stale (``tests/test_docs.py`` fails on a stale file). Third-party packages can document
their own types the same way.
"""

from ccm.docs.blocks import DocsError
from ccm.docs.generate import render_file, stale

__all__ = ["DocsError", "render_file", "stale"]
