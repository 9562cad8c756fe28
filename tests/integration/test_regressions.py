"""Regression tests for the review findings fixed in "Fix review findings:
bounded commit walk, node completeness, handshake deadline, drained and
lingering put errors".  One test per finding; each fails if its bug comes
back.  Small data throughout: the whole file runs in well under a minute.
"""

import hashlib
import json
import os
import random
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (BIN, HOST, KiB, MiB, assert_fails, assert_same_file, client_cmd, describe,
                      frame, hello_exchange, make_file, raw_tls, read_frame, tls_context, wire_str)

# message types (docs/WIRE.md)
HELLO_T, ERROR, OK, END = 1, 2, 3, 4
PUT, OFFER, WANT, NODE, CHUNK, SYNC, COMMIT = 10, 11, 12, 13, 14, 15, 16


# --------------------------------------------------------------------------
# raw protocol helpers


def sha(b):
    return hashlib.sha256(b).digest()


def tree_node(level, entries):
    """A manifest tree node (src/chunk/chunk.h): "SSMN", version 1, level,
    count u16 LE, then count x (id[32], size u64 LE)."""
    return (b"SSMN" + bytes([1, level]) + struct.pack("<H", len(entries))
            + b"".join(i + struct.pack("<Q", n) for i, n in entries))


def put_frame(path, size, mode=0o644, mtime_ns=0):
    return frame(PUT, wire_str(path) + struct.pack("<QIqI", size, mode, mtime_ns, 0))


def chunk_frame(data):
    return frame(CHUNK, sha(data) + bytes([0]) + struct.pack("<I", len(data)) + data)


def offer_frame(ids):
    return frame(OFFER, struct.pack("<H", len(ids)) + b"".join(ids))


def error_text(payload):
    code, n = struct.unpack("<iH", payload[:6])
    return code, payload[6:6 + n].decode(errors="replace")


def describe_reply(t, p):
    return f"ERROR {error_text(p)}" if t == ERROR else f"type {t} payload {p[:40].hex()}"


def want_bits(payload):
    (n,) = struct.unpack("<H", payload[:2])
    bits = payload[2:2 + (n + 7) // 8]
    return [bool(bits[i // 8] >> (i % 8) & 1) for i in range(n)]


def expect(sock, type_, what):
    t, p = read_frame(sock)
    assert t == type_, f"{what}: expected type {type_}, got {describe_reply(t, p)}"
    return p


def raw_client(server, ca, timeout=10):
    s = raw_tls(server, tls_context(ca), timeout=timeout)
    hello_exchange(s)
    return s


def raw_put_start(sock, path, size, **kw):
    sock.sendall(put_frame(path, size, **kw))
    expect(sock, OK, "reply to PUT")


def single_chunk_root(data):
    """The level-1 node (= root) of a file smaller than CDC_MIN (one chunk)."""
    return tree_node(1, [(sha(data), len(data))])


@pytest.fixture(autouse=True)
def no_sanitizer_reports(tmp_path):
    """Fail a test whose servers reported a sanitizer error in their logs
    (meaningful when SYNCSTORE_BIN is an ASAN/UBSAN build)."""
    yield
    for log in sorted(tmp_path.glob("server-*.log")):
        text = log.read_text(errors="replace")
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            if marker in text:
                i = text.index(marker)
                pytest.fail(f"{log.name}: sanitizer report:\n{text[max(0, i - 500):i + 3000]}")


# --------------------------------------------------------------------------
# 1. commit bomb


def test_commit_bomb_answers_promptly_and_ls_keeps_working(server, ca, tmp_path):
    """A tree of 8 levels where every node names the node below 128 times
    (1 stored byte, announced size 128^8) is committed or refused within a
    few seconds, and another client's `ls` works meanwhile."""
    levels, fan = 8, 128
    total = fan ** levels
    s = raw_client(server, ca, timeout=30)
    try:
        raw_put_start(s, "bomb", total)
        s.sendall(chunk_frame(b"x"))
        cid, size = sha(b"x"), 1
        for level in range(1, levels + 1):
            node = tree_node(level, [(cid, size)] * fan)
            s.sendall(frame(NODE, node))
            expect(s, WANT, f"reply to the level-{level} NODE")
            s.sendall(frame(SYNC))
            expect(s, OK, f"reply to SYNC after the level-{level} node")
            cid, size = sha(node), size * fan
        assert size == total

        ls_result = {}

        def other_client():
            t0 = time.monotonic()
            ls_result["cp"] = server.cli("ls", check=False, timeout=20)
            ls_result["secs"] = time.monotonic() - t0

        s.sendall(frame(COMMIT, cid + struct.pack("<QI", total, 0)))
        t0 = time.monotonic()
        th = threading.Thread(target=other_client, daemon=True)
        th.start()
        s.settimeout(10)
        try:
            t, p = read_frame(s)
        except socket.timeout:
            pytest.fail("no reply to the bomb's COMMIT within 10 s:\n" + server.log())
        except ConnectionError as e:
            pytest.fail(f"the server closed the connection instead of answering COMMIT ({e}):\n"
                        + server.log())
        secs = time.monotonic() - t0
        print(f"bomb COMMIT answered in {secs:.2f}s: {describe_reply(t, p)}")
        assert t in (OK, ERROR), f"unexpected reply to COMMIT: {describe_reply(t, p)}"
        assert secs < 5, f"COMMIT took {secs:.1f}s to answer ({describe_reply(t, p)})"
        th.join(25)
        assert "cp" in ls_result, "ls did not finish while the bomb was committed"
        cp = ls_result["cp"]
        assert cp.returncode == 0, "ls failed while the bomb was committed:" + describe(cp)
        assert ls_result["secs"] < 10, f"ls took {ls_result['secs']:.1f}s"
    finally:
        s.close()
    assert server.alive(), "server died after the commit bomb:\n" + server.log()
    server.cli("ls")


# --------------------------------------------------------------------------
# 2. poisoned node


def test_node_bytes_uploaded_as_a_chunk_do_not_poison_a_later_put(server, ca, tmp_path):
    """The bytes of a file's level-1 node, uploaded earlier as a plain CHUNK,
    must not count as "node present": the honest put of that file then
    succeeds and reads back byte-identical."""
    src = make_file(tmp_path / "small.bin", 5000, seed=21)  # < CDC_MIN: one chunk
    data = src.read_bytes()
    node = single_chunk_root(data)
    node_id = sha(node)

    s = raw_client(server, ca)
    try:
        raw_put_start(s, "junk", len(data))
        s.sendall(chunk_frame(node))
        s.sendall(frame(SYNC))
        expect(s, OK, "reply to SYNC after the poison chunk")
        # Committing the poison as a file root must be refused too: the
        # data chunk it names was never sent.
        s.sendall(frame(COMMIT, node_id + struct.pack("<QI", len(data), 0)))
        s.settimeout(10)
        try:
            t, p = read_frame(s)
            assert t == ERROR, ("a commit of a root whose data chunk was never uploaded was accepted: "
                                + describe_reply(t, p))
        except ConnectionError:
            pass  # closed without an ERROR frame: refused all the same
    finally:
        s.close()
    assert "junk" not in server.ls()

    server.put(src, "small.bin", timeout=30)
    st = server.stat("small.bin")
    assert st.get("content id") == node_id.hex(), \
        f"the test's node layout does not match the client's (stat: {st})"
    out = tmp_path / "small.out"
    server.get("small.bin", out, timeout=30)
    assert_same_file(out, src)


# --------------------------------------------------------------------------
# 3. a put refused at SYNC gets its ERROR promptly


def test_put_refused_at_sync_gets_error_promptly(server, ca, tmp_path):
    """NODE naming a chunk the server wants, the chunk never sent, then SYNC:
    an ERROR naming the missing chunk within 10 s (not a hang)."""
    missing = make_file(tmp_path / "never-sent.bin", 3000, seed=31).read_bytes()
    node = single_chunk_root(missing)
    s = raw_client(server, ca, timeout=20)
    try:
        raw_put_start(s, "incomplete", len(missing))
        s.sendall(offer_frame([sha(node)]))
        assert want_bits(expect(s, WANT, "reply to OFFER")) == [True]
        s.sendall(frame(NODE, node))
        assert want_bits(expect(s, WANT, "reply to NODE")) == [True], "the server should want the chunk"
        t0 = time.monotonic()
        s.sendall(frame(SYNC))
        s.settimeout(10)
        try:
            t, p = read_frame(s)
        except socket.timeout:
            pytest.fail("no reply to SYNC within 10 s (the server waits for frames that never come)")
        secs = time.monotonic() - t0
        assert t == ERROR, f"SYNC of an incomplete upload: {describe_reply(t, p)}"
        _, text = error_text(p)
        assert sha(missing).hex()[:16] in text, f"the ERROR should name the missing chunk: {text!r}"
        assert secs < 10
    finally:
        s.close()
    assert "incomplete" not in server.ls()
    ok = make_file(tmp_path / "after.bin", 100 * KiB, seed=32)
    server.put(ok, "after.bin", timeout=30)


@pytest.fixture
def full_disk(tmpfs):
    """An 8 MiB tmpfs."""
    return tmpfs("8m")


def fill(dirpath):
    """Fill the filesystem of dirpath completely."""
    block = b"\xa5" * (64 * KiB)
    with open(Path(dirpath) / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\xa5" * 512)
        except OSError:
            pass


def read_reply(sock, server, what, timeout=10):
    """The next frame within `timeout` s, failing the test on a hang or a
    close without an answer; returns (type, payload, seconds)."""
    t0 = time.monotonic()
    sock.settimeout(timeout)
    try:
        t, p = read_frame(sock)
    except socket.timeout:
        pytest.fail(f"no reply to {what} within {timeout} s:\n" + server.log())
    except (ConnectionError, OSError) as e:
        pytest.fail(f"connection closed without an answer to {what} ({e}):\n" + server.log())
    return t, p, time.monotonic() - t0


def expect_prompt_disk_full_error(s, server, what):
    """The next reply is an ERROR saying the disk is full, within 10 s."""
    t, p, secs = read_reply(s, server, what)
    assert t == ERROR, f"{what}: expected ERROR (disk full), got {describe_reply(t, p)}"
    _, text = error_text(p)
    assert "space" in text.lower(), f"{what}: the ERROR should say the disk is full: {text!r}"
    assert secs < 10, f"{what}: the ERROR took {secs:.1f} s"


def test_put_refused_on_full_disk_gets_error_promptly(full_disk, make_server, ca):
    """drain.py's disk-limit variant, both ways a full disk can refuse a put:
    (a) at SYNC, storing a tree node: the client already waits for the
    answer, so the ERROR comes at once (the server must not wait for more
    frames); (b) at a CHUNK: the server drops the client's remaining CHUNKs
    and answers its next question (NODE) with the ERROR."""
    server = make_server(data=full_disk / "data")
    # (a) A 1-byte chunk stored while there is room; then the disk fills,
    # and a 128-entry node (5128 bytes: more than a page, so it cannot fit
    # in the slack of the segment's last page) must be stored at SYNC.
    s = raw_client(server, ca, timeout=20)
    try:
        raw_put_start(s, "at-sync", 128)
        s.sendall(chunk_frame(b"y"))
        s.sendall(frame(SYNC))
        t, p, _ = read_reply(s, server, "the first SYNC")
        assert t == OK, describe_reply(t, p)
        fill(full_disk)
        node = tree_node(1, [(sha(b"y"), 1)] * 128)
        s.sendall(offer_frame([sha(node)]))
        assert want_bits(expect(s, WANT, "reply to OFFER")) == [True]
        s.sendall(frame(NODE, node))
        assert not any(want_bits(expect(s, WANT, "reply to NODE"))), "its only child is stored"
        s.sendall(frame(SYNC))
        expect_prompt_disk_full_error(s, server, "SYNC on a full disk")
    finally:
        s.close()

    # (b) The disk is still full: the first CHUNK fails.
    rng = random.Random(1)
    chunks = [rng.randbytes(100_000) for _ in range(10)]
    s = raw_client(server, ca, timeout=20)
    try:
        raw_put_start(s, "at-chunk", len(chunks[-1]))
        for c in chunks:
            s.sendall(chunk_frame(c))
        s.sendall(frame(NODE, single_chunk_root(chunks[-1])))
        expect_prompt_disk_full_error(s, server, "NODE after a failed CHUNK")
    finally:
        s.close()
    assert server.alive(), server.log()
    paths = server.ls()
    assert "at-sync" not in paths and "at-chunk" not in paths, paths


# --------------------------------------------------------------------------
# 4. a file that changes during its upload


def rewrite_in_place(path, seed):
    """New bytes over every byte of path, same size, no truncation."""
    size = path.stat().st_size
    data = random.Random(seed).randbytes(size)
    with open(path, "r+b") as f:
        f.write(data)


def shrink(path, seed):
    """The file gets shorter (truncated to 1 MiB) under the upload."""
    os.truncate(path, 1 * MiB)


@pytest.mark.parametrize("change", [rewrite_in_place, shrink],
                         ids=["rewritten-in-place", "shrunk"])
def test_put_of_file_changing_during_upload_fails_cleanly(server, forwarder, procs, tmp_path, change):
    """The file changes while the put is held mid-upload: exit 1 with one
    clear line naming the file and what happened (not a bare "connection
    reset by peer"), and the previous version stays current."""
    local = tmp_path / "moving.bin"
    make_file(local, 1 * MiB, seed=40)
    v1 = tmp_path / "v1.bin"
    v1.write_bytes(local.read_bytes())
    server.put(local, "moving.bin", timeout=30)
    v1_version = server.stat("moving.bin")["version"]

    size = 24 * MiB
    make_file(local, size, seed=41)
    fwd = forwarder(server)
    fwd.hold_up_after(1 * MiB)
    log = open(tmp_path / "put.log", "w+")
    p = procs.popen(client_cmd("put", local, "moving.bin", server=fwd, tls=server.tls),
                    stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while not fwd.held() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fwd.held(), f"the put did not reach the hold point (exit {p.poll()})"
    change(local, 42)
    fwd.release()
    try:
        rc = p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the put hung after its file changed")
    log.seek(0)
    err = log.read().strip()
    log.close()
    print(f"put exit {rc}, stderr: {err}")
    assert rc == 1, f"expected exit 1, got {rc}; stderr:\n{err}"
    assert err, "no error message"
    assert len(err.splitlines()) == 1, f"expected one line on stderr:\n{err}"
    low = err.lower()
    assert "reset by peer" not in low and "broken pipe" not in low, f"unclear message: {err}"
    assert any(w in low for w in ("changed", "does not match", "hash")), \
        f"the message should say the file changed (or its data no longer matches): {err}"
    assert server.stat("moving.bin")["version"] == v1_version, "a version was committed"
    out = tmp_path / "moving.out"
    server.get("moving.bin", out, timeout=30)
    assert_same_file(out, v1)


# --------------------------------------------------------------------------
# 5. slow TLS handshake


def test_trickled_client_hello_is_cut_off_by_handshake_deadline(server, tmp_path):
    """Raw TCP connections trickling a ClientHello one byte every 2 s are
    closed within ~15 s (10 s absolute deadline); a legit client works
    meanwhile."""
    hello = bytes.fromhex("16030100c8010000c40303") + b"\x00" * 200
    socks = [socket.create_connection((HOST, server.port), timeout=5) for _ in range(4)]
    t0 = time.monotonic()
    closed_at = {}
    ls_cp = None
    k = 0
    try:
        while len(closed_at) < len(socks) and time.monotonic() - t0 < 20:
            for i, s in enumerate(socks):
                if i in closed_at:
                    continue
                try:
                    s.send(hello[k:k + 1])
                except OSError:
                    closed_at[i] = time.monotonic() - t0
            k += 1
            if ls_cp is None and time.monotonic() - t0 > 3:
                ls_cp = server.cli("ls", check=False, timeout=10)
            # Wait up to 2 s, noticing a close (EOF or reset) as it happens.
            step_end = time.monotonic() + 2
            while time.monotonic() < step_end and len(closed_at) < len(socks):
                for i, s in enumerate(socks):
                    if i in closed_at:
                        continue
                    s.settimeout(0.05)
                    try:
                        d = s.recv(4096)
                    except socket.timeout:
                        continue
                    except OSError:
                        d = b""
                    if not d:
                        closed_at[i] = time.monotonic() - t0
    finally:
        for s in socks:
            s.close()
    assert ls_cp is not None and ls_cp.returncode == 0, \
        "a legit client failed during the slow handshakes:" + (describe(ls_cp) if ls_cp else "")
    assert len(closed_at) == len(socks), \
        f"only {len(closed_at)} of {len(socks)} trickling connections were closed within 20 s"
    assert max(closed_at.values()) < 15, f"closed after {closed_at} s (deadline 10 s)"
    assert server.alive(), server.log()


# --------------------------------------------------------------------------
# 6. setuid never restored


def test_get_strips_setuid_bit(server, tmp_path):
    src = tmp_path / "suid.sh"
    src.write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(src, 0o4755)
    assert src.stat().st_mode & 0o7777 == 0o4755
    server.put(src, "suid.sh", timeout=30)
    out = tmp_path / "suid.out"
    server.get("suid.sh", out, timeout=30)
    assert_same_file(out, src)
    mode = out.stat().st_mode & 0o7777
    assert mode == 0o755, f"local mode {oct(mode)}, expected 0o755 (setuid must not be restored)"


# --------------------------------------------------------------------------
# 7. pre-1970 mtime with a fraction


def test_pre_1970_fractional_mtime_round_trips(server, tmp_path):
    src = tmp_path / "old.txt"
    src.write_bytes(b"from before the epoch\n")
    mt = -1_500_000_000
    os.utime(src, ns=(mt, mt))
    assert src.stat().st_mtime_ns == mt, "this filesystem cannot hold the test's mtime"
    server.put(src, "old.txt", timeout=30)
    out = tmp_path / "old.out"
    server.get("old.txt", out, timeout=30)
    assert_same_file(out, src)
    assert out.stat().st_mtime_ns == mt, f"mtime {out.stat().st_mtime_ns} ns, expected {mt}"


# --------------------------------------------------------------------------
# 8. symlinks and special files


def test_put_follows_named_symlink_refuses_special_files_skips_inner_symlinks(server, tmp_path):
    target = make_file(tmp_path / "real.bin", 20 * KiB, seed=80)
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    server.put(link, "via-link.bin", timeout=30)
    out = tmp_path / "via-link.out"
    server.get("via-link.bin", out, timeout=30)
    assert_same_file(out, target)

    cp = server.cli("put", "/dev/null", "x", check=False, timeout=30)
    assert_fails(cp, 1, words=("not a regular file or directory",))
    assert "x" not in server.ls()

    d = tmp_path / "dir"
    d.mkdir()
    a = make_file(d / "a.bin", 10 * KiB, seed=81)
    b = make_file(d / "b.bin", 10 * KiB, seed=82)
    (d / "c-link").symlink_to(a)
    (d / "outside").symlink_to(target)
    cp = server.cli("put", d, "dir", timeout=30)
    assert "c-link" in cp.stderr and "outside" in cp.stderr, \
        "skipped symlinks should be named in a warning:" + describe(cp)
    assert "skip" in cp.stderr.lower(), "expected a warning about skipping:" + describe(cp)
    paths = server.ls("dir")
    assert sorted(paths) == ["dir/a.bin", "dir/b.bin"], paths
    for name, want in (("a.bin", a), ("b.bin", b)):
        o = tmp_path / f"{name}.out"
        server.get(f"dir/{name}", o, timeout=30)
        assert_same_file(o, want)


# --------------------------------------------------------------------------
# 9. get interrupted by SIGTERM leaves nothing behind


class DownstreamHold:
    """A one-purpose TCP proxy: carries client -> server freely and at most
    `limit` bytes server -> client, then stops reading from the server (the
    download stalls at a known point however fast the programs are)."""

    def __init__(self, target_port, limit):
        self.target_port = target_port
        self.limit = limit
        self.down = 0
        self.lock = threading.Condition()
        self.closed = False
        self.socks = []
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((HOST, 0))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.addr = f"{HOST}:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            t = socket.create_connection((HOST, self.target_port))
            with self.lock:
                self.socks += [c, t]
            threading.Thread(target=self._pump, args=(c, t, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(t, c, True), daemon=True).start()

    def _pump(self, src, dst, down):
        try:
            while True:
                n = 65536
                if down:
                    with self.lock:
                        self.lock.wait_for(lambda: self.closed or self.down < self.limit)
                        if self.closed:
                            return
                        n = min(n, self.limit - self.down)
                data = src.recv(n)
                if not data:
                    break
                dst.sendall(data)
                if down:
                    with self.lock:
                        self.down += len(data)
                        self.lock.notify_all()
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def held(self):
        with self.lock:
            return self.down >= self.limit

    def close(self):
        with self.lock:
            self.closed = True
            self.lock.notify_all()
            socks = list(self.socks)
        for s in [self.ls] + socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_get_killed_by_sigterm_leaves_no_files(server, procs, tmp_path):
    size = 8 * MiB
    src = make_file(tmp_path / "big.bin", size, seed=90)
    server.put(src, "big.bin", timeout=60)
    proxy = DownstreamHold(server.port, 3 * MiB)
    try:
        dest = tmp_path / "dl" / "big.out"
        dest.parent.mkdir()
        log = open(tmp_path / "get.log", "w+")
        p = procs.popen(client_cmd("get", "big.bin", dest, server=proxy.addr, tls=server.tls),
                        stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        temps = []
        while time.monotonic() < deadline and p.poll() is None:
            temps = list(dest.parent.glob("big.out.syncstore-*"))
            if proxy.held() and temps and temps[0].stat().st_size >= 1 * MiB:
                break
            time.sleep(0.01)
        assert p.poll() is None, f"get ended (exit {p.returncode}) before it could be interrupted"
        assert temps, "no temporary file appeared during the download"
        time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("get did not exit within 10 s of SIGTERM")
        log.seek(0)
        out = log.read()
        log.close()
        assert rc != 0, f"an interrupted get exited 0:\n{out}"
        left = sorted(x.name for x in dest.parent.iterdir())
        assert left == [], f"an interrupted get left {left} (exit {rc}):\n{out}"
    finally:
        proxy.close()


# --------------------------------------------------------------------------
# 10. a chunk repeated in the file travels once


def test_repeated_block_file_sends_each_chunk_once(server, forwarder, tmp_path):
    block = make_file(tmp_path / "block", 1 * MiB, seed=100).read_bytes()
    src = tmp_path / "repeat.bin"
    src.write_bytes(block * 16)
    fwd = forwarder(server)
    server.cli("put", src, "repeat.bin", server=fwd, timeout=60)
    assert fwd.up < 3 * MiB, f"a 16 MiB file of one 1 MiB block repeated sent {fwd.up} bytes up"
    out = tmp_path / "repeat.out"
    server.get("repeat.bin", out, timeout=60)
    assert_same_file(out, src)


# --------------------------------------------------------------------------
# 11. status flags


def test_status_wait_timeout_and_json(server):
    cp = server.cli("status", "--wait", "--timeout", "abc", check=False, timeout=10)
    assert cp.returncode == 2, "a non-numeric --timeout is a usage error:" + describe(cp)
    assert cp.stderr.strip(), "expected a usage message:" + describe(cp)

    t0 = time.monotonic()
    cp = server.cli("status", "--wait", check=False, timeout=15)
    secs = time.monotonic() - t0
    assert cp.returncode == 0, "status --wait on a single server:" + describe(cp)
    assert secs < 5, f"status --wait on a single server took {secs:.1f}s"

    cp = server.cli("status", "--json", timeout=10)
    try:
        doc = json.loads(cp.stdout)
    except ValueError:
        pytest.fail("status --json is not valid JSON:" + describe(cp))
    assert isinstance(doc, dict) and doc.get("servers"), doc
    assert doc.get("converged") is True, doc


# --------------------------------------------------------------------------
# 12. a server answering with a WANT of the wrong count


class FakeServer:
    """A TLS server with a server-role certificate of the cluster CA that
    speaks just enough of a put to answer the client's NODE with a WANT of
    1024 entries."""

    def __init__(self, ca, certdir, name):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.ctx.load_cert_chain(str(certdir / f"{name}.crt"), str(certdir / f"{name}.key"))
        self.ctx.load_verify_locations(str(Path(ca) / "ca.crt"))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((HOST, 0))
        self.ls.listen(4)
        self.port = self.ls.getsockname()[1]
        self.addr = f"{HOST}:{self.port}"
        self.seen = []
        self.conns = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            raw, _ = self.ls.accept()
            self.conns.append(raw)
            raw.settimeout(30)
            s = self.ctx.wrap_socket(raw, server_side=True)
            self.conns.append(s)
            t, _ = read_frame(s)
            self.seen.append(t)
            s.sendall(frame(HELLO_T, b"SYNCSTOR" + struct.pack("<HHI", 1, 1, 0)))
            while True:
                t, p = read_frame(s)
                self.seen.append(t)
                if t == PUT:
                    s.sendall(frame(OK, struct.pack("<Q", 0)))
                elif t == OFFER:
                    (n,) = struct.unpack("<H", p[:2])
                    s.sendall(frame(WANT, struct.pack("<H", n) + b"\xff" * ((n + 7) // 8)))
                elif t == NODE:
                    s.sendall(frame(WANT, struct.pack("<H", 1024) + b"\xff" * 128))
                else:
                    return
        except (OSError, ConnectionError, AssertionError, ssl.SSLError):
            return

    def close(self):
        for s in [self.ls] + self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept/recv
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        self.thread.join(5)


def test_client_rejects_want_with_wrong_count(ca, tmp_path, cli):
    certdir = tmp_path / "evil"
    cp = subprocess.run([BIN, "cert", "issue", "--tls", str(ca), "--role", "server", "--name", "evil",
                         "--out", str(certdir)], capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, "cert issue failed:" + describe(cp)
    fake = FakeServer(ca, certdir, "evil")
    try:
        src = make_file(tmp_path / "f.bin", 50 * KiB, seed=120)
        cp = cli("put", src, "f.bin", server=fake.addr, check=False, timeout=30)
        print(f"client exit {cp.returncode}: {cp.stderr.strip()}")
        assert NODE in fake.seen, f"the exchange did not reach NODE (frames seen: {fake.seen}):" + describe(cp)
        assert cp.returncode == 1, ("expected exit 1 (a protocol error), "
                                    f"got {cp.returncode}" + (" (a signal)" if cp.returncode < 0 else "")
                                    + ":" + describe(cp))
        assert_fails(cp, 1, words=("protocol", "answered", "children", "want"))
        assert "AddressSanitizer" not in cp.stderr and "runtime error" not in cp.stderr, describe(cp)
    finally:
        fake.close()


# --------------------------------------------------------------------------
# overlapped put batches (docs/WIRE.md, "put")


def test_two_batches_open_at_once_and_a_third_is_refused(server, ca, tmp_path):
    """A client may send batch 2's OFFER and NODE before batch 1's chunks and
    SYNC; NODEs join the newest batch, SYNC closes the oldest, a chunk that
    batch 1 asked for is not asked for again by batch 2, and the file commits
    and reads back.  A third batch opened before any SYNC is refused."""
    a, b, c = (bytes([i]) * 5000 for i in (1, 2, 3))
    n1 = tree_node(1, [(sha(a), len(a)), (sha(b), len(b))])
    n2 = tree_node(1, [(sha(b), len(b)), (sha(c), len(c))])  # b again: already asked for
    root = tree_node(2, [(sha(n1), len(a) + len(b)), (sha(n2), len(b) + len(c))])
    total = len(a) + 2 * len(b) + len(c)

    s = raw_client(server, ca)
    try:
        raw_put_start(s, "overlap", total)
        s.sendall(offer_frame([sha(n1)]))
        assert want_bits(expect(s, WANT, "OFFER 1")) == [True]
        s.sendall(frame(NODE, n1))
        assert want_bits(expect(s, WANT, "NODE 1")) == [True, True]
        # batch 2 opens while batch 1's chunks are still to come
        s.sendall(offer_frame([sha(n2)]))
        assert want_bits(expect(s, WANT, "OFFER 2")) == [True]
        s.sendall(chunk_frame(a))
        s.sendall(frame(NODE, n2))
        assert want_bits(expect(s, WANT, "NODE 2")) == [False, True], \
            "batch 2 asked again for a chunk batch 1 had asked for"
        s.sendall(chunk_frame(b))
        s.sendall(frame(SYNC))  # closes batch 1
        expect(s, OK, "SYNC 1")
        s.sendall(chunk_frame(c))
        s.sendall(frame(SYNC))  # closes batch 2
        expect(s, OK, "SYNC 2")
        s.sendall(offer_frame([sha(root)]))
        assert want_bits(expect(s, WANT, "OFFER root")) == [True]
        s.sendall(frame(NODE, root))
        assert want_bits(expect(s, WANT, "NODE root")) == [False, False]
        s.sendall(frame(SYNC))
        expect(s, OK, "SYNC root")
        s.sendall(frame(COMMIT, sha(root) + struct.pack("<QI", total, 0)))
        expect(s, OK, "COMMIT")
    finally:
        s.close()
    out = tmp_path / "overlap.out"
    server.cli("get", "overlap", str(out))
    assert out.read_bytes() == a + b + b + c

    s = raw_client(server, ca)
    try:
        raw_put_start(s, "three", 3 * 5000)
        for i, d in enumerate((bytes([7]) * 5000, bytes([8]) * 5000)):
            s.sendall(offer_frame([sha(tree_node(1, [(sha(d), len(d))]))]))
            assert want_bits(expect(s, WANT, f"OFFER {i + 1}")) == [True]
        d = bytes([9]) * 5000
        s.sendall(offer_frame([sha(tree_node(1, [(sha(d), len(d))]))]))
        t, p = read_frame(s)
        assert t == ERROR and "batches open" in error_text(p)[1], describe_reply(t, p)
    finally:
        s.close()
    assert server.cli("ls").returncode == 0, "the server stopped serving after a refused batch"
