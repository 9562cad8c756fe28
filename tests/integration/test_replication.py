"""Server-to-server replication: every server pulls every peer's change log,
fetches the chunks it lacks and applies the records.

Clusters are real processes on 127.0.0.1 (`make_cluster` in conftest.py);
tests that cut links or count replication bytes put a Forwarder on every
(from, to) link.  Convergence is waited for with `status --wait`, never with
sleeps.
"""

import calendar
import json
import os
import shutil
import time

import pytest

from conftest import (KiB, MiB, assert_same_listing, assert_served, cluster_report, conflict_copies,
                      describe, make_file, run_cli, wait_converged)

CONVERGE = 60          # seconds allowed for a cluster to converge
STATUS_KEYS = ("node", "addr", "self", "connected", "head", "pending_records", "pending_bytes",
               "files", "bytes", "chunks", "chunk_bytes", "digest")


def write_bytes(path, data, mtime=None):
    """Write data to path; mtime (seconds since the epoch, UTC) sets atime and mtime."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        ns = int(mtime) * 1_000_000_000
        os.utime(path, ns=(ns, ns))
    return path


def utc(*fields):
    """Seconds since the epoch of a UTC date and time."""
    return calendar.timegm(fields)


def small_tree(root, seed):
    """A small directory: a few files, one nested; returns {relative path: local file}."""
    files = {
        "a.txt": make_file(root / "a.txt", 1000, seed=seed),
        "b.bin": make_file(root / "b.bin", 70 * KiB, seed=seed + 1),
        "sub/c.bin": make_file(root / "sub" / "c.bin", 5 * KiB, seed=seed + 2),
        "sub/deeper/d.bin": make_file(root / "sub" / "deeper" / "d.bin", 1, seed=seed + 3),
    }
    return files


def assert_everywhere(servers, files, tmp_path):
    """Every remote path of `files` ({remote: local}) is served byte-identical
    by every server."""
    for s in servers:
        for remote, local in files.items():
            assert_served(s, remote, local, tmp_path)


def assert_gone(servers, remote, tmp_path):
    for s in servers:
        cp = s.cli("get", remote, tmp_path / "gone.out", check=False)
        assert cp.returncode != 0, (f"{remote} was removed but {s.addr} still serves it:"
                                    + describe(cp) + "\n--- server log ---\n" + s.log())
        assert remote not in s.ls(), f"{remote} was removed but `ls` on {s.addr} lists it"


# ---- put, rm, mv -----------------------------------------------------------

def test_put_on_one_readable_from_the_others(make_cluster, tmp_path):
    c = make_cluster(3)
    big = make_file(tmp_path / "big.bin", 3 * MiB + 12345, seed=301)
    c[0].put(big, "data/big.bin")
    tree = small_tree(tmp_path / "tree", seed=310)
    c[0].put(tmp_path / "tree", "dir")
    files = {"data/big.bin": big}
    files.update({f"dir/{rel}": local for rel, local in tree.items()})

    wait_converged(c.servers, CONVERGE)
    assert_everywhere(c.servers[1:], files, tmp_path)
    listed = assert_same_listing(c.servers)
    assert sorted(listed) == sorted(files), f"ls after convergence: {sorted(listed)}, expected {sorted(files)}"


def test_rm_and_mv_replicate(make_cluster, tmp_path):
    c = make_cluster(3)
    keep = make_file(tmp_path / "keep.bin", 20 * KiB, seed=320)
    gone = make_file(tmp_path / "gone.bin", 3000, seed=321)
    moving = make_file(tmp_path / "moving.bin", 150 * KiB, seed=322)
    small_tree(tmp_path / "tree", seed=323)
    c[0].put(keep, "keep.bin")
    c[0].put(gone, "gone.bin")
    c[0].put(moving, "old/moving.bin")
    c[0].put(tmp_path / "tree", "tree")
    wait_converged(c.servers, CONVERGE)
    assert "tree/sub/c.bin" in c[2].ls(), "the directory did not replicate before the rm/mv:\n" \
        + cluster_report(c.servers)

    # Each operation on a different server: rm, rm -r, mv.
    c[1].cli("rm", "gone.bin")
    c[2].cli("rm", "-r", "tree")
    c[0].cli("mv", "old/moving.bin", "new/moved.bin")
    wait_converged(c.servers, CONVERGE)

    listed = assert_same_listing(c.servers)
    assert sorted(listed) == ["keep.bin", "new/moved.bin"], (
        f"after rm gone.bin (on server 1), rm -r tree (on server 2) and mv old/moving.bin "
        f"new/moved.bin (on server 0), ls shows {sorted(listed)}; expected "
        f"['keep.bin', 'new/moved.bin'] on every server\n" + cluster_report(c.servers))
    assert_everywhere(c.servers, {"keep.bin": keep, "new/moved.bin": moving}, tmp_path)
    for path in ("gone.bin", "old/moving.bin", "tree/a.txt", "tree/sub/deeper/d.bin"):
        assert_gone(c.servers, path, tmp_path)


# ---- crash and catch-up ------------------------------------------------------

def test_killed_server_catches_up(make_cluster, tmp_path):
    c = make_cluster(3, via_forwarders=True)
    big = make_file(tmp_path / "big.bin", 4 * MiB, seed=330)
    c[0].put(big, "big/file.bin")
    wait_converged(c.servers, CONVERGE)

    c[2].kill9()
    # 20 new small files, half on each surviving server ...
    files = {}
    for k in range(20):
        local = make_file(tmp_path / "new" / f"f{k:02d}.bin", 1 * KiB + 97 * k, seed=340 + k)
        remote = f"new/f{k:02d}.bin"
        c[k % 2].put(local, remote)
        files[remote] = local
    # ... and 100 bytes inserted in the middle of the big file, on server 1.
    data = bytearray(big.read_bytes())
    data[len(data) // 2:len(data) // 2] = bytes(range(100))
    edited = tmp_path / "big-edited.bin"
    edited.write_bytes(data)
    c[1].put(edited, "big/file.bin")
    files["big/file.bin"] = edited

    c.reset_counts(2)
    c[2].start()
    wait_converged(c.servers, CONVERGE, via=c[2])
    received = c.received_by(2)
    fetched = sum(f.down for f in c.links_from(2).values())
    report = (f"server 2 received {received} bytes over the replication links during the catch-up "
              f"({fetched} of them on its own outgoing links): {c.link_counts(2)}")
    print(report)

    assert_everywhere([c[2]], files, tmp_path)
    assert_same_listing(c.servers)
    limit = 2 * MiB + 64 * KiB * 20
    assert received < limit, (
        f"catch-up after a restart should fetch about what changed (20 small files and one "
        f"edited chunk of a 4 MiB file), less than {limit} bytes; {report}\n"
        f"--- server 2 log ---\n{c[2].log()}")


def test_wiped_server_gets_full_copy(make_cluster, tmp_path):
    c = make_cluster(3)
    files = {"one/big.bin": make_file(tmp_path / "big.bin", 1 * MiB + 7, seed=350),
             "two/small.bin": make_file(tmp_path / "small.bin", 2 * KiB, seed=351)}
    tree = small_tree(tmp_path / "tree", seed=352)
    c[0].put(files["one/big.bin"], "one/big.bin")
    c[1].put(files["two/small.bin"], "two/small.bin")
    c[0].put(tmp_path / "tree", "tree")
    files.update({f"tree/{rel}": local for rel, local in tree.items()})
    wait_converged(c.servers, CONVERGE)

    assert c[2].stop() == 0, "server 2 did not shut down cleanly:\n" + c[2].log()
    shutil.rmtree(c[2].data)
    late = make_file(tmp_path / "late.bin", 30 * KiB, seed=353)
    c[1].put(late, "late.bin")
    files["late.bin"] = late

    c[2].start()
    wait_converged(c.servers, CONVERGE, via=c[2])
    assert_everywhere([c[2]], files, tmp_path)
    listed = assert_same_listing(c.servers)
    assert sorted(listed) == sorted(files), (
        f"the wiped server should hold a full copy; ls: {sorted(listed)}, expected {sorted(files)}")


# ---- partitions and conflicts ------------------------------------------------

@pytest.fixture
def pair(make_cluster):
    """Two servers linked through forwarders, write quorum 1."""
    return make_cluster(2, extra=("--write-quorum", "1"), via_forwarders=True)


def cut(c):
    """Partition the two servers of `pair` and wait until both notice."""
    c.block(0, 1)
    c.wait_disconnected(0, 1)
    c.wait_disconnected(1, 0)


def heal(c):
    c.heal()
    wait_converged(c.servers, CONVERGE)


def content_at(server, remote, tmp_path, tag):
    out = tmp_path / f"at-{server.port}-{tag}"
    server.get(remote, out)
    return out.read_bytes()


def test_partition_conflict(pair, tmp_path):
    c = pair
    base = write_bytes(tmp_path / "base.txt", b"base version\n", mtime=utc(2026, 1, 1, 8, 0, 0))
    c[0].put(base, "docs/a.txt")
    wait_converged(c.servers, CONVERGE)

    cut(c)
    older_t = utc(2026, 1, 2, 9, 30, 0)
    newer_t = older_t + 3600
    older = write_bytes(tmp_path / "side0" / "a.txt", b"written on server 0, older mtime\n" * 10,
                        mtime=older_t)
    newer = write_bytes(tmp_path / "side1" / "a.txt", b"written on server 1, newer mtime\n" * 12,
                        mtime=newer_t)
    c[0].put(older, "docs/a.txt")
    c[1].put(newer, "docs/a.txt")
    assert content_at(c[0], "docs/a.txt", tmp_path, "p0") == older.read_bytes(), \
        "the link was cut, yet server 0's own write is not what it serves"
    assert content_at(c[1], "docs/a.txt", tmp_path, "p1") == newer.read_bytes(), \
        "the link was cut, yet server 1's own write is not what it serves"

    heal(c)
    for s in c:
        got = content_at(s, "docs/a.txt", tmp_path, f"h{s.port}")
        assert got == newer.read_bytes(), (
            f"{s.addr} serves {got[:40]!r}... at docs/a.txt after healing; expected the write "
            f"with the newer mtime (server 1's) to win everywhere\n" + cluster_report(c.servers))
    listed = assert_same_listing(c.servers)
    copies = conflict_copies(listed, "docs/a.txt")
    assert len(copies) == 1, (
        f"expected exactly one conflict copy docs/a.sync-conflict-YYYYMMDD-HHMMSS-<16 hex>.txt "
        f"after healing; ls: {sorted(listed)}\n" + cluster_report(c.servers))
    name = copies[0]
    when = time.strftime("%Y%m%d-%H%M%S", time.gmtime(older_t))
    assert f".sync-conflict-{when}-" in name, (
        f"the conflict copy {name} should carry the loser's mtime (UTC) {when}")
    assert_everywhere(c.servers, {name: older, "docs/a.txt": newer}, tmp_path)
    stray = [p for p in listed if "sync-conflict" in p and p != name]
    assert not stray, f"unexpected extra conflict copies: {stray}"


def test_identical_concurrent_writes_merge(pair, tmp_path):
    c = pair
    base = write_bytes(tmp_path / "base.txt", b"base\n", mtime=utc(2026, 2, 1, 0, 0, 0))
    c[0].put(base, "docs/same.txt")
    wait_converged(c.servers, CONVERGE)

    cut(c)
    # The same bytes, mode and mtime on both sides: one existing path, one new.
    same = write_bytes(tmp_path / "same.txt", b"the very same content\n" * 50,
                       mtime=utc(2026, 2, 3, 4, 5, 6))
    fresh = write_bytes(tmp_path / "fresh.bin", os.urandom(40 * KiB), mtime=utc(2026, 2, 3, 4, 5, 7))
    for s in c:
        s.put(same, "docs/same.txt")
        s.put(fresh, "docs/fresh.bin")

    heal(c)
    listed = assert_same_listing(c.servers)
    assert sorted(listed) == ["docs/fresh.bin", "docs/same.txt"], (
        f"identical writes on both sides of a partition should merge without a conflict copy; "
        f"ls: {sorted(listed)}\n" + cluster_report(c.servers))
    assert_everywhere(c.servers, {"docs/same.txt": same, "docs/fresh.bin": fresh}, tmp_path)


def test_update_beats_concurrent_delete(pair, tmp_path):
    c = pair
    base = write_bytes(tmp_path / "base.txt", b"before the partition\n", mtime=utc(2026, 3, 1, 0, 0, 0))
    c[0].put(base, "docs/c.txt")
    wait_converged(c.servers, CONVERGE)

    cut(c)
    c[0].cli("rm", "docs/c.txt")
    # The update's mtime is old (before the delete happened): the rule, not
    # the clock, must make it win.
    updated = write_bytes(tmp_path / "updated.txt", b"updated during the partition\n" * 7,
                          mtime=utc(2026, 3, 2, 0, 0, 0))
    c[1].put(updated, "docs/c.txt")
    assert "docs/c.txt" not in c[0].ls(), "rm on server 0 did not take effect there"

    heal(c)
    listed = assert_same_listing(c.servers)
    assert sorted(listed) == ["docs/c.txt"], (
        f"an update concurrent with a delete should win everywhere, with no conflict copy; "
        f"ls: {sorted(listed)}\n" + cluster_report(c.servers))
    assert_everywhere(c.servers, {"docs/c.txt": updated}, tmp_path)


# ---- membership and status -----------------------------------------------------

def test_new_server_joins_running_cluster(make_cluster, tmp_path):
    c = make_cluster(2)
    files = {"a/one.bin": make_file(tmp_path / "one.bin", 600 * KiB, seed=360),
             "b/two.bin": make_file(tmp_path / "two.bin", 3 * KiB, seed=361)}
    c[0].put(files["a/one.bin"], "a/one.bin")
    c[1].put(files["b/two.bin"], "b/two.bin")
    c[0].cli("mv", "a/one.bin", "a/renamed.bin")
    files["a/renamed.bin"] = files.pop("a/one.bin")
    wait_converged(c.servers, CONVERGE)

    new = c.add_server()  # --peer to both; they are not restarted and do not list it
    wait_converged(c.servers, CONVERGE, via=new)
    assert_everywhere([new], files, tmp_path)
    listed = assert_same_listing(c.servers)
    assert sorted(listed) == sorted(files), (
        f"the new server should catch up to a full copy; ls: {sorted(listed)}, expected {sorted(files)}")


def check_entries(st, who):
    assert isinstance(st, dict) and isinstance(st.get("servers"), list) and "converged" in st, \
        f"status --json on {who}: expected {{'servers': [...], 'converged': bool}}, got {json.dumps(st)}"
    for e in st["servers"]:
        missing = [k for k in STATUS_KEYS if k not in e]
        assert not missing, f"status --json on {who}: entry {e} lacks {missing}"


def test_status_lists_every_server(make_cluster, tmp_path):
    c = make_cluster(3)
    src = make_file(tmp_path / "s.bin", 50 * KiB, seed=370)
    c[0].put(src, "s.bin")
    wait_converged(c.servers, CONVERGE)

    st = c[0].status()
    check_entries(st, c[0].addr)
    entries = st["servers"]
    assert len(entries) == 3, f"status on server 0 should list 3 servers: {json.dumps(st, indent=1)}"
    selves = [e for e in entries if e["self"] is True]
    assert len(selves) == 1 and selves[0]["addr"] == c[0].addr, \
        f"exactly one entry, server 0's ({c[0].addr}), should have self true: {json.dumps(st, indent=1)}"
    assert sorted(e["addr"] for e in entries) == sorted(s.addr for s in c), \
        f"status should list every server's address: {json.dumps(st, indent=1)}"
    assert len({e["node"] for e in entries}) == 3, f"node ids should be distinct: {json.dumps(st, indent=1)}"
    assert all(e["connected"] is True for e in entries), f"all should be connected: {json.dumps(st, indent=1)}"
    assert st["converged"] is True, f"converged should be true after status --wait: {json.dumps(st, indent=1)}"
    assert len({e["digest"] for e in entries}) == 1, f"digests should be equal: {json.dumps(st, indent=1)}"
    assert all(e["files"] == 1 and e["pending_records"] == 0 for e in entries), \
        f"every server should hold the 1 file, nothing pending: {json.dumps(st, indent=1)}"

    c[2].kill9()
    deadline = time.monotonic() + 20
    while True:
        st = c[0].status()
        check_entries(st, c[0].addr)
        dead = [e for e in st["servers"] if e["addr"] == c[2].addr]
        if dead and dead[0]["connected"] is False:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"20 s after kill -9 of server 2, status on server 0 does not show it "
                        f"disconnected: {json.dumps(st, indent=1)}\n--- server 0 log ---\n{c[0].log()}")
        time.sleep(0.2)
    assert len(st["servers"]) == 3, f"a dead server should stay listed: {json.dumps(st, indent=1)}"
    assert st["converged"] is False, f"converged with a server down: {json.dumps(st, indent=1)}"

    t0 = time.monotonic()
    cp = run_cli("status", "--wait", "--timeout", 2, server=c[0], tls=c[0].tls, check=False, timeout=60)
    took = time.monotonic() - t0
    assert cp.returncode == 1, "status --wait --timeout 2 with a server down should exit 1:" + describe(cp)
    assert took < 15, f"status --wait --timeout 2 took {took:.1f} s"
    assert c[0].alive() and c[1].alive(), "a server died after its peer was killed:\n" + cluster_report(c.servers)
