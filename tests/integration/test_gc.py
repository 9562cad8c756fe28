"""Retention, tombstone expiry and garbage collection (docs/STORAGE.md,
"Retention, tombstones, garbage collection"; src/server/maint.c).

`syncstore server --retention SECONDS`: every min(retention/2, 60 s) (at
least 1 s) a housekeeping round
  1. drops versions superseded more than `retention` ago from the history;
  2. removes tombstones older than `retention` for good once every other
     member (--peer) has durably applied this server's log past them — a
     member that is down blocks this;
  3. drops chunks no kept version reaches and compacts segment files.
It logs a line starting "housekeeping:" when a round did something.

`log REMOTE_PATH` lists a path's kept versions, newest first; a tombstone is
a kept version and shows as "deleted", so `log` is the observable for
"the tombstone is still there".  Waiting is done by polling, never by a
fixed sleep where a condition can be polled instead.
"""

import time

from conftest import (MiB, assert_fails, assert_served, cluster_report, describe, dir_size,
                      log_versions, make_file, server_log_lines, wait_converged)

CONVERGE = 60          # seconds allowed for a cluster to converge


def poll(cond, timeout, every=0.5):
    """Call cond() until it returns something true or `timeout` seconds pass;
    returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(every)


def fmt_mib(n):
    return f"{n / MiB:.1f} MiB"


def housekeeping(server):
    return server_log_lines(server, "housekeeping:")


# ---- deleting 100 MiB gives the disk space back on every server -------------

def test_deleted_space_comes_back(make_cluster, tmp_path):
    c = make_cluster(3, extra=("--retention", 5))
    big = tmp_path / "big"
    for i in range(10):
        make_file(big / f"part{i}.bin", 10 * MiB, seed=9100 + i)
    keep = make_file(tmp_path / "keep.bin", 123_457, seed=9200)
    c[0].put(big, "big")
    c[1].put(keep, "keep/keep.bin")
    wait_converged(c.servers, CONVERGE)
    assert sorted(p for p in c[2].ls() if p.startswith("big/")) == \
        [f"big/part{i}.bin" for i in range(10)], c[2].cli("ls").stdout

    before = [dir_size(s.data) for s in c]
    for s, b in zip(c, before):
        assert b >= 100 * MiB, (f"{s.data} holds {fmt_mib(b)} after 100 MiB were put and "
                                f"replicated; expected at least 100 MiB")

    c[0].cli("rm", "-r", "big")
    wait_converged(c.servers, CONVERGE)
    for s in c:
        left = [p for p in s.ls() if p.startswith("big/")]
        assert not left, f"`rm -r big` converged, but {s.addr} still lists {left}"

    t0 = time.monotonic()
    want = 90 * MiB
    sizes = {}

    def shrunk():
        for i, s in enumerate(c):
            sizes[i] = dir_size(s.data)
        return all(before[i] - sizes[i] >= want for i in range(len(c)))

    ok = poll(shrunk, 60)
    took = time.monotonic() - t0
    lines = []
    for i, s in enumerate(c):
        lines.append(f"server {i} ({s.data}): {fmt_mib(before[i])} before rm, "
                     f"{fmt_mib(sizes[i])} after ({fmt_mib(before[i] - sizes[i])} freed)")
    report = "\n".join(lines)
    print(f"\n{report}\n(waited {took:.1f} s after convergence)")
    # The round logs its line just after GC deleted the files: give it a moment.
    poll(lambda: all(housekeeping(s) for s in c), 5 if ok else 0, every=0.2)
    for i, s in enumerate(c):
        print(f"server {i} housekeeping: {housekeeping(s)}")
    assert ok, (f"60 s after `rm -r big` converged (--retention 5), not every data directory "
                f"shrank by at least {fmt_mib(want)}:\n{report}\n"
                + "\n".join(f"server {i} housekeeping lines: {housekeeping(s)}"
                            for i, s in enumerate(c))
                + "\n" + cluster_report(c.servers))

    for i, s in enumerate(c):
        assert housekeeping(s), (f"server {i} freed the space but logged no \"housekeeping:\" "
                                 f"line:\n{s.log()}")
    for s in c:
        assert_served(s, "keep/keep.bin", keep, tmp_path)
    assert all(s.alive() for s in c)


# ---- a member that is down keeps the tombstones; nothing comes back -------------

def test_down_member_blocks_tombstone_expiry_and_nothing_comes_back(make_cluster, tmp_path):
    retention = 2
    c = make_cluster(3, extra=("--retention", retention))
    files = {}
    for i in range(6):
        files[f"docs/f{i}.bin"] = make_file(tmp_path / "src" / f"f{i}.bin", 40_000 + 777 * i,
                                            seed=9300 + i)
    c[0].put(tmp_path / "src", "docs")
    wait_converged(c.servers, CONVERGE)
    for s in c:
        assert sorted(p for p in s.ls() if p.startswith("docs/")) == sorted(files), s.addr

    removed = ["docs/f0.bin", "docs/f1.bin", "docs/f2.bin"]
    kept = [p for p in files if p not in removed]

    c[2].kill9()
    c.wait_disconnected(0, 2)
    c.wait_disconnected(1, 2)
    for p in removed:
        c[0].cli("rm", p)
    t_rm = time.monotonic()
    for s in c.servers[:2]:
        listed = s.ls()
        assert not set(removed) & set(listed), f"{s.addr} still lists removed files: {listed}"

    # Well past the retention: the old versions have left the history, but
    # every tombstone stays while server 2 has not applied it.
    time.sleep(max(0.0, t_rm + 4 * retention - time.monotonic()))
    for i in (0, 1):
        s = c[i]
        for p in removed:
            cp, versions = log_versions(s, p)
            assert cp.returncode == 0 and versions and versions[0]["deleted"], (
                f"{4 * retention} s after `rm {p}` (--retention {retention}) with server 2 down, "
                f"`log {p}` on server {i} should still show the tombstone (newest version "
                f"\"deleted\"): the down member has not applied it" + describe(cp)
                + "\n" + cluster_report(c.servers[:2]))
        print(f"\nserver {i}: `log {removed[0]}` with server 2 down:\n"
              + log_versions(s, removed[0])[0].stdout.rstrip())
        print(f"server {i} housekeeping while server 2 was down: {housekeeping(s)}")

    # Server 2 comes back with the files it still holds; the tombstones win.
    c[2].start()
    c.wait_connected(timeout=30)
    wait_converged(c.servers, CONVERGE)

    def check_absent(when):
        for i, s in enumerate(c):
            listed = s.ls()
            back = sorted(set(removed) & set(listed))
            assert not back, (f"{when}: removed files came back on server {i} ({s.addr}): {back}\n"
                              + cluster_report(c.servers))
            missing = sorted(set(kept) - set(listed))
            assert not missing, (f"{when}: server {i} ({s.addr}) lost kept files {missing}\n"
                                 + cluster_report(c.servers))
            for p in removed:
                cp = s.cli("get", p, tmp_path / "gone.out", check=False)
                assert cp.returncode == 1, (f"{when}: `get {p}` on server {i} should fail "
                                            f"(removed):" + describe(cp))

    check_absent("after server 2 came back and the cluster converged")
    for s in c:
        for p in kept:
            assert_served(s, p, files[p], tmp_path)

    # With every member back, the tombstones do expire (everywhere).
    def tombstones_gone():
        for s in c:
            for p in removed:
                cp, versions = log_versions(s, p)
                if cp.returncode == 0:
                    return False
        return True

    gone = poll(tombstones_gone, 30)
    status = {f"server {i}": {p: log_versions(s, p)[0].stdout.strip() or
                              log_versions(s, p)[0].stderr.strip() for p in removed}
              for i, s in enumerate(c)}
    print(f"`log` of the removed paths after server 2 came back: {status}")
    assert gone, (f"30 s after server 2 came back and the cluster converged, the tombstones of "
                  f"{removed} should have expired on every server (every member applied them, "
                  f"--retention {retention}); `log` still shows: {status}\n"
                  + cluster_report(c.servers))

    # Another retention period or two later, and after restarting everything:
    # still absent.
    time.sleep(3 * retention)
    check_absent(f"{3 * retention} s after the tombstones expired")
    for s in c:
        s.stop()
    for s in c:
        s.start(wait=False)
    for s in c:
        s.wait_ready()
    c.wait_connected(timeout=30)
    wait_converged(c.servers, CONVERGE)
    check_absent("after restarting all servers")
    time.sleep(3 * retention)
    wait_converged(c.servers, CONVERGE)
    check_absent(f"{3 * retention} s after restarting all servers")
    for s in c:
        for p in kept:
            assert_served(s, p, files[p], tmp_path, tag="final-" + p.replace("/", "_"))
    for i, s in enumerate(c):
        print(f"server {i} housekeeping: {housekeeping(s)}")


# ---- history retention and get --version ----------------------------------------

def test_history_retention_for_get_version(make_server, tmp_path):
    server = make_server(extra=("--retention", 3))
    v1 = make_file(tmp_path / "v1.bin", 50_000, seed=9400)
    v2 = make_file(tmp_path / "v2.bin", 60_000, seed=9401)
    server.put(v1, "doc.bin")
    server.put(v2, "doc.bin")

    cp, versions = log_versions(server, "doc.bin")
    assert cp.returncode == 0 and len(versions) == 2 and not any(v["deleted"] for v in versions), (
        "`log doc.bin` after two puts should list both versions, newest first:" + describe(cp))
    new, old = versions[0]["version"], versions[1]["version"]
    assert new > old, describe(cp)

    got = tmp_path / "got-v1"
    server.cli("get", "--version", old, "doc.bin", got)
    assert got.read_bytes() == v1.read_bytes(), "get --version of the first version differs from v1"
    got2 = tmp_path / "got-v2"
    server.cli("get", "--version", new, "doc.bin", got2)
    assert got2.read_bytes() == v2.read_bytes()

    t0 = time.monotonic()

    def only_current():
        cp, vs = log_versions(server, "doc.bin")
        return cp.returncode == 0 and [v["version"] for v in vs] == [new]

    ok = poll(only_current, 15)
    took = time.monotonic() - t0
    cp, _ = log_versions(server, "doc.bin")
    print(f"\n`log doc.bin` {took:.1f} s after the second put:\n{cp.stdout.rstrip()}\n"
          f"housekeeping: {housekeeping(server)}")
    assert ok, (f"15 s after v1 was superseded (--retention 3), `log doc.bin` should list only "
                f"the current version {new}:" + describe(cp) + "\n--- server log ---\n"
                + server.log())

    # The current version is untouched.
    got3 = tmp_path / "got-current"
    server.cli("get", "doc.bin", got3)
    assert got3.read_bytes() == v2.read_bytes()
    server.cli("get", "--version", new, "doc.bin", tmp_path / "got-v2-again")

    # The expired one is gone, with a message that says which version.
    out = tmp_path / "got-v1-expired"
    cp = server.cli("get", "--version", old, "doc.bin", out, check=False)
    print(f"get --version {old} after expiry: exit {cp.returncode}: {cp.stderr.strip()}")
    assert not out.exists(), "a failed get must not leave the local file"
    assert_fails(cp, 1, words=(f"version {old}", "expired", "no longer kept"))
