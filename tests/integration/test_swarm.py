"""Swarm mode: the seed-compatible `tracker` and `client` programs
(docs/SWARM.md, CONTRACT.md "Seed-compatible tracker and client").

Real processes on 127.0.0.1: two trackers replicating to each other and a
few clients, each in its own working directory, driven through standard
input (harness in swarm.py).  What is checked is what a user sees: the
bytes of downloaded files, the trackers' seederlist exports, the clients'
`show_downloads` answers, exit statuses, and — where nothing else shows it
— a line in a log (a seeder's `served N bytes`, a bad seeder named by the
downloader).  SYNCSTORE_LEASE_MS=3000 everywhere, so a dead seeder expires
in seconds.
"""

import json
import random
import re
import signal
import socket
import struct
import subprocess
import time

import pytest

from conftest import (BIN, HOST, KiB, MiB, assert_same_file, describe, frame, free_port, hello_exchange,
                      make_file, raw_tls, read_frame, run_cli, tls_context, wait_closed, wire_str)
from swarm import (DOWNLOAD, EXPIRY, MSG_ERROR, MSG_PULL, MSG_PULLED, FakeSeeder, Swarm, connect,
                   error_text, query_seeders, tls_client_ctx)

SERVED_RE = re.compile(r"\bserved (\d+) bytes")
BAD_SEEDER_WORDS = ("bad", "mismatch", "corrupt", "drop", "verif", "hash", "wrong", "invalid", "reject")


@pytest.fixture
def swarm(procs, ca, tmp_path):
    return Swarm(procs, ca, tmp_path / "swarm")


@pytest.fixture
def trackers(swarm):
    """Two trackers, each the other's replication peer."""
    return swarm.tracker_pair()


@pytest.fixture
def fakes():
    made = []
    yield made
    for f in made:
        f.close()


def issue(ca, role, name, out):
    """`syncstore cert issue`: an identity of `role` in out/NAME.crt, .key."""
    cp = subprocess.run([BIN, "cert", "issue", "--tls", str(ca), "--role", role, "--name", name,
                         "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, "cert issue failed:" + describe(cp)
    return out / f"{name}.crt", out / f"{name}.key"


def served_bytes(client):
    return sum(int(n) for n in SERVED_RE.findall(client.log()))


def tracker_status(tracker, ca, must=True):
    """The entries of `status --json` on a tracker ([] on failure unless must)."""
    cp = run_cli("status", "--json", server=tracker.addr, tls=ca, check=False, timeout=30)
    try:
        return json.loads(cp.stdout)["servers"]
    except (ValueError, KeyError, TypeError):
        if must:
            pytest.fail(f"status --json on tracker {tracker.name}:" + describe(cp))
        return []


def own_status(tracker, ca):
    """The tracker's own entry of `status --json` (its registry: files, digest)."""
    entries = tracker_status(tracker, ca)
    mine = [e for e in entries if e.get("self") is True]
    assert len(mine) == 1, f"status --json on tracker {tracker.name}: no single entry with self true: {entries}"
    return mine[0]


def wait_trackers_converged(swarm, t1, t2, timeout=20):
    """Both trackers list each other connected, nothing pending, and hold
    registries with the same digest (so records and withdrawals replicated)."""
    def converged():
        a, b = tracker_status(t1, swarm.ca, must=False), tracker_status(t2, swarm.ca, must=False)
        mine = [next((e for e in st if e.get("self") is True), {}) for st in (a, b)]
        return (len(a) == len(b) == 2 and all(e.get("connected") is True for e in a + b)
                and all(e.get("pending_records") == 0 for e in a + b)
                and mine[0].get("digest") is not None and mine[0].get("digest") == mine[1].get("digest"))
    swarm.wait(converged, timeout, lambda: f"the trackers did not converge (both connected, nothing pending, "
                                           f"same digest): status of {t1.name}: {tracker_status(t1, swarm.ca, False)}; "
                                           f"of {t2.name}: {tracker_status(t2, swarm.ca, False)}")


# ---- 1. share, get, replication, a tracker down, remove, close, restart ----

def test_share_get_replicate_survive_a_tracker_crash(swarm, trackers, tmp_path):
    t1, t2 = trackers
    a, b, c = swarm.client("A"), swarm.client("B"), swarm.client("C")
    src = make_file(tmp_path / "src" / "film.bin", 3 * MiB, seed=1)
    other = make_file(tmp_path / "src" / "notes.bin", 200 * KiB, seed=2)

    mt = a.share(src, "film.mtorrent")
    assert mt.path == a.cwd / "film.mtorrent" and mt.size == src.stat().st_size
    keep = a.share(other, "notes.mtorrent")
    for t in (t1, t2):
        t.wait_listed(mt.root, a.addr)
        t.wait_listed(keep.root, a.addr)
    entry = next(e for e in t2.entries() if e.root == mt.root and e.addr == a.addr)
    assert (entry.name, entry.size) == (mt.name, mt.size), \
        f"T2's seederlist entry {entry} should carry the .mtorrent's name {mt.name!r} and size {mt.size}"

    b.get(swarm.give(mt, b), "film.bin")
    b.wait_done("film.bin")
    assert_same_file(b.cwd / "film.bin", src)
    for t in (t1, t2):
        t.wait_listed(mt.root, b.addr)  # done downloads are seeded

    # One tracker dies: the other serves alone.
    identity = (t1.state_dir / "node.crt").read_bytes()
    t1.kill9()
    c.get(swarm.give(mt, c), "film.bin")
    c.wait_done("film.bin")
    assert_same_file(c.cwd / "film.bin", src)
    t2.wait_listed(mt.root, c.addr)

    a.remove("film.mtorrent")
    t2.wait_unlisted(mt.root, a.addr)
    # remove itself withdraws (the heartbeat's resync would hide it if not).
    assert re.search(r" WITHDRAW film\.bin ", t2.log()), "remove sent no WITHDRAW to T2:\n" + t2.log()[-2000:]
    assert not (a.cwd / "film.mtorrent").exists(), "remove should delete the .mtorrent"
    assert t2.lists(keep.root, a.addr), "remove of one file withdrew A's other file too"
    assert b.close() == 0, "client B: close after a finished download should exit 0\n" + swarm.report()
    swarm.wait(lambda: all(e.addr != b.addr for e in t2.entries()), 15,
               "B closed but T2's seederlist still lists it")

    # The killed tracker comes back on its state and converges: it drops
    # what was withdrawn while it was down and learns C.
    t1.start()
    want = {(mt.root, c.addr), (keep.root, a.addr)}
    for t in (t1, t2):
        swarm.wait(lambda: t.pairs() == want, 20,
                   lambda: f"tracker {t.name}'s seederlist should list exactly {sorted(want)} "
                           f"(C seeds the film, A only the notes); it lists {sorted(t.pairs())}")
    assert (t1.state_dir / "node.crt").read_bytes() == identity, \
        "the restarted tracker issued itself a new identity instead of reloading its state"
    wait_trackers_converged(swarm, t1, t2)


def test_registry_replicates_between_trackers(swarm, trackers, ca, tmp_path):
    """A seeder that knows only T1 is in T2's registry too, and so is its
    withdrawal: the records replicate (liveness does not, so this looks at
    the registry through `status`, not at the seederlist)."""
    t1, t2 = trackers
    x = swarm.client("X", trackers=[t1, t1])
    mt = x.share(make_file(tmp_path / "src" / "only-t1.bin", 100 * KiB, seed=20), "only.mtorrent")
    t1.wait_listed(mt.root, x.addr)
    for files in (1, 0):
        swarm.wait(lambda: (own_status(t2, ca)["files"], own_status(t2, ca)["digest"])
                   == (files, own_status(t1, ca)["digest"]), 15,
                   lambda: f"T2 should hold {files} registry record(s) with T1's digest; status of T2: "
                           f"{own_status(t2, ca)}, of T1: {own_status(t1, ca)}")
        if files:
            x.remove("only.mtorrent")


# ---- 2. several seeders serve one download -----------------------------------

def test_two_seeders_both_serve_one_download(swarm, trackers, tmp_path):
    t1, _ = trackers
    a, b, c = swarm.client("A"), swarm.client("B"), swarm.client("C")
    src = make_file(tmp_path / "src" / "big.bin", 8 * MiB, seed=3)
    mt = a.share(src, "big.mtorrent")
    mt_b = b.share(src, "big.mtorrent")
    assert mt_b.root == mt.root, "the same file shared twice should have the same root"
    t1.wait_listed(mt.root, a.addr)
    t1.wait_listed(mt.root, b.addr)

    c.get(swarm.give(mt, c), "big.bin")
    c.wait_done("big.bin")
    assert_same_file(c.cwd / "big.bin", src)
    assert c.close() == 0, "client C: close after a finished download should exit 0\n" + swarm.report()
    # More than the tree (~10 KB here): data chunks from each.
    swarm.wait(lambda: served_bytes(a) >= 128 * KiB and served_bytes(b) >= 128 * KiB, 10,
               lambda: f"both seeders should have served data chunks of the download (log lines "
                       f"'served N bytes', at least 128 KiB each); A served {served_bytes(a)}, "
                       f"B served {served_bytes(b)}")
    assert served_bytes(a) + served_bytes(b) >= src.stat().st_size // 2, \
        "the seeders' 'served N bytes' lines add up to far less than the file"


def test_seeder_killed_mid_download(swarm, trackers, tmp_path):
    """Both seeders are frozen (SIGSTOP) and let run in short steps until the
    download is part done, so the kill lands in the middle however fast the
    transfer is."""
    t1, _ = trackers
    a, b, c = swarm.client("A"), swarm.client("B"), swarm.client("C")
    src = make_file(tmp_path / "src" / "huge.bin", 64 * MiB, seed=4)
    mt = a.share(src, "huge.mtorrent")
    b.share(src, "huge.mtorrent")
    t1.wait_listed(mt.root, a.addr)
    t1.wait_listed(mt.root, b.addr)

    a.signal(signal.SIGSTOP)
    b.signal(signal.SIGSTOP)
    c.get(swarm.give(mt, c), "huge.bin")
    step, deadline = 0.002, time.monotonic() + 30
    while True:
        a.signal(signal.SIGCONT)
        b.signal(signal.SIGCONT)
        time.sleep(step)
        a.signal(signal.SIGSTOP)
        b.signal(signal.SIGSTOP)
        d = c.download("huge.bin")
        assert d is not None, "show_downloads does not list the running download\n" + swarm.report()
        assert d.state != "F", f"download failed: {d.line}\n" + swarm.report()
        assert d.state == "D", f"the download finished within one step of {step}s: cannot kill a seeder " \
                               f"mid-download ({d.line})"
        pct = d.percent
        assert pct is not None, f"no percentage in the [D] line {d.line!r}"
        if 0 < pct < 100:
            break
        assert time.monotonic() < deadline, f"download still at {d.line!r} after 30 s\n" + swarm.report()
        step = min(step * 2, 0.5)

    a.kill9()
    b.signal(signal.SIGCONT)
    c.wait_done("huge.bin", timeout=90)
    assert_same_file(c.cwd / "huge.bin", src)


# ---- 3. a seeder that sends wrong bytes --------------------------------------

def test_corrupt_seeder_is_detected_and_dropped(swarm, trackers, fakes, ca, tmp_path):
    """The fake seeder is at first the only one, so the downloader must take
    the tree from it and ask it for data (however fast an honest seeder
    would be); it sends the true tree and data chunks with one byte flipped.
    Then an honest seeder shares the file and the download completes."""
    t1, t2 = trackers
    src = make_file(tmp_path / "src" / "doc.bin", 4 * MiB, seed=5)
    # The fake's source of true bytes: a client the trackers do not know.
    hidden = swarm.client("H", trackers=[f"{HOST}:{free_port()}", f"{HOST}:{free_port()}"])
    mt = hidden.share(src, "doc.mtorrent")
    crt, key = issue(ca, "client", "evil", tmp_path / "evil")
    evil = FakeSeeder(ca, crt, key, [t1, t2], upstream=hidden.addr)
    fakes.append(evil)
    evil.announce(mt.root, mt.size, mt.name)
    evil.start_heartbeats()
    for t in (t1, t2):
        t.wait_listed(mt.root, evil.addr)

    c = swarm.client("C")
    c.get(swarm.give(mt, c), "doc.bin")
    swarm.wait(lambda: evil.bad_chunks > 0, 20,
               lambda: "the downloader never asked the corrupt seeder for data\n" + evil.report())
    a = swarm.client("A")
    a.share(src, "doc.mtorrent")
    c.wait_done("doc.bin")
    assert_same_file(c.cwd / "doc.bin", src)

    def flagged():
        return [line for line in c.log().splitlines()
                if evil.addr in line and any(w in line.lower() for w in BAD_SEEDER_WORDS)]
    swarm.wait(flagged, 10, lambda: f"the downloader's log should report the bad seeder {evil.addr} "
                                    f"(a line with its address and one of {BAD_SEEDER_WORDS})\n" + evil.report())


def test_seeder_failing_halfway_through_the_tree(swarm, trackers, fakes, ca, tmp_path):
    """The only seeder passes the root and a few nodes of a file's tree, then
    answers MISSING: the download keeps trying, and completes once an
    honest seeder appears (this once overran a buffer sized before the tree
    was known; the sanitizer build catches a relapse)."""
    t1, t2 = trackers
    src = make_file(tmp_path / "src" / "tall.bin", 12 * MiB, seed=15)
    hidden = swarm.client("H", trackers=[f"{HOST}:{free_port()}", f"{HOST}:{free_port()}"])
    mt = hidden.share(src, "tall.mtorrent")
    crt, key = issue(ca, "client", "flaky", tmp_path / "flaky")
    flaky = FakeSeeder(ca, crt, key, [t1, t2], upstream=hidden.addr, nodes_then_missing=3)
    fakes.append(flaky)
    flaky.announce(mt.root, mt.size, mt.name)
    flaky.start_heartbeats()
    t1.wait_listed(mt.root, flaky.addr)
    c = swarm.client("C")
    c.get(swarm.give(mt, c), "tall.bin")
    swarm.wait(lambda: flaky.missing_sent >= 3, 20,
               lambda: "the downloader did not come back to the flaky seeder\n" + flaky.report())
    assert c.alive(), "the downloader died on a seeder failing mid-tree\n" + swarm.report()
    a = swarm.client("A")
    a.share(src, "tall.mtorrent")
    c.wait_done("tall.bin")
    assert_same_file(c.cwd / "tall.bin", src)


def test_slow_seeder_does_not_hold_the_end(swarm, trackers, tmp_path):
    """A seeder capped at 10 kB/s beside a fast one: the chunks the slow one
    took are asked of the fast one too at the end (endgame), so the download
    does not wait the ~30 s the slow one needs for what it holds in flight."""
    src = make_file(tmp_path / "src" / "mixed.bin", 4 * MiB, seed=16)
    slow = swarm.client("S", env={"SYNCSTORE_UPLOAD_RATE": "0.01"})
    fast = swarm.client("F")
    mt = slow.share(src, "mixed.mtorrent")
    fast.share(src, "mixed.mtorrent")
    for t in trackers:
        t.wait_listed(mt.root, slow.addr)
        t.wait_listed(mt.root, fast.addr)
    c = swarm.client("C")
    t0 = time.monotonic()
    c.get(swarm.give(mt, c), "mixed.bin")
    c.wait_done("mixed.bin", timeout=60)
    took = time.monotonic() - t0
    assert_same_file(c.cwd / "mixed.bin", src)
    assert took < 8, f"the download took {took:.1f} s: it waited for the slow seeder\n" + c.log()[-3000:]


def test_get_of_a_file_this_client_shares(swarm, trackers, tmp_path):
    """The only seeder is the client itself: `get` copies the file through
    its own upload port (verified like any download)."""
    src = make_file(tmp_path / "src" / "own.bin", 3 * MiB, seed=17)
    a = swarm.client("A")
    mt = a.share(src, "own.mtorrent")
    for t in trackers:
        t.wait_listed(mt.root, a.addr)
    a.get(mt.path, "copy.bin")
    a.wait_done("copy.bin", timeout=30)
    assert_same_file(a.cwd / "copy.bin", src)
    assert a.close() == 0, swarm.report()


# ---- 4. liveness ---------------------------------------------------------------

def test_killed_seeder_expires_from_both_trackers(swarm, trackers, tmp_path):
    t1, t2 = trackers
    a, b = swarm.client("A"), swarm.client("B")
    src = make_file(tmp_path / "src" / "f.bin", 300 * KiB, seed=6)
    mt = a.share(src, "f.mtorrent")
    b.share(src, "f.mtorrent")
    for t in (t1, t2):
        t.wait_listed(mt.root, a.addr)
        t.wait_listed(mt.root, b.addr)
    a.kill9()
    t0 = time.monotonic()
    for t in (t1, t2):
        t.wait_unlisted(mt.root, a.addr, timeout=max(0.5, EXPIRY - (time.monotonic() - t0)))
    for t in (t1, t2):
        assert t.lists(mt.root, b.addr), f"B still heartbeats but {t.name} dropped it\n" + swarm.report()


# ---- 5. malformed input --------------------------------------------------------

def test_malformed_mtorrent_is_one_error_line(swarm, trackers, tmp_path):
    a, b = swarm.client("A"), swarm.client("B")
    src = make_file(tmp_path / "src" / "ok.bin", 500 * KiB, seed=7)
    mt = a.share(src, "ok.mtorrent")
    good = mt.text
    root_line = next(line for line in good.splitlines() if line.startswith("root "))
    bad = {
        "garbage": random.Random(8).randbytes(3000),
        "empty": b"",
        "truncated-half": good.encode()[:len(good) // 2],
        "truncated-mid-root": good[:good.index(root_line) + 5 + 20].encode(),
        "no-final-newline": good.encode()[:-1],
        "bad-root": good.replace(root_line, "root " + "z" * 64).encode(),
        "short-root": good.replace(root_line, root_line[:-1]).encode(),
        "newer-version": re.sub(r"^syncstore-mtorrent \d+", "syncstore-mtorrent 9", good).encode(),
    }
    assert bad["newer-version"].startswith(b"syncstore-mtorrent 9\n")
    for kind, data in bad.items():
        (b.cwd / f"{kind}.mtorrent").write_bytes(data)
    for kind in list(bad) + ["missing"]:
        err0 = len(b.err_bytes())
        b.get(f"{kind}.mtorrent", f"out-{kind}.bin")
        downloads = b.show_downloads()
        err = b.err_bytes()[err0:].decode(errors="replace")
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, (f"`get {kind}.mtorrent`: expected one error line on stderr, got "
                                 f"{lines!r}\n" + swarm.report())
        assert "Traceback" not in err and "Sanitizer" not in err
        assert not any(d.dest.endswith(f"out-{kind}.bin") and d.state in "DS" for d in downloads), \
            f"`get {kind}.mtorrent` started a download: {[d.line for d in downloads]}"
        assert b.alive()
    b.get(swarm.give(mt, b), "ok.bin")
    b.wait_done("ok.bin")
    assert_same_file(b.cwd / "ok.bin", src)
    assert not list(b.cwd.glob("out-*")), f"malformed .mtorrents left files: {list(b.cwd.glob('out-*'))}"


BAD_AFTER_HELLO = {
    "garbage": lambda: random.Random(9).randbytes(64 * KiB),
    "huge-length": lambda: struct.pack("<I", 0xFFFFFFF0) + b"\x3c",
    "just-over-max-length": lambda: struct.pack("<I", (1 << 20) + 1) + b"\x3c" + b"\0" * 1000,
    "zero-length": lambda: struct.pack("<I", 0) + b"\x01" * 16,
    "unknown-type": lambda: frame(0xEE, b"\1\2\3\4"),
}

# Well framed, badly formed: an ERROR reply or the connection closed.
MALFORMED = {
    "announce-short": frame(60, b"\x01" * 10),
    "announce-name-overruns": frame(60, bytes(32) + struct.pack("<Q", 5) + b"\xff\xff" + b"a" * 10),
    "announce-trailing-bytes": frame(60, bytes(32) + struct.pack("<Q", 5) + wire_str("n") + wire_str("1.2.3.4:5")
                                     + struct.pack("<I", 0) + b"junk"),
    "announce-huge-name": frame(60, bytes(32) + struct.pack("<Q", 5) + wire_str("n" * 5000)
                                + wire_str("1.2.3.4:5") + struct.pack("<I", 0)),
    "heartbeat-short": frame(61, b"\xff\xff"),
    "seeders-short-root": frame(62, bytes(5)),
    "seeder-as-request": frame(63, bytes(40)),
    "read-to-tracker": frame(52, struct.pack("<H", 1) + bytes(32)),
    "pull-from-a-client": frame(50, struct.pack("<QQIIQQ", 0, 0, 0, 0, 0, 0)),
}


def expect_error_or_close(sock, what):
    sock.settimeout(5)
    try:
        t, p = read_frame(sock)
    except (ConnectionError, OSError, AssertionError):
        return
    assert t == MSG_ERROR, f"{what}: the tracker answered with a frame of type {t}, not ERROR: {p[:100]!r}"


def send_junk(tracker, ca, kind, data, hello=True):
    """One connection to the tracker carrying `data`; the tracker must close
    it (or, for well-framed bad messages, answer ERROR) and stay up."""
    try:
        if kind == "plain-tcp":
            s = socket.create_connection((HOST, tracker.port), timeout=5)
        else:
            s = raw_tls(tracker, tls_context(ca))
        with s:
            if hello:
                hello_exchange(s)
            try:
                s.sendall(data)
            except OSError:
                pass  # already closed by the tracker: fine
            if kind in MALFORMED:
                expect_error_or_close(s, kind)
            else:
                assert wait_closed(s), f"the tracker kept the connection open after {kind}"
    except (ConnectionError, OSError) as e:
        if tracker.alive():
            raise
        pytest.fail(f"tracker died on {kind} ({e!r})\n" + tracker.report())
    assert tracker.alive(), f"tracker died on {kind}\n" + tracker.report()


def test_tracker_survives_junk(swarm, trackers, ca, tmp_path):
    t1, _ = trackers
    send_junk(t1, ca, "plain-tcp", b"GET / HTTP/1.0\r\n\r\n" + random.Random(10).randbytes(4000), hello=False)
    send_junk(t1, ca, "junk-instead-of-hello", random.Random(11).randbytes(5000), hello=False)
    for kind, data in BAD_AFTER_HELLO.items():
        send_junk(t1, ca, kind, data())
    for kind, data in MALFORMED.items():
        send_junk(t1, ca, kind, data)
    # A truncated frame whose sender just waits, held open while others are served.
    stalled = raw_tls(t1, tls_context(ca))
    hello_exchange(stalled)
    stalled.sendall(struct.pack("<I", 1000) + b"\x3c" + bytes(9))
    try:
        a, b = swarm.client("A"), swarm.client("B")
        src = make_file(tmp_path / "src" / "after.bin", 400 * KiB, seed=12)
        mt = a.share(src, "after.mtorrent")
        t1.wait_listed(mt.root, a.addr)
        listed = query_seeders(t1.addr, tls_context(ca), mt.root)
        assert a.addr in [addr for _, addr, _, _ in listed], f"SEEDERS at T1 after the junk: {listed}"
        b.get(swarm.give(mt, b), "after.bin")
        b.wait_done("after.bin")
        assert_same_file(b.cwd / "after.bin", src)
    finally:
        stalled.close()
    assert t1.alive(), "tracker died\n" + swarm.report()


def test_client_survives_bad_commands(swarm, trackers, tmp_path):
    a = swarm.client("A")
    bad = ["frobnicate", "share", "get only-one-word", "remove not-shared.mtorrent",
           f"share {tmp_path}/no/such/file x.mtorrent", "get a\\", "x" * (100 * KiB)]
    for line in bad:
        err0 = len(a.err_bytes())
        a.send(line)
        assert a.show_downloads() == [], f"after {line[:40]!r}: show_downloads should say 'no downloads'"
        err = a.err_bytes()[err0:].decode(errors="replace")
        assert err.strip(), f"{line[:40]!r}: no error message on stderr\n" + swarm.report()
        assert "Sanitizer" not in err
    a.send("")  # an empty line is nothing
    src = make_file(tmp_path / "src" / "still.bin", 100 * KiB, seed=13)
    mt = a.share(src, "still.mtorrent")
    swarm.trackers[0].wait_listed(mt.root, a.addr)
    assert not (a.cwd / "x.mtorrent").exists()
    assert a.close() == 0


# ---- 6-8. standard input, names, restart ------------------------------------

def test_end_of_input_waits_for_the_download(swarm, trackers, tmp_path):
    a = swarm.client("A")
    src = make_file(tmp_path / "src" / "piped.bin", 6 * MiB, seed=14)
    mt = a.share(src, "X.mtorrent")
    d = swarm.client("D", start=False)
    swarm.give(mt, d)
    d.start(wait=False)
    d.send("get X.mtorrent out")
    d.end_input()
    rc = d.wait_exit(DOWNLOAD)
    assert rc == 0, f"client exited {rc} at the end of its input\n" + swarm.report()
    assert_same_file(d.cwd / "out", src)
    assert not (d.cwd / "out.part").exists()


def test_names_with_spaces(swarm, trackers, tmp_path):
    a, b = swarm.client("A"), swarm.client("B")
    src = make_file(a.cwd / "my file.bin", 700 * KiB, seed=15)
    a.send("share my\\ file.bin my\\ file.mtorrent")
    a.sync()
    mt_path = a.cwd / "my file.mtorrent"
    swarm.wait(mt_path.exists, 10, "share with escaped spaces wrote no 'my file.mtorrent'")
    swarm.give(mt_path, b)
    b.send("get my\\ file.mtorrent got\\ it.bin")
    b.wait_done("got it.bin")
    assert_same_file(b.cwd / "got it.bin", src)


def test_restarted_client_seeds_its_mtorrents_again(swarm, trackers, tmp_path):
    t1, t2 = trackers
    a = swarm.client("A")
    src = make_file(tmp_path / "src" / "again.bin", 2 * MiB, seed=16)
    mt = a.share(src, "again.mtorrent")
    t1.wait_listed(mt.root, a.addr)
    assert a.close() == 0
    for t in (t1, t2):
        t.wait_unlisted(mt.root, a.addr)
    assert mt.path.exists(), "close deleted the .mtorrent (only remove should)"

    a.start()  # same working directory, log file and address
    for t in (t1, t2):
        t.wait_listed(mt.root, a.addr)
    d = swarm.client("D")
    d.get(swarm.give(mt, d), "again.bin")
    d.wait_done("again.bin")
    assert_same_file(d.cwd / "again.bin", src)


# ---- 9. roles ------------------------------------------------------------------

def test_tracker_replicates_only_with_trackers(swarm, trackers, ca, tmp_path):
    """PULL (replication) from a server certificate is refused; from a
    tracker certificate it is answered."""
    t1, _ = trackers
    pull = frame(MSG_PULL, struct.pack("<QQIIQQ", 0, 0, 0, 0, 0, 0))
    server_ctx = tls_client_ctx(ca, *issue(ca, "server", "rogue", tmp_path / "rogue"))
    try:
        s = connect(t1.addr, server_ctx)
    except (ConnectionError, OSError):
        s = None  # refused at the handshake: fine too
    if s is not None:
        with s:
            s.sendall(pull)
            expect_error_or_close(s, "PULL from a server certificate")
    tracker_ctx = tls_client_ctx(ca, *issue(ca, "tracker", "twin", tmp_path / "twin"))
    with connect(t1.addr, tracker_ctx) as s:
        s.sendall(pull)
        while True:
            t, p = read_frame(s)
            assert t != MSG_ERROR, "PULL from a tracker certificate refused: " + error_text(p)
            if t == MSG_PULLED:
                break


def test_server_with_tracker_seeds_what_it_holds(swarm, trackers, make_server, tmp_path):
    """A storage server started with --tracker registers as a seeder of every
    file it holds; a `get` draws from it and from a client together."""
    t1, t2 = trackers
    src = make_file(tmp_path / "src" / "both.bin", 8 * MiB, seed=40)
    srv = make_server(extra=("--tracker", t1.addr, "--tracker", t2.addr))
    srv.put(src, "media/both.bin")
    a, c = swarm.client("A"), swarm.client("C")
    mt = a.share(src, "both.mtorrent")
    for t in (t1, t2):
        t.wait_listed(mt.root, srv.addr)
        t.wait_listed(mt.root, a.addr)
    c.get(swarm.give(mt, c), "both.bin")
    c.wait_done("both.bin")
    assert_same_file(c.cwd / "both.bin", src)
    assert c.close() == 0, swarm.report()
    got = {m.group(2): int(m.group(1)) for m in re.finditer(r"both\.bin: (\d+) bytes from (\S+)", c.log())}
    assert got.get(srv.addr, 0) >= 128 * KiB and got.get(a.addr, 0) >= 128 * KiB, \
        f"the server and the client should both have sent data; C's log says {got}"
    # A file removed from the server is withdrawn from the trackers.
    srv.cli("rm", "media/both.bin")
    t1.wait_unlisted(mt.root, srv.addr)
