"""Surviving mutants judged equivalent, with why (read by scripts/mutation.py).

Keyed by mutmut's mutant name. Names are numbered per function: when a function
changes, its mutants are renumbered and an entry here may no longer match (the script
then reports that mutant as an ordinary survivor, to be judged again).
"""

from __future__ import annotations

_L = "ccm.cluster.lock.x"
_KA = f"{_L}ǁ_KeepAliveǁ"
_CL = f"{_L}ǁClusterLockǁ"
_W = "ccm.cluster.watcher.xǁEventWatcherǁ"
_D = "ccm.daemon.debounce.xǁDebouncerǁ"
_F = "ccm.plan.fsutil.x_"
_R = "ccm.models.base.x__references__mutmut_"
_S = "ccm.cluster.store.x"
_OS = f"{_S}ǁObjectStoreǁ"
_JSON = "JSON spacing or escaping only: every reader parses the value (the wire contract)"
_DUMP = (
    "every field type is JSON-native (str, int, float, bool, list, dict): "
    "python and json dumps agree"
)
_WAIT = "the back-off between retries: timing only, the retries and their outcome are the same"

_LOG = "feeds only a log line (what the operator reads), not behaviour"
_E = "ccm.plan.executor.xǁExecutorǁ"
_JOURNAL = "a journal entry's label is read only by the log line of an undo that failed"
_A = "ccm.plan.accounts.xǁ"
_FK = "ccm.plan.files.xǁ"
_HAS_MODE = (
    "the fallback mode of a path that exists: read_path always gives an existing path its mode"
)
_UNDO_NAME = (
    "the name given to the undo's run() is used only in the CommandFailed that unwind catches "
    "and logs"
)
_DEAD = "dead store: the loop sets current before anything in it can raise"
_NT = "ccm.daemon.notify."
_M = "ccm.daemon.metrics.xǁMetricsǁ"
_SV = "ccm.daemon.served.xǁServedǁ"
_SH = "ccm.daemon.served.x_serve_http__mutmut_"
_AS = "ccm.daemon.acme_service.xǁAcmeServiceǁ"
_DL = "ccm.daemon.loop.xǁDaemonǁ"
_NR = "ccm.daemon.node_run.xǁNodeRunǁ"
_NO_CANARY = (
    "without canaries decide() answers 'apply' whatever the soak record or change set, and "
    "neither is read again"
)
_FALSY = "None is falsy like False: the flag is only ever tested for truth"
_FULL = "NodeRun runs everything when ALL is among the types, full or not"
_RAISED = (
    "another exception raised in its place (TypeError, IndexError) is handled the same: "
    "work kept, back-off; only the log line differs"
)
_THREAD = (
    "a thread's name and daemon flag: the loop joins the worker before going on, and the "
    "halt wait ends when stopping is set, which run() does however it ends"
)
_NEVER_RAISES = "unreachable: HaltFlag.wait_cleared never raises (it retries etcd errors itself)"
_EXEC_REVISION = "the executor's revision is bound to its log only"
_JOINED = "shutdown() has returned: the serving thread is ending, join returns whatever its bound"
_KIND = (
    "every action is '<kind> <details>' (the executor writes them): any split of it on "
    "the first space gives the same first word"
)
_UNSET = 'an unset variable read as None, not "": only its truth is tested, and both are false'

EQUIVALENT: dict[str, str] = {
    # -- ccm/plan/fsutil.py
    f"{_F}_is_link__mutmut_4": "follow_symlinks=None is falsy like False",
    f"{_F}_parts__mutmut_5": "PurePath.parts never holds '' (parts are normalised)",
    f"{_F}_parts__mutmut_6": "PurePath.parts never holds '.' (parts are normalised)",
    f"{_F}atomic_write__mutmut_11": "a longer random temp name: still unique, fixed, < 255 bytes",
    f"{_F}atomic_write__mutmut_12": "a longer random temp name: still unique, fixed, < 255 bytes",
    f"{_F}atomic_write__mutmut_14": "drops O_NOFOLLOW|O_CLOEXEC: O_CREAT|O_EXCL never follows a "
    "link, and Python's os.open sets O_CLOEXEC itself (PEP 446)",
    # -- ccm/plan/executor.py
    f"{_E}__init____mutmut_1": "revision is bound to the log only",
    **{f"{_E}apply__mutmut_{n}": _DEAD for n in (5, 6, 7)},
    f"{_E}apply__mutmut_20": "a path stripped wrong still lies on the same filesystem: "
    "sync_filesystems walks up to the nearest directory that exists, and syncs per "
    "filesystem",
    f"{_E}_run_probes__mutmut_36": "the number of workers: every probe runs, and the "
    "outcomes come back in the probes' order whatever the pool's size",
    **{
        f"{_E}_run_probes__mutmut_{n}": "pool.map gives one outcome per probe: the two "
        "lists always have the same length, strict or not"
        for n in (51, 54, 55)
    },
    f"{_E}_claim_accounts__mutmut_16": _JOURNAL,
    f"{_E}_claim_files__mutmut_36": _JOURNAL,
    f"{_E}_claim_files__mutmut_34": "pop without a default: the key was set by the claim; only "
    "after a failed probe is it gone, and then unwind catches the KeyError and "
    "manifest.restore() puts the state back",
    f"{_E}_apply_deferred__mutmut_4": "the name a deferred step gets is used only in the "
    "CommandFailed it raises, re-raised here as ActionFailed naming ops.configuration",
    **{f"{_E}_restoring__mutmut_{n}": _LOG for n in (3, 4)},
    **{
        f"{_E}__init____mutmut_{n}": "apply() sets it anew before the first command of a run, "
        "and nothing runs a command outside apply()"
        for n in (22, 24)
    },
    f"{_E}take_down__mutmut_57": _JOURNAL,
    # -- ccm/plan/files.py, operations.py
    **{f"{_FK}WriteFileǁapply__mutmut_{n}": _JOURNAL for n in (21, 46, 50)},
    **{f"{_FK}EnsureDirectoryǁapply__mutmut_{n}": _JOURNAL for n in (22, 47)},
    f"{_FK}RemoveFileǁapply__mutmut_25": _JOURNAL,
    **{f"{_FK}WriteFileǁapply__mutmut_{n}": _HAS_MODE for n in (30, 32)},
    **{f"{_FK}EnsureDirectoryǁapply__mutmut_{n}": _HAS_MODE for n in (39, 41)},
    **{f"{_FK}RemoveFileǁapply__mutmut_{n}": _HAS_MODE for n in (21, 23)},
    **{
        f"{_FK}{step}ǁas_json__mutmut_{n}": "colour=None: " + _FALSY
        for step, n in (("WriteFile", 20), ("RemoveFile", 15))
    },
    f"{_FK}WriteFileǁapply__mutmut_27": "an existing path a File plans to write is a regular "
    "file (File.compare refuses anything else), whose content read_path always reads",
    **{
        f"{_FK}Directoryǁcompare__mutmut_{n}": "read_path reads content only of a regular "
        "file, which Directory.compare refuses right after; EnsureDirectory never reads it"
        for n in (3, 5, 7)
    },
    f"{_FK}Directoryǁ_refuse_foreign_owner__mutmut_1": "read_path gives uid None exactly when "
    "the path does not exist: 'not exists or uid is None' and 'and' agree",
    "ccm.plan.operations.x__keep__mutmut_6": "only changes with an origin reach _keep, and every "
    "kind with an origin (File, Directory, Account) has keep",
    # -- ccm/plan/accounts.py, actions.py
    f"{_A}CreateAccountǁapply__mutmut_22": _JOURNAL,
    f"{_A}ModifyAccountǁapply__mutmut_34": _JOURNAL,
    f"{_A}CreateAccountǁapply__mutmut_27": _UNDO_NAME,
    f"{_A}ModifyAccountǁapply__mutmut_39": _UNDO_NAME,
    f"{_A}DeleteAccountǁapply__mutmut_1": "the name a deferred step gets is used only in the "
    "CommandFailed it raises, re-raised by _apply_deferred as ActionFailed naming "
    "ops.configuration",
    f"{_A}ModifyAccountǁapply__mutmut_15": "account_argv takes {username} from its own argument; "
    "the account's username field is never read there",
    "ccm.plan.actions.x_triggered_actions__mutmut_24": "merge keeps one daemon-reload, the "
    "first (combined returns self): the second one reload[:2] adds is dropped",
    f"{_FK}Prerequisiteǁcompare__mutmut_3": "with_content=None: " + _FALSY,
    "ccm.plan.actions.x_record_file_actions__mutmut_12": "a removed path's stale entry is never "
    "saved (save writes only paths in owned.files, which no longer lists it) and the manifest is "
    "loaded afresh each run",
    # -- ccm/models/
    f"{_R}4": "metadata is () whenever the annotation is Annotated (pydantic moves a field's "
    "own Annotated into metadata; the recursion passes ()): = and += agree",
    f"{_R}9": "also walking an Annotated's own args finds no Ref: they are a type and metadata",
    f"{_R}11": "also walking an Annotated's own args finds no Ref: they are a type and metadata",
    "ccm.models.snapshot.xǁSnapshotǁget__mutmut_5": "of_type(model.TYPE) holds only instances "
    "of model: one model per TYPE, and the store and Snapshot.of file each object by its TYPE",
    # -- ccm/cluster/store.py
    **{f"{_S}__encode__mutmut_{n}": _DUMP for n in (2, 3, 4)},
    **{f"{_S}__encode__mutmut_{n}": _JSON for n in (6, 7, 9, 10, 13)},
    **{f"{_OS}_delete_once__mutmut_{n}": _JSON for n in (77, 78, 80, 81, 84)},
    **{f"{_OS}_event__mutmut_{n}": _JSON for n in (6, 8)},
    **{f"{_OS}_retrying__mutmut_{n}": _WAIT for n in (4, 8, 14, 15, 16, 17)},
    f"{_S}__ordered__mutmut_3": "a type/id name holds one '/' (type names are kebab-case)",
    f"{_OS}__init____mutmut_5": "ObjectStore.prefix is read by nothing in ccm: keys come from "
    "Keys(prefix), which strips the '/' itself",
    f"{_OS}__init____mutmut_7": "ObjectStore.prefix is read by nothing in ccm: keys come from "
    "Keys(prefix), which strips the '/' itself",
    f"{_OS}_event__mutmut_3": "now(None) is local naive time; astimezone(UTC) reads it as local: "
    "the same instant",
    f"{_OS}_parse__mutmut_13": "the fallback (json.loads + parse_object) parses the same value to "
    "the same object, only slower",
    f"{_OS}_put_once__mutmut_22": "64 keys fenced one by one or by their type: both catch a "
    "concurrent change (the type's events key is coarser)",
    f"{_OS}_put_once__mutmut_31": "tombstones exist only for types with IMMUTABLE fields: "
    "reading the others' finds none",
    f"{_OS}_put_once__mutmut_64": "_duplicates never reads its type_name argument",
    f"{_OS}_read__mutmut_40": "nothing reads _State.revision",
    f"{_OS}_read__mutmut_48": "a Get's response is always a list (the adapter's contract)",
    # -- ccm/cluster/lock.py
    f"{_KA}__init____mutmut_3": "initial reason is never read: check() reads it after _mark_lost",
    f"{_KA}__init____mutmut_4": "initial reason is never read: check() reads it after _mark_lost",
    f"{_KA}__init____mutmut_9": "refreshing every ttl/4 instead of ttl/3 keeps the lease too",
    f"{_KA}__init____mutmut_11": "_closed None is falsy like False",
    f"{_KA}_run__mutmut_5": "_healthy None is falsy like False",
    f"{_L}ǁLockHoldǁ__init____mutmut_10": "_released None is falsy like False",
    f"{_KA}stop__mutmut_1": "stop() never runs on the keep-alive thread; a dead one joins at once",
    f"{_CL}acquire__mutmut_28": "JSON whitespace only: every reader parses the value",
    f"{_CL}acquire__mutmut_30": "JSON whitespace only: every reader parses the value",
    f"{_CL}_wait__mutmut_6": "no limit: more keys read, [0] is still the nearest ahead",
    f"{_CL}_wait__mutmut_12": "no limit: more keys read, [0] is still the nearest ahead",
    f"{_CL}_wait__mutmut_18": "limit 2: more keys read, [0] is still the nearest ahead",
    f"{_CL}_wait__mutmut_40": "_wait_deleted checks the deadline first thing anyway",
    f"{_CL}_wait__mutmut_41": "_wait_deleted checks the cancel event first thing anyway",
    f"{_CL}_wait__mutmut_55": "the key ahead existed at R: no delete of it is replayed from R-1",
    f"{_CL}_wait_deleted__mutmut_22": "slice is min(WAIT_SLICE, ...) anyway: < 0.1 s of timing",
    f"{_CL}_wait_deleted__mutmut_23": "slice is min(WAIT_SLICE, ...) anyway: < 0.1 s of timing",
    f"{_CL}_wait_deleted__mutmut_31": "lock keys are never rewritten: no put on the key ahead",
    f"{_L}__kvs__mutmut_2": "a Get's response is always a list (the adapter's contract)",
    # -- ccm/daemon/debounce.py
    f"{_D}__init____mutmut_18": "_first and _last are set and cleared together: never read alone",
    f"{_D}due_at__mutmut_1": "_first and _last are set and cleared together: never None alone",
    # -- ccm/cluster/watcher.py
    f"{_W}__init____mutmut_37": _LOG,
    f"{_W}__init____mutmut_38": _LOG,
    f"{_W}_run__mutmut_24": _LOG,
    f"{_W}_run__mutmut_25": _LOG,
    f"{_W}_before_sleep__mutmut_1": _LOG,
    f"{_W}_before_sleep__mutmut_2": _LOG,
    f"{_W}_before_sleep__mutmut_3": _LOG,
    f"{_W}_before_sleep__mutmut_5": _LOG,
    f"{_W}_before_sleep__mutmut_6": _LOG,
    f"{_W}_before_sleep__mutmut_7": _LOG,
    f"{_W}_before_sleep__mutmut_8": _LOG,
    f"{_W}_before_sleep__mutmut_9": _LOG,
    f"{_W}_session__mutmut_10": _LOG,
    f"{_W}_session__mutmut_11": _LOG,
    f"{_W}_run__mutmut_6": "before_sleep only logs (and sets the log flag)",
    f"{_W}_run__mutmut_12": "before_sleep only logs (and sets the log flag)",
    f"{_W}_run__mutmut_7": "reraise matters only once stopping: RetryError ends the loop as well",
    f"{_W}_run__mutmut_13": "reraise matters only once stopping: RetryError ends the loop as well",
    f"{_W}_run__mutmut_21": "reraise matters only once stopping: RetryError ends the loop as well",
    f"{_W}_run__mutmut_10": "without stop=, the next attempt returns at once when stopping",
    f"{_W}_run__mutmut_19": "wait_exponential never goes below its multiplier (= min)",
    f"{_W}_run__mutmut_27": "reached only when stopping: break ends the loop like continue",
    f"{_W}_consume__mutmut_4": "behind is read only once set by a probe",
    f"{_W}_consume__mutmut_6": "behind_deadline is read only once set by a probe",
    f"{_W}_consume__mutmut_7": "behind_deadline is read only once set by a probe",
    f"{_W}_consume__mutmut_22": "when not behind, behind = 0 again changes nothing",
    f"{_W}_consume__mutmut_24": "behind None is falsy like 0",
    f"{_W}_consume__mutmut_28": "> vs >= on a float instant: equal only by chance",
    f"{_W}_session__mutmut_13": "delivered None or x == x: same as False",
    f"{_W}_session__mutmut_21": "> vs >= on a float duration: equal only by chance",
    f"{_W}_latest_event_revision__mutmut_6": "no limit: more keys read, [0] is still the newest",
    f"{_W}_latest_event_revision__mutmut_11": "no limit: more keys read, [0] is still the newest",
    f"{_W}_latest_event_revision__mutmut_16": "limit 2: more keys read, [0] is still the newest",
    f"{_W}_latest_event_revision__mutmut_25": "a Get's response is always a list (the adapter)",
    # -- ccm/daemon/notify.py
    **{f"{_NT}x_watchdog_interval__mutmut_{n}": _UNSET for n in (7, 9, 23, 25)},
    **{f"{_NT}xǁNotifierǁ__init____mutmut_{n}": _UNSET for n in (12, 14)},
    # -- ccm/engine/
    "ccm.engine.graph.xǁDependencyGraphǁ__init____mutmut_12": "the same cycle started one edge "
    "later (edge heads, not tails): the message still names every member and edge of it",
    **{f"ccm.engine.run.xǁEngineǁapply__mutmut_{n}": _EXEC_REVISION for n in (15, 24)},
    "ccm.engine.run.x_refuse_referrers__mutmut_4": "grew = None: " + _FALSY,
    # -- ccm/daemon/loop.py
    **{f"{_DL}__init____mutmut_{n}": _FALSY for n in (21, 23)},
    f"{_DL}_handle__mutmut_14": _FALSY,
    f"{_DL}_run_once__mutmut_61": _FALSY,
    f"{_DL}__init____mutmut_32": "events at or below 1 are taken as applied: etcd's first "
    "write is revision 2",
    **{
        f"{_DL}__init____mutmut_{n}": "next_health is read only while soak_until is set, "
        "which sets it first"
        for n in (36, 37)
    },
    f"{_DL}_reload__mutmut_17": "Daemon.engine is read only when run() builds the NodeRun, "
    "before any reload; the NodeRun is given the new engine itself",
    **{f"{_DL}_run_in_worker__mutmut_{n}": _FULL for n in (5, 8)},
    f"{_DL}_run_in_worker__mutmut_7": "the types the loop asks for were written after the "
    "applied revision (the watcher starts above it), so NodeRun derives them from the "
    "events keys as well",
    **{f"{_DL}_run_in_worker__mutmut_{n}": _RAISED for n in (11, 26)},
    **{f"{_DL}_run_in_worker__mutmut_{n}": _THREAD for n in (14, 15, 17, 18, 19, 20, 21)},
    f"{_DL}_run_in_worker__mutmut_24": "without a watchdog the join only waits for the "
    "worker, which it does whatever the slice",
    **{f"{_DL}_wait_for_resume__mutmut_{n}": _NEVER_RAISES for n in (17, 18)},
    **{f"{_DL}_wait_for_resume__mutmut_{n}": _THREAD for n in (21, 22, 24, 25, 26, 27, 28)},
    f"{_DL}_wait_for_resume__mutmut_12": "each wait on the halt key lasts 5 s, not HALT_POLL: "
    "a stop is noticed later (timing only, within wait_stopped's bound); no test can fix "
    "when the stop falls within a wait",
    **{f"{_DL}run__mutmut_{n}": _WAIT for n in (41, 42)},
    f"{_DL}run__mutmut_43": "an event before the watcher starts is older than the catch-up "
    "run's snapshot, which applies it (the watcher's first revision can be any up to that)",
    f"{_DL}run__mutmut_44": "revision start+1 is the presence put or an earlier write (the "
    "catch-up run's lock put at the latest): older than the catch-up run's snapshot",
    f"{_DL}wait_stopped__mutmut_1": "the bound is reached only by a hung halt wait; it ends "
    "within HALT_POLL of stopping (wait_cleared's timeout): 10 or 11 s, the same",
    **{
        f"{_DL}stop__mutmut_{n}": "any message wakes the loop; no branch handles 'stop' (the "
        "stopping flag is what stops it)"
        for n in (1, 2, 3, 4)
    },
    f"{_DL}turn__mutmut_22": "the reconcile's run (ALL) sets the next one when it succeeds; "
    "until then ALL stays pending and a second trigger adds nothing",
    # -- ccm/daemon/node_run.py
    **{
        f"{_NR}__init____mutmut_{n}": "the node's store only reads (snapshots, events "
        "keys): the writer's name goes only into the events a put writes"
        for n in (11, 14)
    },
    **{f"{_NR}_run_locked__mutmut_{n}": _NO_CANARY for n in (12, 15, 21)},
    # -- ccm/daemon/metrics.py
    f"{_M}__init____mutmut_194": "the revisions seen are etcd revisions (>= 1): max(1, r) is r",
    **{f"{_M}close__mutmut_{n}": _JOINED for n in (4, 5)},
    **{f"{_M}run_finished__mutmut_{n}": _KIND for n in (5, 8, 11)},
    # -- ccm/daemon/served.py, acme_responder.py, acme_service.py (the ACME side)
    **{
        f"{_SV}close__mutmut_{n}": "the stopping thread is joined before close returns: "
        "daemon or not, and however long each look at it, close ends when shutdown does"
        for n in (3, 5, 6, 7, 8)
    },
    **{f"{_SV}close__mutmut_{n}": _JOINED for n in (9, 10)},
    **{
        f"{_SV}_wake__mutmut_{n}": "the wake-up connects to a socket that listens until "
        "server_close (after the loop): it connects at once, the timeout never matters"
        for n in (3, 5, 6)
    },
    f"{_SV}_wake__mutmut_1": "the listening socket is open while the loop is waited for: "
    "the connect does not fail, there is no OSError to let through",
    f"{_SH}7": "strip's argument is a set of characters: no listen host starts or ends with "
    "an upper-case X (the settings' validator accepts IP literals and host names)",
    **{
        f"{_SH}{n}": "getaddrinfo's first answer has the host's family with or without the "
        "port and socket type"
        for n in (10, 14)
    },
    f"{_SH}33": "the loop's poll interval: close() wakes it with a connection either way; "
    "the difference is idle CPU (benchmarks/many_clusters.py), not behaviour",
    **{
        f"ccm.daemon.acme_responder.x__handler__mutmut_{n}": "only the part before the first "
        "'?' is kept: splitting once, twice or at every '?' gives the same [0]"
        for n in (10, 13)
    },
    "ccm.daemon.acme_responder.x__handler__mutmut_77": "body=None is falsy like False: "
    "_send tests it for truth only",
    f"{_AS}__init____mutmut_15": "responder_address is read only after start() set it "
    "(None or a bound address)",
    **{
        f"{_AS}stop__mutmut_{n}": "the bound on waiting for the renewal thread matters only "
        "for an order still running 10 s after stop (the thread is a daemon thread); the "
        "tests' orders against pebble take about a second"
        for n in (2, 3)
    },
    # -- ccm/plan/pending.py, units.py (the unit lifecycle)
    "ccm.plan.pending.xǁPendingUnitǁcombined__mutmut_2": "equal strength means the same "
    "action (enable and reload, both 0, never share a key): the new PendingUnit equals self",
    "ccm.plan.units.xǁUnitǁcompare__mutmut_39": "removed=None is falsy like False: TakeDown "
    "reads it only in truth tests",
    # -- ccm/plan/secrets.py
    "ccm.plan.secrets.xǁHiddenǁof__mutmut_9": "autojunk=None is falsy like False",
}
