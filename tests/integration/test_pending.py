"""Pending records (issue 3, docs/REPLICATION.md "Pending records"): a record
received from a server that cannot supply its tree is parked — stored in the
same transaction that moves the cursor — and applied once its tree comes
from ANY server.  The link it came through is not held up by it, and the
server that parked it does not count as holding it for the write quorum.

Real servers on 127.0.0.1; server 2 reaches server 0 through a forwarder the
test blocks; the missing tree is a real corrupt byte in server 1's segment
file (server 1 then answers MISSING for that chunk, as it does for any chunk
that fails verification)."""

import json
import time

from conftest import MiB, assert_served, describe, make_file, run_cli
from test_scrub import flip_byte_in_chunk_data


def self_status(server):
    cp = run_cli("status", "--json", server=server, tls=server.tls, check=False, timeout=30)
    assert cp.returncode in (0, 1), describe(cp)
    for e in json.loads(cp.stdout)["servers"]:
        if e.get("self"):
            return e
    raise AssertionError("status --json lists no entry for the server itself:" + describe(cp))


def wait_for(what, pred, timeout, report):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s\n{report()}")


def durable_of(server, path):
    """`stat PATH` on server: (k, n) from "durable on: k of n servers"."""
    out = server.cli("stat", path).stdout
    for line in out.splitlines():
        if line.startswith("durable on:"):
            words = line.split()
            return int(words[2]), int(words[4])
    raise AssertionError(f"stat {path} printed no 'durable on:' line:\n{out}")


def test_parked_record_comes_from_another_server(make_cluster, tmp_path):
    c = make_cluster(3, via_forwarders=True)
    report = lambda: "\n".join(f"--- server {i} log ---\n{s.log()}" for i, s in enumerate(c))

    # F lands on 0 and 1 only (W=2), then 1's copy rots: 1 still lists F in
    # its log but can no longer send one of its chunks.
    c[2].stop()
    src = make_file(tmp_path / "f.bin", 3 * MiB + 777, seed=71)
    c[0].put(src, "f.bin")
    c[1].stop()
    flip_byte_in_chunk_data(c[1].data)
    c[1].start()

    # Server 2 comes back able to reach server 1 only.
    c.block(2, 0)
    c[2].start()
    wait_for("server 2 did not park f.bin (status shows 1 pending record of its own)",
             lambda: self_status(c[2])["pending_records"] == 1, 30, report)
    assert "parked" in c[2].log(), "server 2's log does not say what it parked:\n" + c[2].log()

    # The link from 1 is not held up by the parked record: what 1 takes next
    # reaches server 2 through it.
    later = make_file(tmp_path / "later.txt", 1000, seed=72)
    c[1].put(later, "later.txt")
    wait_for("later.txt (written after f.bin on server 1) did not reach server 2 past the parked "
             "record", lambda: "later.txt" in c[2].ls(), 30, report)
    assert_served(c[2], "later.txt", later, tmp_path)
    cp = c[2].cli("get", "f.bin", tmp_path / "nope", check=False)
    assert cp.returncode != 0, "server 2 served f.bin before its tree arrived:" + describe(cp)

    # A parked record is not an acknowledgement: for server 1, server 2 holds
    # neither f.bin nor (its acknowledgement stops below the parked record)
    # anything after it.
    assert durable_of(c[1], "f.bin") == (2, 3), c[1].cli("stat", "f.bin").stdout
    assert durable_of(c[1], "later.txt") == (2, 3), c[1].cli("stat", "later.txt").stdout

    # Parked records are durable.
    c[2].restart()
    wait_for("server 2 forgot its parked record across a restart",
             lambda: self_status(c[2])["pending_records"] == 1, 20, report)

    # Server 0 becomes reachable: the tree comes from there, f.bin is
    # applied, and every server counts server 2 as holding everything.
    c.unblock(2, 0)
    c.wait_converged(timeout=60)
    assert self_status(c[2])["pending_records"] == 0
    assert_served(c[2], "f.bin", src, tmp_path)
    # (Server 2 says so with its next PULL to server 1: held at most 1 s
    # while it had records parked.)
    wait_for("server 1 does not count server 2 as holding f.bin and later.txt",
             lambda: durable_of(c[1], "f.bin") == (3, 3) and durable_of(c[1], "later.txt") == (3, 3), 5,
             report)
