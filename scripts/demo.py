"""The demo behind ``scripts/demo``: see that script for what it shows."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from acme_servers import PebbleServer, free_port  # noqa: E402
from serving_node import HttpResult, ServedNode, ServingError  # noqa: E402

from ccm.testing.etcd import EtcdServer  # noqa: E402
from ccm.testing.noderoot import logging_command, seed_root  # noqa: E402

CCM = str(Path(sys.executable).parent / "ccm")
NODES = ("web01", "web02", "mail01")
WEB = ["nginx", "php", "cron"]

SAMPLE: dict[str, list[dict[str, Any]]] = {
    # the Cluster API registers its nodes: two web nodes, one mail node
    "nodes": [
        # web01 orders and renews the certificates of the nginx group (ACME)
        {"id": 1, "hostname": "web01", "groups": WEB, "primary_for": ["nginx"]},
        {"id": 2, "hostname": "web02", "groups": WEB},
        {"id": 3, "hostname": "mail01", "groups": ["dovecot"]},
    ],
    "unix-users": [
        {"id": 1, "username": "alice", "email": "alice@example.com"},
        {"id": 2, "username": "bob"},
    ],
    "fpm-pools": [
        {
            "id": 1,
            "name": "alice",
            "unix_user_id": 1,
            "php_version": "8.2",
            "max_children": 8,
            "php_settings": {"memory_limit": "256M", "display_errors": False},
        },
    ],
    "virtual-hosts": [
        {
            "id": 1,
            "domain": "alice.example.com",
            "server_aliases": ["www.alice.example.com"],
            "unix_user_id": 1,
            "document_root": "/home/alice/www",
            "fpm_pool_id": 1,
        },
        {
            "id": 2,
            "domain": "bob.example.net",
            "unix_user_id": 2,
            "document_root": "/home/bob/public",
        },
    ],
    "crons": [
        {
            "id": 1,
            "unix_user_id": 1,
            "name": "backup",
            "schedule": "30 3 * * *",
            "command": "/home/alice/bin/backup --quiet",
            "email_address": "ops@example.com",
            "node_id": 1,  # pinned: runs once, on web01
        },
        {
            "id": 2,
            "unix_user_id": 1,
            "name": "cache-warm",
            "schedule": "*/15 * * * *",
            "command": "/home/alice/bin/warm-cache",
        },
    ],
    "mail-domains": [{"id": 1, "domain": "example.com", "unix_user_id": 1}],
    "mail-accounts": [
        {
            "id": 1,
            "local_part": "alice",
            "mail_domain_id": 1,
            "password_hash": "{SHA512-CRYPT}$6$4fUKYmQwsmC.UTE7$lsMv1N2qqFLA36O6purIBl3q8UBBRsf4"
            "yaxaal88oXKdBBEAYjkBsuAsGw5Vd2xNx79dL2WwsV2eqTyAGQSnN.",
            "quota_mib": 1024,
        },
    ],
}


#: alice asks for a certificate for her site's names (HTTP-01 from pebble)
MANAGER = {
    "id": 1,
    "common_names": ["alice.example.com", "www.alice.example.com"],
    "unix_user_id": 1,
}
#: where each web node's daemon answers ACME challenges (nginx passes the path there)
RESPONDER_PORTS = {node: free_port() for node in NODES[:2]}


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def acme_settings(node: str, pebble: PebbleServer) -> str:
    """The ``[acme]`` table: pebble as the ACME directory, and this node's responder."""
    port = RESPONDER_PORTS.get(node)
    return (
        f"[acme]\ndirectory_url = {json.dumps(pebble.directory_url)}\n"
        f'ca_file = {json.dumps(str(pebble.ca_file))}\nemail = "hostmaster@example.com"\n'
        f"responder_listen = {json.dumps(f'127.0.0.1:{port}' if port else '')}\n"
    )


def write_settings(base: Path, node: str, endpoint: str, pebble: PebbleServer) -> Path:
    root = seed_root(base / node / "root")
    (root / "etc/ssl").mkdir(parents=True, exist_ok=True)
    record = lambda what: json.dumps(logging_command(root, what))  # noqa: E731
    # nginx -t for real, against a main config that includes this node's vhosts
    nginx_conf = root / "etc/nginx/nginx.conf"
    nginx_conf.parent.mkdir(parents=True, exist_ok=True)
    temp = root / "var/lib/nginx"
    temp.mkdir(parents=True, exist_ok=True)
    nginx_conf.write_text(
        f"pid {root}/nginx.pid;\nerror_log {root}/nginx-error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {temp}/body;\n"
        f"  proxy_temp_path {temp}/proxy;\n  fastcgi_temp_path {temp}/fastcgi;\n"
        f"  uwsgi_temp_path {temp}/uwsgi;\n  scgi_temp_path {temp}/scgi;\n"
        f"  include {root}/etc/nginx/sites-enabled/*.conf;\n}}\n"
    )
    # The TLS vhosts name /etc/ssl/ccm/<id>/… (the real path on a node); here those files
    # are under the root, so nginx -t runs in a private mount namespace with the root's
    # etc/ssl over /etc/ssl (the machine's own is never touched).
    nginx_t = f'nginx -t -q -p "$1/" -c "{nginx_conf}" -e "$1/nginx-error.log"'
    nginx_check = [
        "unshare", "--mount", "--propagation", "private", "--",
        "sh", "-c", f'mount --bind "$1/etc/ssl" /etc/ssl && exec {nginx_t}', "sh", str(root),
    ]  # fmt: skip
    config = base / node / "ccm.toml"
    config.write_text(
        f'node = "{node}"\nroot = "{root}"\nreconcile_interval = 0\nlog_format = "json"\n'
        f'[etcd]\nendpoints = ["{endpoint}"]\n'
        f"[debounce]\nquiet = 1\nmax_wait = 5\n[lock]\nttl = 5\n"
        + (f'[metrics]\nlisten = "127.0.0.1:{METRICS_PORT}"\n' if node == NODES[0] else "")
        + f"[commands]\n"
        f"reload_unit = {record('reload {unit}')}\n"
        f"restart_unit = {record('restart {unit}')}\n"
        f"nginx_check = {json.dumps(nginx_check)}\n"
        f"php_fpm_check = {record('php-fpm{version} -t (skipped in the demo)')}\n"
        f"[probes]\n"
        f"nginx_probe = {record('probe nginx (no nginx runs in the demo roots)')}\n"
        f"php_fpm_probe = {record('probe php-fpm {socket}')}\n" + acme_settings(node, pebble)
    )
    return config


def ccm(config: Path, *args: str, stdin: str | None = None, check: bool = True) -> str:
    done = subprocess.run(
        [CCM, "--config", str(config), *args],
        input=stdin,
        text=True,
        capture_output=True,
        check=False,
    )
    if check and done.returncode not in (0, 2):
        raise SystemExit(f"ccm {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout + done.stderr


def wait_applied(config: Path, deadline: float) -> dict[str, Any]:
    last_seen = ""
    while True:
        status = json.loads(ccm(config, "status", "--json"))
        line = (
            " | ".join(
                f"{n['node']}: rev {n['applied_revision']}{' (behind)' if n['behind'] else ''}"
                for n in status["nodes"]
            )
            + f" | lock: {status['lock']['holder'] or 'free'}"
        )
        if line != last_seen:
            print(f"  {time.strftime('%H:%M:%S')}  {line}", flush=True)
            last_seen = line
        nodes = status["nodes"]
        if len(nodes) == len(NODES) and not any(n["behind"] for n in nodes):
            return status
        if time.monotonic() > deadline:
            raise SystemExit("the cluster did not converge in time; see the daemon logs")
        time.sleep(0.3)


# What alice uploads to her document root: a front controller, as WordPress or Laravel has.
ALICE_INDEX = """<?php
$user = posix_getpwuid(posix_geteuid())["name"];
printf("Hello from %s's PHP %s (pool user: %s), you asked for %s\\n",
    $_SERVER["SERVER_NAME"], PHP_VERSION, $user, $_SERVER["REQUEST_URI"]);
"""


METRICS_PORT = free_port()


def metrics_lines(port: int) -> list[str]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    wanted = ("ccm_runs_total", "ccm_applied_revision", "ccm_halted", "ccm_revisions_behind")
    return [line for line in text.splitlines() if line.startswith(wanted)]


def served(root: Path, pebble: PebbleServer) -> ServedNode:
    """Real nginx + php-fpm 8.2 from this node's rendered files, in a private namespace,
    bridged to the host both ways: pebble's HTTP-01 port is this nginx's port 80, and the
    responder address the rendered files pass challenges to is this node's daemon."""
    uid = 20000 + 1  # accounts.uid_base + alice's id
    www = root / "home/alice/www"
    www.mkdir(exist_ok=True)
    (www / "index.php").write_text(ALICE_INDEX)
    for path in (www, www / "index.php"):
        os.chown(path, uid, uid)
    node = ServedNode(root)
    try:
        node.start()
        port = RESPONDER_PORTS[NODES[1]]
        node.forward_out(port, ("127.0.0.1", port))
        node.forward_into(pebble.http_port, 80)
    except ServingError as error:
        node.close()
        raise SystemExit(f"could not serve the node's root: {error}") from error
    return node


def curl(node: ServedNode, host: str, path: str = "/", **options: Any) -> HttpResult:
    result = node.get(host, path, **options)
    scheme = "https" if options.get("https") else "http"
    trust = "--cacert pebble-root.pem " if options.get("ca_file") else ""
    print(f"  $ curl {trust}{scheme}://{host}{path}")
    return result


def show_http(node: ServedNode) -> None:
    for host, path in [
        ("alice.example.com", "/"),
        ("www.alice.example.com", "/blog/hello-world?page=2"),
        ("unknown.example.org", "/"),
    ]:
        result = curl(node, host, path)
        print(f"    {result.body.strip() if result.status == 200 else result}")


def wait_certificate(config: Path, deadline: float) -> int:
    """The id of the certificate alice's manager holds, once issued and stored (``ccm
    status``: the id is reserved before the order, ``not_after`` comes with the result)."""
    while True:
        status = json.loads(ccm(config, "status", "--json"))
        for entry in status["certificate_managers"]:
            if entry["manager"] == MANAGER["id"] and entry["not_after"]:
                return int(entry["certificate_id"])
            if entry["manager"] == MANAGER["id"] and entry["failures"]:
                raise SystemExit(f"the order failed: {entry['last_error']}")
        if time.monotonic() > deadline:
            raise SystemExit("no certificate in time; see the daemon logs")
        time.sleep(0.3)


def show_https(node: ServedNode, config: Path, pebble: PebbleServer, base: Path) -> None:
    """alice's certificate from pebble, through the cluster, to a verified HTTPS GET."""
    say(
        "alice asks for a certificate (certificate-managers); web01, primary_for nginx, "
        "orders it from pebble"
    )
    print(
        "  "
        + ccm(
            config, "objects", "put", "certificate-managers", "-", stdin=json.dumps(MANAGER)
        ).strip()
    )
    certificate_id = wait_certificate(config, time.monotonic() + 90)
    challenges = [
        line for line in node.nginx_access_log().splitlines() if "/acme-challenge/" in line
    ]
    print(
        f"  pebble's HTTP-01 validations reached {NODES[1]}'s nginx, which passed them to its "
        f"daemon's responder (answers from etcd): {len(challenges)} requests, e.g."
    )
    print("\n".join(f"    {line}" for line in challenges[:1]))
    status = ccm(config, "status")
    print("  " + status[status.index("CERTIFICATE MANAGERS") :].strip().replace("\n", "\n  "))
    say("the rollout installs it on the web nodes; alice's vhost takes it (force_https)")
    vhost = dict(SAMPLE["virtual-hosts"][0], certificate_id=certificate_id, force_https=True)
    ccm(config, "objects", "put", "virtual-hosts", "-", stdin=json.dumps(vhost))
    print("  " + ccm(config, "rollout", "--wait", "--timeout", "60").strip().replace("\n", "\n  "))
    for name in ("fullchain.pem", "privkey.pem"):
        path = node.root / f"etc/ssl/ccm/{certificate_id}/{name}"
        print(f"  {NODES[1]}: /etc/ssl/ccm/{certificate_id}/{name} {path.stat().st_mode & 0o777:o}")
    node.restart_nginx()  # the demo's reload commands only log: the served nginx restarts
    say(f"HTTPS from {NODES[1]}'s real nginx, verified against pebble's root only")
    ca_file = base / "pebble-root.pem"
    ca_file.write_bytes(pebble.root_pem())
    result = curl(
        node, "alice.example.com", "/", https=True, ca_file=ca_file, options=["--verbose"]
    )
    issuer = re.search(r"^\*\s+issuer: (.*)$", result.error, re.MULTILINE)
    print(
        f"    status {result.status} (HTTP/{result.http_version}), "
        f"issuer {issuer.group(1) if issuer else '?'}"
    )
    print(f"    {result.body.strip() if result.status == 200 else result}")
    if result.status != 200:
        raise SystemExit("the HTTPS request failed")
    redirect = curl(node, "alice.example.com", "/blog/?page=2")
    print(f"    {redirect.status} Location: {redirect.location}")


def main() -> None:
    parser = argparse.ArgumentParser(description="ccm demo cluster")
    parser.add_argument("--keep", action="store_true", help="keep running until Ctrl-C")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    daemons: list[subprocess.Popen[bytes]] = []
    with ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ccm-demo-")))
        etcd = stack.enter_context(EtcdServer())
        pebble = PebbleServer(http_port=free_port())
        stack.callback(pebble.close)
        pebble.start()
        try:
            say(f"local etcd at {etcd.endpoint}; node roots under {base}")
            print(f"  pebble (Let's Encrypt's test ACME server) at {pebble.directory_url}")
            configs = {node: write_settings(base, node, etcd.endpoint, pebble) for node in NODES}
            for node, config in configs.items():
                log = open(base / node / "daemon.log", "wb")  # noqa: SIM115
                daemons.append(
                    subprocess.Popen(
                        [CCM, "--config", str(config), "daemon"], stderr=log, stdout=log
                    )
                )
            first = configs[NODES[0]]
            wait_applied(first, time.monotonic() + 60)
            say("halt the cluster, so the rollout can be previewed first (ccm halt)")
            print("  " + ccm(first, "halt", "--reason", "demo: preview before rollout").strip())
            say("the Cluster API writes objects (ccm objects put): validated, one txn each")
            for type_name, objects in SAMPLE.items():
                print(
                    "  "
                    + ccm(
                        first, "objects", "put", type_name, "-", stdin=json.dumps(objects)
                    ).strip()
                )
            say("an invalid object is refused and nothing is stored")
            bad = {
                "id": 9,
                "unix_user_id": 1,
                "name": "evil",
                "schedule": "* * * * *",
                "command": "echo hi\nrm -rf /",
            }
            print(
                "  "
                + ccm(first, "objects", "put", "crons", "-", stdin=json.dumps(bad), check=False)
                .strip()
                .replace("\n", "\n  ")
            )
            for node in (NODES[1], NODES[2]):
                say(f"ccm diff --node {node}, from {NODES[0]}: its groups, its placement")
                preview = ccm(first, "diff", "--node", node)
                print(
                    "\n".join(
                        f"  {line}"
                        for line in preview.splitlines()
                        if line.startswith(
                            ("# ", "~ ", "! ", "+ account", "+ file", "- account", "- file")
                        )
                    )
                )
            say("ccm resume: the rollout goes node by node under the cluster lock")
            print("  " + ccm(first, "resume").strip())
            status = wait_applied(first, time.monotonic() + 60)
            runs = sorted(
                (n["last_run"]["started"], n["last_run"]["finished"], n["node"])
                for n in status["nodes"]
            )
            for started, finished, node in runs:
                print(f"  {node}: applied {started[11:23]} .. {finished[11:23]}")
            print(ccm(first, "status"))
            say("each node got its part: web nodes the sites, pools and crons; mail01 the mail")
            for node in NODES:
                node_root = base / node / "root"
                written = [
                    f"/{path.relative_to(node_root)}"
                    for path in sorted(node_root.rglob("*"))
                    if path.is_file()
                    and any(
                        part in str(path)
                        for part in ("sites-enabled", "pool.d", "crontabs", "dovecot/users")
                    )
                ]
                print(f"  {node}: {', '.join(written) or 'nothing'}")
                crontab = node_root / "var/spool/cron/crontabs/alice"
                if crontab.exists():
                    jobs = [
                        line
                        for line in crontab.read_text().splitlines()
                        if line and line[0] in "*@0123456789"
                    ]
                    print(f"    alice's crontab: {jobs}")
            root = base / NODES[1] / "root"
            vhost = root / "etc/nginx/sites-enabled/alice.example.com.conf"
            print("\n" + "\n".join(vhost.read_text().splitlines()[:12]) + "\n  …")
            passwd = (root / "etc/passwd").read_text().splitlines()
            print(f"\n  accounts made by useradd: {[e.split(':')[0] for e in passwd[-2:]]}")
            print(
                f"  reloads on {NODES[1]}: {(root / 'actions.log').read_text().split(chr(10))[:-1]}"
            )
            say(f"ccm diff on {NODES[1]}: nothing left to change")
            print(ccm(configs[NODES[1]], "diff"))
            say("one change: bob's vhost gets an alias; ccm diff shows it before the rollout")
            ccm(first, "halt", "--reason", "demo: preview before rollout")
            changed = dict(SAMPLE["virtual-hosts"][1], server_aliases=["www.bob.example.net"])
            ccm(first, "objects", "put", "virtual-hosts", "-", stdin=json.dumps(changed))
            print(ccm(configs[NODES[1]], "diff"))
            ccm(first, "resume")
            say("ccm rollout --wait: where the change is, until every live node has it")
            print(
                "  "
                + ccm(first, "rollout", "--wait", "--timeout", "60").strip().replace("\n", "\n  ")
            )
            say("ccm history: what the last runs did")
            print("  " + ccm(first, "history", "--limit", "3").strip().replace("\n", "\n  "))
            say(f"Prometheus metrics of {NODES[0]} (ccm_* at /metrics)")
            print("  " + "\n  ".join(metrics_lines(METRICS_PORT)))
            print(ccm(first, "status"))
            say(
                f"{NODES[1]} serves: real nginx + php-fpm 8.2 from its rendered files "
                "(private mount + network namespace; alice uploaded an index.php)"
            )
            node = served(root, pebble)
            stack.callback(node.close)
            show_http(node)
            show_https(node, first, pebble, base)
            if args.keep:
                say("cluster running; try: " + f"{CCM} --config {first} status   (Ctrl-C ends)")
                signal.pause()
        finally:
            for daemon in daemons:
                daemon.terminate()
            for daemon in daemons:
                try:
                    daemon.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    daemon.kill()
            say("stopped the daemons; then the served node, pebble and etcd")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
    os._exit(0)
