"""``motd-messages``: a message of the day per object, in ``/etc/motd.d/<id>``.

The whole extension: the object type (registered by being defined), its configuration
(every node; no group), and ``templates/motd.j2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from ccm.models import CcmObject, Snapshot, Text
from ccm.plan.changes import Change, File
from ccm.plan.configuration import Configuration, Render


class MotdMessage(CcmObject):
    TYPE: ClassVar[str] = "motd-messages"
    text: Text = Field(min_length=1, max_length=1000)


class MotdMessages(Configuration):
    name = "motd-messages"
    subscribes = (MotdMessage.TYPE,)
    summary = "messages of the day in /etc/motd.d"

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return [
            File(f"/etc/motd.d/{message.id}", render("motd.j2", message=message))
            for message in snapshot.all(MotdMessage)
        ]


CONFIGURATIONS = (MotdMessages,)
