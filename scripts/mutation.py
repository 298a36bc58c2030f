"""Mutation testing of ccm's core with mutmut 3 (run through ``scripts/mutation``).

    scripts/mutation                 # every module below (long: hours)
    scripts/mutation lock debounce   # some modules only
    scripts/mutation --dry-run store # generate the mutants, run no test
    scripts/mutation --list          # the modules and the tests each one runs
    scripts/mutation --keep-map loop # while writing tests: re-run the survivors only

Each module runs in a scratch copy of this tree, ``.mutation/<module>/`` (mutmut 3
copies the source to ``mutants/`` beside its config and writes its state there; the
work tree stays clean). The copy's ``pyproject.toml`` gets a ``[tool.mutmut]`` section
generated here: it mutates that module only and runs only the tests listed for it
(``pytest_add_cli_args_test_selection``), so one module takes minutes, not hours.
Results stay in the scratch copy: run a module again and mutants of changed code run,
and so do the earlier survivors (the tests may have changed; which tests reach which
function is collected afresh when one of the module's test files or a test helper
changed); the rest keep their result.
Log calls are not mutated (see ``DO_NOT_MUTATE``).

Why mutmut rather than cosmic-ray: mutmut 3 (3.8.1 here) maps each test to the functions
it runs, and runs a mutant only against the tests that reach the mutated function; it
forks its workers from a fork server, which gRPC (the etcd client) needs. cosmic-ray 8
runs one fixed test command per mutant, several times slower on these etcd-backed tests.
mutmut's own config must sit in pyproject.toml or setup.cfg, which is why the scratch
copy carries a generated one; mutmut and ccm's test dependencies live in
``.venv-mutation``, never in the runtime ``.venv``.

At the end it prints killed / total per module and lists every survivor with its diff
(``--no-diff``: names only). A mutant is *killed* when a test fails or times out;
*survived* when the tests pass; *no tests* when no selected test runs its function
(a gap too: counted as not killed). Not part of CI: too slow.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mutation_equivalent import EQUIVALENT

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-mutation"
SCRATCH = REPO / ".mutation"


@dataclass(frozen=True)
class Module:
    paths: tuple[str, ...]  # glob patterns of the files to mutate (mutmut's only_mutate)
    tests: tuple[str, ...]  # the tests that exercise them


_KINDS = tuple(
    f"ccm/plan/{name}.py" for name in ("files", "accounts", "actions", "steps", "operations")
)
#: the executor's own tests: fast, on a temporary root
_EXECUTOR_TESTS = (
    "tests/test_executor.py",
    "tests/test_executor_rules.py",
    "tests/test_executor_commands.py",
    "tests/test_probes.py",
    "tests/test_removal_reloads.py",
    "tests/test_node_refusals.py",
    "tests/test_playbook_runs.py",
    "tests/test_units.py",
    "tests/test_secrets.py",
    "tests/test_progress.py",
)

MODULES: dict[str, Module] = {
    # the executor, and the change kinds it drives (split: one run each stays short)
    "executor": Module(("ccm/plan/executor.py",), _EXECUTOR_TESTS),
    "kinds": Module(
        _KINDS,
        (
            "tests/test_kinds.py",
            "tests/test_file_kinds.py",
            "tests/test_account_action_kinds.py",
            *_EXECUTOR_TESTS,
        ),
    ),
    "fsutil": Module(
        ("ccm/plan/fsutil.py",),
        ("tests/test_fsutil.py", "tests/test_fsutil_rules.py", "tests/test_executor.py"),
    ),
    "lock": Module(("ccm/cluster/lock.py",), ("tests/test_lock.py",)),
    "watcher": Module(("ccm/cluster/watcher.py",), ("tests/test_watcher.py",)),
    "store": Module(
        ("ccm/cluster/store.py",),
        (
            "tests/test_store.py",
            "tests/test_store_rules.py",
            "tests/test_tenant_input.py",
            "tests/test_placement.py",
        ),
    ),
    "debounce": Module(("ccm/daemon/debounce.py",), ("tests/test_debounce.py",)),
    # the daemon's loop and one locked run, each against a real etcd, on injected clocks
    "loop": Module(("ccm/daemon/loop.py",), ("tests/test_daemon_loop.py",)),
    "node_run": Module(
        ("ccm/daemon/node_run.py",),
        (
            "tests/test_node_run.py",
            "tests/test_daemon_loop.py",
            "tests/test_probes.py",
            "tests/test_node_refusals.py",
            "tests/test_canary.py",
        ),
    ),
    "metrics": Module(
        ("ccm/daemon/metrics.py",), ("tests/test_metrics.py", "tests/test_daemon_loop.py")
    ),
    "notify": Module(("ccm/daemon/notify.py",), ("tests/test_notify.py",)),
    # the ACME side of the daemon: the challenge responder, the ordering service and the
    # threaded HTTP server both it and /metrics run in (real pebble, nginx and etcd)
    "acme": Module(
        (
            "ccm/daemon/acme_responder.py",
            "ccm/daemon/acme_service.py",
            "ccm/daemon/served.py",
        ),
        (
            "tests/test_acme_responder.py",
            "tests/test_acme_daemon.py",
            "tests/test_acme.py",
            "tests/test_metrics.py",
        ),
    ),
    # the registry, the dependency graph, the event bus and one run (select, plan, apply)
    "engine": Module(
        ("ccm/engine/*",),
        (
            "tests/test_engine.py",
            "tests/test_engine_run.py",
            "tests/test_placement.py",
            "tests/test_probes.py",
            "tests/test_node_refusals.py",
        ),
    ),
    "models": Module(
        ("ccm/models/*",),
        (
            "tests/test_mutation_models.py",
            "tests/test_tenant_input.py",
            "tests/test_reserved.py",
            "tests/test_store.py",
            "tests/test_configurations.py",
            "tests/test_placement.py",
        ),
    ),
    # the unit lifecycle (the Unit kind, its steps, the pending actions it plans) and secrets
    "units": Module(
        ("ccm/plan/units.py", "ccm/plan/pending.py"),
        (
            "tests/test_units.py",
            "tests/test_account_action_kinds.py",
            "tests/test_removal_reloads.py",
            "tests/test_executor_commands.py",
            "tests/test_probes.py",
        ),
    ),
    "secrets": Module(
        ("ccm/plan/secrets.py",),
        ("tests/test_secrets.py", "tests/test_file_kinds.py"),
    ),
}

#: Added to every module's test selection: the multi-daemon cluster tests (marked slow)
#: take minutes each and exercise these modules no better than the fast ones.
DESELECT = ("-m", "not slow")

#: mutmut's exit-code statuses, as counted here.
KILLED = {"killed", "timeout", "caught by type check", "segfault"}
NOT_KILLED = {"survived", "no tests", "suspicious"}

#: Lines (regexes; every expression starting there) never mutated: log calls. What a
#: node logs is for the operator, not behaviour the tests pin down; a mutated log line
#: is an equivalent mutant, and there are hundreds of them.
DO_NOT_MUTATE = [
    r"^\s*(self\.)?_?log\.(debug|info|warning|error|exception|critical)\(",
    r"^\s*(self\.)?_?log = .*(get_logger|\.bind)\(",
    # a callback that only logs (a retry's ``on_retry``)
    r"=\s*lambda [^:]*:\s*(self\.)?_?log\.(debug|info|warning|error|exception|critical)\(",
]

#: Per-test bound inside a mutation run: a mutant that makes a test wait forever (a lock
#: never handed on) is a kill, and should not cost pytest-timeout's 120 s.
TEST_TIMEOUT = 30


def copy_tree(destination: Path) -> None:
    """Copy the work tree's files (tracked and new, not ignored) into ``destination``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    keep = destination / "mutants"  # mutmut's state: kept between runs
    for entry in destination.iterdir() if destination.exists() else ():
        if entry != keep:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for raw in listed:
        if not raw:
            continue
        relative = Path(os.fsdecode(raw))
        source = REPO / relative
        target = destination / relative
        if source.is_symlink():  # configurations/templates -> ../templates: a link again
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(os.readlink(source))
            continue
        if not source.is_file():
            continue  # deleted in the work tree, not yet in the index
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def present(tests: tuple[str, ...]) -> tuple[str, ...]:
    """The listed test files that exist (a new one may not be written yet)."""
    return tuple(test for test in tests if (REPO / test).is_file())


def configure(destination: Path, module: Module) -> None:
    """Append the ``[tool.mutmut]`` section for ``module`` to the copy's pyproject."""
    pyproject = destination / "pyproject.toml"
    text = pyproject.read_text()
    if "[tool.mutmut]" in text:
        sys.exit("pyproject.toml has a [tool.mutmut] section: this script writes its own")

    def toml_list(items: tuple[str, ...] | list[str]) -> str:
        return json.dumps(list(items))

    text += (
        "\n[tool.mutmut]\n"
        'source_paths = ["ccm", "configurations"]\n'
        # what the configurations read at run time (found beside the mutated ccm/; the
        # built-in types find theirs in configurations/templates, a link to templates/)
        'also_copy = ["templates", "playbooks", "configurations/templates"]\n'
        f"only_mutate = {toml_list(module.paths)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(present(module.tests) + DESELECT)}\n"
        f'pytest_add_cli_args = ["-p", "no:cacheprovider", "--timeout={TEST_TIMEOUT}"]\n'
        # gRPC (the etcd client) is not fork-safe: fork workers from a clean server
        'process_isolation = "forkserver"\n'
        'forkserver_warmup = "none"\n'
        "use_git_change_detection = false\n"
        f"do_not_mutate_patterns = {toml_list(DO_NOT_MUTATE)}\n"
    )
    pyproject.write_text(text)
    # mutmut keeps generated mutants and results for unchanged source, whatever the
    # config says: a new config (another test selection, other exclusions) starts afresh
    section = text[text.index("[tool.mutmut]") :]
    remembered = destination / "mutants" / "ccm-mutation-config"
    if remembered.exists() and remembered.read_text() != section:
        shutil.rmtree(destination / "mutants")
    remembered.parent.mkdir(exist_ok=True)
    remembered.write_text(section)


def mutmut(destination: Path, *args: str, log: Path | None = None) -> str:
    """Run mutmut in ``destination``; its output goes to ``log`` (appended) if given,
    else it is returned."""
    env = {**os.environ, "PYTHONPATH": ""}
    with open(log, "a") if log is not None else open(os.devnull, "w") as sink:
        result = subprocess.run(
            [str(VENV / "bin" / "mutmut"), *args],
            cwd=destination,
            env=env,
            text=True,
            stdout=sink if log is not None else subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        where = f"see {log}" if log is not None else result.stdout
        sys.exit(f"mutmut {' '.join(args)} failed in {destination} ({where})")
    return result.stdout if log is None else ""


def keep_test_map(destination: Path, module: Module) -> None:
    """Which tests reach which function: kept while none of the module's tests changed,
    else collected afresh (mutmut re-collects only for new tests, and an edited test may
    reach more functions than it did). A fresh map makes mutmut run every mutant of the
    module again (the lock's take about 25 minutes); a kept one, only new code's and
    survivors. The module's tests are its selected test files and every helper they may
    import (any file under tests/ not named test_*: conftest, harnesses, plugins)."""
    selected = {destination / test for test in module.tests}
    tests = sorted(
        test
        for test in (destination / "tests").rglob("*.py")
        if test in selected or not test.name.startswith("test_")
    )
    digest = hashlib.sha256()
    for test in tests:
        digest.update(str(test.relative_to(destination)).encode() + b"\0" + test.read_bytes())
    recorded = destination / "mutants" / "ccm-tests-digest"
    if not recorded.exists() or recorded.read_text() != digest.hexdigest():
        (destination / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    recorded.parent.mkdir(exist_ok=True)
    recorded.write_text(digest.hexdigest())


def statuses(destination: Path) -> dict[str, str]:
    """Every mutant's status, from ``mutmut results --all true``."""
    found = {}
    if not (destination / "mutants").is_dir():
        return found
    for line in mutmut(destination, "results", "--all", "true").splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name:
            found[name] = status
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", choices=[*MODULES, []], metavar="module")
    parser.add_argument("--dry-run", action="store_true", help="generate mutants only")
    parser.add_argument("--no-diff", action="store_true", help="list survivors by name")
    parser.add_argument("--list", action="store_true", help="show the modules and exit")
    parser.add_argument("--max-children", type=int, default=2, help="parallel workers")
    parser.add_argument(
        "--keep-map",
        action="store_true",
        help="keep the test map although tests changed (while writing tests: only earlier "
        "survivors run again, against the old tests plus new ones; measure without it)",
    )
    options = parser.parse_args()
    if options.list:
        for name, module in MODULES.items():
            print(f"{name:<10} {' '.join(module.paths):<28} {' '.join(module.tests)}")
        return
    chosen = options.modules or list(MODULES)

    table = []
    for name in chosen:
        module = MODULES[name]
        destination = SCRATCH / name
        destination.mkdir(parents=True, exist_ok=True)
        copy_tree(destination)
        configure(destination, module)
        print(f"== {name}: {' '.join(module.paths)} with {' '.join(module.tests)}", flush=True)
        if options.dry_run:
            dry_run(destination, name)
            continue
        log = destination / "run.log"
        log.write_text("")
        print(f"   mutmut's output: {log}", flush=True)
        children = ("--max-children", str(options.max_children))
        earlier = [m for m, status in statuses(destination).items() if status in NOT_KILLED]
        if not options.keep_map:
            keep_test_map(destination, module)
        mutmut(destination, "run", *children, log=log)  # new and changed code
        now = statuses(destination)
        earlier = [m for m in earlier if now.get(m) in NOT_KILLED]  # still there, not killed
        if earlier:  # survivors of an earlier run: the tests may have changed since
            mutmut(destination, "run", *children, *earlier, log=log)
        found = statuses(destination)
        killed = [m for m, status in found.items() if status in KILLED]
        left = {m: status for m, status in found.items() if status not in KILLED}
        table.append((name, len(killed), len(found), left, destination))

    if not table:
        return
    print("\nmodule       killed / total   equivalent   killed / non-equivalent")
    for name, killed, total, left, _ in table:
        equivalent = sum(1 for mutant in left if mutant in EQUIVALENT)
        rest = total - equivalent
        rate = 100 * killed / rest if rest else 100.0
        print(f"{name:<12} {killed:>6} / {total:<6} {equivalent:>6}       {rate:5.1f} %")
    for name, _, _, left, destination in table:
        if not left:
            continue
        judged = {m: EQUIVALENT[m] for m in left if m in EQUIVALENT}
        print(f"\n-- {name}: {len(left)} not killed, {len(judged)} judged equivalent")
        for mutant, why in sorted(judged.items()):
            print(f"{mutant}: equivalent: {why}")
        for mutant, status in sorted(left.items()):
            if mutant in judged:
                continue
            print(f"{mutant}: {status}")
            if not options.no_diff:
                diff = mutmut(destination, "show", mutant)
                print("\n".join(diff.splitlines()[1:]))


def dry_run(destination: Path, name: str) -> None:
    """Generate the mutants the way ``mutmut run`` does, and count them; run no test."""
    code = (
        "import mutmut.__main__ as m\n"
        "from mutmut.configuration import config\n"
        "m.set_mutant_under_test('mutant_generation')\n"
        "m.copy_src_dir(); m.copy_also_copy_files(); m.setup_source_paths()\n"
        "m.store_lines_covered_by_tests()\n"
        "stats = m.create_mutants(2)\n"
        "print(stats)\n"
    )
    result = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", code],
        cwd=destination,
        env={**os.environ, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        sys.exit(f"mutant generation failed:\n{result.stdout}{result.stderr}")
    counts: dict[str, int] = {}
    for path in (destination / "mutants").rglob("*.meta"):
        data = json.loads(path.read_text())
        source = str(path.relative_to(destination / "mutants"))[: -len(".meta")]
        counts[source] = len(data.get("exit_code_by_key", {}))
    for source, count in sorted(counts.items()):
        if count:
            print(f"{name}: {source}: {count} mutants")


if __name__ == "__main__":
    main()
