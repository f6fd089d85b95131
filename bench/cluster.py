#!/usr/bin/env python3
"""Several ohd nodes over one PostgreSQL (issue 15), measured in one run:

  delivery   the time from a writer's send to each client's receipt, 100 clients, paced writer:
             one node on SQLite (the baseline), one node on PostgreSQL, and the writer on one
             node with the clients on another (cross-node, through LISTEN/NOTIFY and the store)
  fanout     3 nodes x 1,000 clients (3,000 in all) in one conversation, a writer on the first
  failover   20 kills (-9) of a conversation's owner: from the kill, and from its lease's lapse
             (by the database's clock), to another node holding the lease

Usage: bench/cluster.py [--quick]   (after `cargo build --release -p ohd -p ohd-bench`)
The PostgreSQL server is OHD_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test);
a database is made for the run and dropped after.
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OHD = os.path.join(ROOT, "target/release/ohd")
BENCH = os.path.join(ROOT, "target/release/ohd-bench")
SERVER = os.environ.get("OHD_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
QUICK = "--quick" in sys.argv
TTL_MS = 2000


def with_database(url, name):
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}/{name}"


def psql(url, sql):
    return subprocess.run(["psql", url, "-Atc", sql], check=True, capture_output=True, text=True).stdout.strip()


class Node:
    def __init__(self, work, name, database_url=None, agent=False, shared=None):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)
        config = os.path.join(self.dir, "config.toml")
        with open(config, "w") as f:
            f.write("[server]\nmax_payload_bytes = 4194304\n")
            if shared:
                f.write(f'[store]\nworkspaces_dir = "{shared}"\n')
            f.write(f"[cluster]\nlease_ttl_ms = {TTL_MS}\n")
        env = dict(os.environ, RUST_LOG="warn")
        env.pop("OHD_DATABASE_URL", None)
        if database_url:
            env["OHD_DATABASE_URL"] = database_url
        args = [OHD, "serve", "--port", "0", "--data-dir", self.dir, "--config", config]
        if not agent:
            args.append("--no-agent")
        self.log = open(os.path.join(self.dir, "ohd.log"), "w")
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("ohd listening on "), line
        self.url = line.strip().removeprefix("ohd listening on ")
        self.port = self.url.rsplit(":", 1)[1]

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)


def fanout(writer, clients_on, clients, events, rate, label):
    args = [BENCH, "fanout", "--url", writer.url, "--label", label, "--clients", str(clients),
            "--events", str(events), "--pid", str(writer.proc.pid)]
    if rate:
        args += ["--rate", str(rate)]
    args += ["--client-urls", ",".join(n.url for n in clients_on)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    name = f"ohd_cluster_bench_{uuid.uuid4().hex[:12]}"
    psql(SERVER, f'CREATE DATABASE "{name}"')
    url = with_database(SERVER, name)
    work = tempfile.mkdtemp(prefix="ohd-cluster-bench-")
    nodes = []
    results = {}
    try:
        # Delivery latency: 100 clients, a paced writer, so that latency is not queueing.
        events, rate = (1000, 200) if QUICK else (4000, 200)
        sqlite = Node(work, "sqlite")
        nodes.append(sqlite)
        n1, n2, n3 = (Node(work, f"pg{i}", url) for i in (1, 2, 3))
        nodes += [n1, n2, n3]
        results["delivery"] = {
            "one node, SQLite": fanout(sqlite, [sqlite], 100, events, rate, "sqlite"),
            "one node, PostgreSQL": fanout(n1, [n1], 100, events, rate, "pg-same-node"),
            "writer and clients on two nodes": fanout(n1, [n2], 100, events, rate, "pg-cross-node"),
        }
        # Fan-out: 1,000 clients on each of three nodes, the writer as fast as they keep up.
        per_node = 300 if QUICK else 1000
        results["fanout"] = {
            "3 nodes": fanout(n1, [n1, n2, n3], 3 * per_node, 500 if QUICK else 2000, 0, "3-nodes"),
            "1 node": fanout(n1, [n1], per_node, 500 if QUICK else 2000, 0, "1-node"),
        }
        for n in (sqlite, n1, n2, n3):
            n.stop()
        nodes.clear()

        # Failover: three nodes with agents (no model is needed for an agent to hold its lease).
        shared = os.path.join(work, "workspaces")
        live = [Node(work, f"f{i}", url, agent=True, shared=shared) for i in range(3)]
        nodes += live
        created = subprocess.run(["curl", "-s", "-XPOST", f"{live[0].url}/api/conversations",
                                  "-H", "content-type: application/json", "-d", "{}"],
                                 check=True, capture_output=True, text=True).stdout
        conversation = json.loads(created)["conversation_id"]
        kills = 5 if QUICK else 20
        from_kill, from_lapse = [], []
        spawned = 3
        for _ in range(kills):
            deadline = time.time() + 30
            while True:
                row = psql(url, f"select node, token from leases where conversation_id = '{conversation}' and expires_at > clock_timestamp()")
                if row:
                    break
                assert time.time() < deadline, "no owner"
                time.sleep(0.05)
            node_name, token = row.split("|")
            port = node_name.split("/")[0].rsplit(":", 1)[1]
            owner = next(n for n in live if n.port == port)
            owner.stop(signal.SIGKILL)
            killed = time.time()
            lapse = psql(url, f"select extract(epoch from expires_at) from leases where conversation_id = '{conversation}'")
            while True:
                row = psql(url, f"select token, extract(epoch from expires_at) - {TTL_MS / 1000} from leases where conversation_id = '{conversation}' and token > {token} and expires_at > clock_timestamp()")
                if row:
                    break
                assert time.time() - killed < 60, "no takeover"
                time.sleep(0.02)
            took = time.time() - killed
            granted = float(row.split("|")[1])
            from_kill.append(took)
            from_lapse.append(granted - float(lapse))
            live.remove(owner)
            spawned += 1
            replacement = Node(work, f"f{spawned}", url, agent=True, shared=shared)
            live.append(replacement)
            nodes.append(replacement)
        results["failover"] = {
            "kills": kills,
            "lease_ttl_ms": TTL_MS,
            "from_kill_s": {"p50": statistics.median(from_kill), "max": max(from_kill), "min": min(from_kill)},
            "from_lapse_s": {"p50": statistics.median(from_lapse), "max": max(from_lapse), "min": min(from_lapse)},
        }
    finally:
        for n in nodes:
            try:
                n.stop()
            except Exception:
                n.proc.kill()
        subprocess.run(["psql", SERVER, "-Atc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
