"""The write quorum (docs/REPLICATION.md, "Write quorum").

put/rm/mv on a server with write quorum W:
- fail before storing anything ("write quorum not available: k of N servers
  connected, W needed (nothing was written)") when fewer than W-1 peers pull
  from it;
- after the local commit, wait up to --quorum-timeout until W servers hold
  the record durably, else fail ("not acknowledged: stored on k of N servers,
  may still appear") while the record stays and replicates later.
`stat` reports "durable on: k of N servers".

Clusters are real processes on 127.0.0.1; every process is killed by PID at
teardown (the procs / make_server fixtures).
"""

import os
import re
import shutil
import signal
import time

import pytest

from conftest import (KiB, MiB, assert_fails, assert_served, cluster_report, describe, free_port,
                      make_file, run_server_once, wait_converged, wait_served)

CONVERGE = 60          # seconds allowed for a cluster to converge
DURABLE_RE = re.compile(r"durable on:\s*(\d+) of (\d+) servers")


def durable(server, remote):
    """(k, n) from the "durable on: k of N servers" line of `stat`."""
    cp = server.cli("stat", remote)
    m = DURABLE_RE.search(cp.stdout)
    assert m, (f"`stat {remote}` on {server.addr} has no line \"durable on: k of N servers\":"
               + describe(cp))
    return int(m.group(1)), int(m.group(2))


def wait_peers_gone(c, i, dead):
    """Server i's status shows every server of `dead` (indexes) disconnected."""
    for j in dead:
        c.wait_disconnected(i, j)


def write_version(path, i, mtime):
    """Version i of a small text file, with mtime `mtime` (seconds)."""
    path.write_bytes((f"version {i} of doc.txt\n" * (i + 3)).encode())
    ns = int(mtime) * 1_000_000_000
    os.utime(path, ns=(ns, ns))
    return path


# ---- an acknowledged write survives the loss of the server that took it ------

def test_acknowledged_put_survives_loss_of_taking_server(make_cluster, tmp_path):
    c = make_cluster(3, extra=("--write-quorum", "2"))
    src = make_file(tmp_path / "big.bin", 2 * MiB + 4321, seed=501)
    cp = c[0].put(src, "kept/big.bin", check=False)
    assert cp.returncode == 0, ("put with W=2 and all three servers up should succeed:"
                                + describe(cp) + "\n" + cluster_report(c.servers))

    # Acknowledged: at least one other server holds it durably.  Lose the
    # taking server and its disk right away.
    c[0].kill9()
    shutil.rmtree(c[0].data)

    for s in (c[1], c[2]):
        wait_served(s, "kept/big.bin", src, tmp_path, timeout=CONVERGE, others=[c[1], c[2]])


# ---- W = all with a peer frozen: not acknowledged, but it replicates later ----

def test_all_quorum_not_acknowledged_when_peer_stopped(make_cluster_each, tmp_path):
    c = make_cluster_each(3, each={0: ("--write-quorum", "all", "--quorum-timeout", "3")})
    src = make_file(tmp_path / "f.bin", 100 * KiB, seed=511)
    pid2 = c[2].proc.pid
    os.kill(pid2, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        cp = c[0].put(src, "late/f.bin", check=False)
        took = time.monotonic() - t0
        err = assert_fails(cp, 1, words=("not acknowledged",))
        assert "not acknowledged: stored on 2 of 3 servers" in err, (
            "with W=all and server 2 stopped (SIGSTOP), the put should be stored on server 0 and "
            "acknowledged by server 1 only:" + describe(cp) + "\n--- server 0 log ---\n" + c[0].log())
        assert "may still appear" in err, describe(cp)
        assert took < 25, f"put with --quorum-timeout 3 took {took:.1f} s:" + describe(cp)
        # The record stays on the taking server.
        assert "late/f.bin" in c[0].ls(), (
            "after \"not acknowledged\", the record should stay on the taking server; "
            "ls on server 0 does not list it\n" + cluster_report(c.servers[:2]))
    finally:
        os.kill(pid2, signal.SIGCONT)

    wait_converged(c.servers, CONVERGE)
    for s in c:
        assert_served(s, "late/f.bin", src, tmp_path)


# ---- quorum not available: nothing is written -------------------------------

def test_quorum_unavailable_fails_before_writing(make_cluster, tmp_path):
    # Default W (majority: 2 of 3); a short --quorum-timeout only so that a
    # put wrongly let through fails in seconds rather than 30.
    c = make_cluster(3, extra=("--quorum-timeout", "5"))
    keep = make_file(tmp_path / "keep.bin", 3 * KiB, seed=521)
    c[0].put(keep, "keep.bin")
    wait_converged(c.servers, CONVERGE)

    new = make_file(tmp_path / "new.bin", 20 * KiB, seed=522)
    killed = time.monotonic()
    c[1].kill9()
    c[2].kill9()
    wait_peers_gone(c, 0, (1, 2))

    t0 = time.monotonic()
    cp = c[0].put(new, "new.bin", check=False)
    took = time.monotonic() - t0
    listed = c[0].ls()
    where = (f"\n(put started {t0 - killed:.3f} s after kill -9 of servers 1 and 2, once server "
             f"0's status showed both disconnected; it took {took:.1f} s; ls on server 0 "
             f"afterwards: {listed})\n--- server 0 log ---\n{c[0].log()}")
    assert cp.returncode == 1 and "write quorum not available" in cp.stderr, (
        "with both peers killed (kill -9) and shown disconnected, put should be refused before "
        "storing anything:" + describe(cp) + where)
    err = assert_fails(cp, 1, words=("write quorum not available",))
    assert "write quorum not available: 1 of 3 servers connected, 2 needed" in err, \
        "expected the quorum count in the message:" + describe(cp) + where
    assert "nothing was written" in err, describe(cp)
    assert "new.bin" not in listed, (f"put failed with \"nothing was written\", yet ls on server 0 "
                                     f"lists new.bin: {listed}\n--- server 0 log ---\n{c[0].log()}")

    for args in (("rm", "keep.bin"), ("mv", "keep.bin", "moved.bin")):
        cp = c[0].cli(*args, check=False)
        err = assert_fails(cp, 1, words=("write quorum not available",))
        assert "nothing was written" in err, describe(cp) + "\n--- server 0 log ---\n" + c[0].log()
    listed = c[0].ls()
    assert "keep.bin" in listed and "moved.bin" not in listed, (
        f"rm and mv were refused, yet ls on server 0 shows {listed} (expected keep.bin, "
        f"no moved.bin)\n--- server 0 log ---\n{c[0].log()}")
    assert_served(c[0], "keep.bin", keep, tmp_path)


# ---- W = 1: succeeds alone, replicates when the peers come back ---------------

def test_quorum_one_succeeds_and_replicates_later(make_cluster_each, tmp_path):
    c = make_cluster_each(3, each={0: ("--write-quorum", "1")})
    c[1].kill9()
    c[2].kill9()
    wait_peers_gone(c, 0, (1, 2))

    src = make_file(tmp_path / "alone.bin", 300 * KiB + 17, seed=531)
    cp = c[0].put(src, "alone/a.bin", check=False)
    assert cp.returncode == 0, ("put with --write-quorum 1 and both peers down should succeed:"
                                + describe(cp) + "\n--- server 0 log ---\n" + c[0].log())
    k, n = durable(c[0], "alone/a.bin")
    assert (k, n) == (1, 3), f"with both peers down, stat should say durable on 1 of 3, got {k} of {n}"

    c[1].start()
    c[2].start()
    wait_converged(c.servers, CONVERGE)
    for s in (c[1], c[2]):
        assert_served(s, "alone/a.bin", src, tmp_path)


# ---- stat: durable copies -----------------------------------------------------

def test_stat_reports_durable_copies(make_cluster, tmp_path):
    c = make_cluster(3)
    src = make_file(tmp_path / "s.bin", 40 * KiB, seed=541)
    c[0].put(src, "s.bin")
    k, n = durable(c[0], "s.bin")
    assert n == 3 and k >= 2, f"right after an acknowledged put (W=2): durable on {k} of {n}"
    wait_converged(c.servers, CONVERGE)
    cp = c[0].cli("stat", "s.bin")
    assert "durable on: 3 of 3 servers" in cp.stdout, (
        "after convergence, stat on server 0 should say \"durable on: 3 of 3 servers\":"
        + describe(cp) + "\n" + cluster_report(c.servers))


# ---- one user writing through two servers in turn: no conflict ----------------

def test_sequential_writes_through_two_servers_do_not_conflict(make_cluster, tmp_path):
    c = make_cluster(3)
    base = 1_767_225_600   # 2026-01-01 00:00:00 UTC
    local = tmp_path / "doc.txt"
    last = None
    for i in range(10):
        via = c[i % 2]
        write_version(local, i, base + 60 * i)
        cp = via.put(local, "doc.txt", check=False)
        assert cp.returncode == 0, (f"put of version {i} through {via.addr} failed:" + describe(cp)
                                    + "\n" + cluster_report(c.servers))
        last = tmp_path / "last.txt"
        shutil.copyfile(local, last)

    wait_converged(c.servers, CONVERGE)
    for s in c:
        paths = s.ls()
        stray = [p for p in paths if "sync-conflict" in p]
        assert not stray, (f"writes through servers 0 and 1 in turn, each acknowledged before the "
                           f"next, made conflict copies on {s.addr}: {stray}\n"
                           + cluster_report(c.servers))
        assert paths == ["doc.txt"], f"ls on {s.addr}: {paths}, expected only doc.txt"
        assert_served(s, "doc.txt", last, tmp_path)


# ---- bad --write-quorum -------------------------------------------------------

@pytest.mark.parametrize("value", ["5", "bogus"])
def test_bad_write_quorum_refused_at_start(ca, tmp_path, value):
    peers = ["--peer", f"127.0.0.1:{free_port()}", "--peer", f"127.0.0.1:{free_port()}"]
    cp = run_server_once(tmp_path / "data", ca, extra=peers + ["--write-quorum", value])
    assert cp.returncode == 2, (f"--write-quorum {value} with two --peer flags (N=3) should be "
                                f"refused with exit 2:" + describe(cp))
    assert "--write-quorum" in cp.stderr, ("the message should name --write-quorum:" + describe(cp))
