"""Typed changes: what a configuration intends, as values.

A configuration returns the FULL intended state as a list of these; it never reads the
node. Each kind compares itself with the node (``compare``) to plan the steps that have
to happen, so the same list serves ``ccm diff`` and ``ccm apply``. The kinds live with
their behaviour (``ccm.plan.files``, ``ccm.plan.accounts``, ``ccm.plan.units``,
``ccm.plan.actions``, ``ccm.plan.sql``); this module is where configurations import them from.

Paths are node paths (``/etc/nginx/…``); the executor places them under the root.
``triggers`` are node-path prefixes: a check, reload or command runs only when a file
or directory under one of them changed in this run.

``origin`` names the tenant objects a change renders (``("crons/3", "crons/4")``). When
the node refuses such a change for a reason the tenant caused (an account made by hand
under that name, a crontab the user wrote with ``crontab -e``), only those objects are
refused — reported, left as they are on the node — and the run goes on. A change with
no origin is the cluster's own (Dovecot's passwd-file): a conflict there fails the run.
"""

from __future__ import annotations

from ccm.plan.accounts import Account
from ccm.plan.actions import Check, Command, Playbook, Probe, UnitAction
from ccm.plan.extrausers import AccountFiles
from ccm.plan.files import Directory, File, Prerequisite
from ccm.plan.sql import SqlCleanup, SqlDatabase, SqlGrant, SqlUser
from ccm.plan.units import Unit

Change = (
    File
    | Directory
    | Prerequisite
    | Account
    | AccountFiles
    | Unit
    | Check
    | Probe
    | UnitAction
    | Command
    | Playbook
    | SqlDatabase
    | SqlUser
    | SqlGrant
    | SqlCleanup
)

__all__ = [
    "Account",
    "AccountFiles",
    "Change",
    "Check",
    "Command",
    "Directory",
    "File",
    "Playbook",
    "Prerequisite",
    "Probe",
    "SqlCleanup",
    "SqlDatabase",
    "SqlGrant",
    "SqlUser",
    "Unit",
    "UnitAction",
]
