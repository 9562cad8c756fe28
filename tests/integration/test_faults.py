"""Faults: a full disk, a corrupt chunk on disk, a crash in the middle of a
put, clean shutdown, a data directory in use or of a newer format."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (MiB, KiB, assert_fails, assert_same_file, client_cmd, describe, make_file,
                      run_server_once)


# ---- (1) disk full -------------------------------------------------------

@pytest.fixture
def small_disk(tmpfs):
    """A 48 MiB tmpfs."""
    return tmpfs("48m")


def test_disk_full(small_disk, make_server, tmp_path):
    server = make_server(data=small_disk / "data")
    small = make_file(tmp_path / "small.bin", 4 * MiB, seed=1)
    server.put(small, "small.bin")
    big = make_file(tmp_path / "big.bin", 64 * MiB, seed=2)
    cp = server.put(big, "big.bin", check=False, timeout=120)
    assert_fails(cp, 1, words=("space", "full"))
    assert server.alive(), "server died on a full disk:\n" + server.log()
    assert "big.bin" not in server.ls(), "a failed put is visible"
    out = tmp_path / "small.out"
    server.get("small.bin", out)
    assert_same_file(out, small)
    # A failing command in between changes nothing; reads still work.
    assert_fails(server.cli("rm", "nothing-here", check=False), 1)
    out2 = tmp_path / "small2.out"
    server.get("small.bin", out2)
    assert_same_file(out2, small)
    st = server.status()
    assert st["servers"][0]["files"] == 1, st


def test_disk_full_then_restart(small_disk, make_server, tmp_path):
    """What was stored before the disk filled is still there after a restart."""
    server = make_server(data=small_disk / "data")
    small = make_file(tmp_path / "small.bin", 2 * MiB, seed=3)
    server.put(small, "small.bin")
    big = make_file(tmp_path / "big.bin", 64 * MiB, seed=4)
    assert_fails(server.put(big, "big.bin", check=False, timeout=120), 1, words=("space", "full"))
    server.stop()
    server.start()
    out = tmp_path / "small.out"
    server.get("small.bin", out)
    assert_same_file(out, small)


# ---- (2) a corrupt chunk on disk -----------------------------------------

def largest_file(root):
    files = [p for p in Path(root).rglob("*") if p.is_file()]
    assert files, f"no files under {root}"
    return max(files, key=lambda p: p.stat().st_size)


def corrupt_stored_copy(seg_dir, src):
    """Flip one byte of src's data where it sits in the largest segment file
    (random data is stored raw, so its bytes can be found); falls back to
    the middle of the file.  Returns (segment, offset)."""
    target = largest_file(seg_dir)
    data = target.read_bytes()
    want = src.read_bytes()
    mid = len(want) // 2
    at = data.find(want[mid:mid + 64])
    offset = at if at >= 0 else len(data) // 2
    with open(target, "r+b") as f:
        f.seek(offset)
        f.write(bytes([data[offset] ^ 0xFF]))
    return target, offset


def test_corrupt_chunk_detected(make_server, tmp_path):
    server = make_server()
    early = make_file(tmp_path / "early.bin", 10 * KiB, seed=5)
    server.put(early, "early.bin")
    victim = make_file(tmp_path / "victim.bin", 1 * MiB, seed=6)
    server.put(victim, "victim.bin")
    assert server.stop() == 0
    seg = server.data / "seg"
    assert seg.is_dir(), f"no seg/ under the data directory: {sorted(os.listdir(server.data))}"
    corrupt_stored_copy(seg, victim)
    server.start()

    outdir = tmp_path / "out"
    outdir.mkdir()
    cp = server.get("victim.bin", outdir / "victim.out", check=False)
    assert_fails(cp, 1, words=("corrupt",))
    assert os.listdir(outdir) == [], f"a failed get left files behind: {os.listdir(outdir)}"
    assert server.alive(), "server died serving a corrupt chunk:\n" + server.log()
    # Everything else is still served.
    server.get("early.bin", outdir / "early.out")
    assert_same_file(outdir / "early.out", early)


def test_corrupt_chunk_healed_by_reput(make_server, tmp_path):
    """After corruption is found, putting the file again repairs it."""
    server = make_server()
    victim = make_file(tmp_path / "victim.bin", 1 * MiB, seed=7)
    server.put(victim, "victim.bin")
    assert server.stop() == 0
    corrupt_stored_copy(server.data / "seg", victim)
    server.start()
    assert_fails(server.get("victim.bin", tmp_path / "v1.out", check=False), 1, words=("corrupt",))
    server.put(victim, "victim.bin")
    server.get("victim.bin", tmp_path / "v2.out")
    assert_same_file(tmp_path / "v2.out", victim)


# ---- (3) crash during a put ----------------------------------------------

def test_server_killed_during_put(make_server, forwarder, procs, tmp_path):
    server = make_server()
    a = make_file(tmp_path / "a.bin", 3 * MiB, seed=8)
    b = make_file(tmp_path / "b.bin", 200 * KiB, seed=9)
    server.put(a, "keep/a.bin")
    server.put(b, "keep/b.bin")
    big = make_file(tmp_path / "big.bin", 64 * MiB, seed=10)

    fwd = forwarder(server)
    fwd.hold_up_after(16 * MiB)
    log = open(tmp_path / "put.log", "wb")
    p = procs.popen(client_cmd("put", big, "inflight/big.bin", server=fwd, tls=server.tls),
                    stdout=log, stderr=log)
    got = fwd.wait_up(16 * MiB, timeout=60)
    assert got >= 16 * MiB, f"only {got} bytes flowed: {(tmp_path / 'put.log').read_text()}"
    time.sleep(0.2)  # the server is busy storing what it received
    server.kill9()
    fwd.drop_connections()
    try:
        rc = p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the client did not notice that the server died")
    log.close()
    assert rc != 0, "the put reported success although the server was killed in the middle"

    server.start()
    out = tmp_path / "out"
    out.mkdir()
    for name, src in (("keep/a.bin", a), ("keep/b.bin", b)):
        server.get(name, out / "x")
        assert_same_file(out / "x", src)
    listed = server.ls()
    assert sorted(n for n in listed if n.startswith("keep/")) == ["keep/a.bin", "keep/b.bin"]
    if "inflight/big.bin" in listed:
        server.get("inflight/big.bin", out / "big")
        assert_same_file(out / "big", big)
    # And the upload can be done again (resuming what survived).
    server.put(big, "inflight/big.bin", timeout=180)
    server.get("inflight/big.bin", out / "big2", timeout=120)
    assert_same_file(out / "big2", big)


def test_acknowledged_put_survives_kill9(make_server, tmp_path):
    server = make_server()
    srcs = [make_file(tmp_path / f"f{i}.bin", 100 * KiB * (i + 1), seed=20 + i) for i in range(5)]
    for i, src in enumerate(srcs):
        server.put(src, f"f{i}.bin")
    server.cli("rm", "f0.bin")
    server.cli("mv", "f1.bin", "moved/f1.bin")
    server.kill9()  # right after the acknowledgements
    server.start()
    assert sorted(server.ls()) == ["f2.bin", "f3.bin", "f4.bin", "moved/f1.bin"]
    server.get("moved/f1.bin", tmp_path / "o1")
    assert_same_file(tmp_path / "o1", srcs[1])
    for i in (2, 3, 4):
        server.get(f"f{i}.bin", tmp_path / "o")
        assert_same_file(tmp_path / "o", srcs[i])


# ---- (4) clean shutdown --------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_clean_exit_and_restart(make_server, tmp_path, sig):
    server = make_server()
    src = make_file(tmp_path / "f.bin", 500 * KiB, seed=30)
    os.chmod(src, 0o640)
    server.put(src, "dir/f.bin")
    server.put(src, "dir/f.bin")  # version 2
    ver = server.stat("dir/f.bin")["version"]
    head = server.status()["servers"][0]["head"]
    rc = server.stop(sig)
    assert rc == 0, f"exit code {rc} after {sig.name}:\n{server.log()}"
    server.start()
    assert server.ls() == ["dir/f.bin"]
    assert server.stat("dir/f.bin")["version"] == ver
    assert server.status()["servers"][0]["head"] >= head
    server.get("dir/f.bin", tmp_path / "o")
    assert_same_file(tmp_path / "o", src)
    assert (tmp_path / "o").stat().st_mode & 0o777 == 0o640


def test_listening_message(server):
    assert "listening on" in server.log(), "the server did not log 'listening on':\n" + server.log()


def test_sigterm_during_idle_connection(make_server, ca, tmp_path):
    """An open client connection does not keep the server from exiting."""
    from conftest import hello_exchange, raw_tls, tls_context
    server = make_server()
    s = raw_tls(server, tls_context(ca))
    hello_exchange(s)
    try:
        assert server.stop(timeout=15) == 0, server.log()
    finally:
        s.close()


# ---- (5) the data directory ----------------------------------------------

def test_second_server_on_same_data_refused(make_server, tmp_path):
    server = make_server()
    src = make_file(tmp_path / "f.bin", 1000, seed=40)
    server.put(src, "f.bin")
    cp = run_server_once(server.data, server.tls)
    assert cp.returncode != 0, "a second server on the same --data started" + describe(cp)
    assert "in use" in (cp.stderr + cp.stdout).lower(), "the message should say the data is in use" + describe(cp)
    # The first one is undisturbed.
    assert server.alive()
    server.get("f.bin", tmp_path / "o")
    assert_same_file(tmp_path / "o", src)


def test_newer_format_refused(make_server, tmp_path):
    server = make_server()
    src = make_file(tmp_path / "f.bin", 1000, seed=41)
    server.put(src, "f.bin")
    assert server.stop() == 0
    fmt = server.data / "FORMAT"
    assert fmt.is_file(), f"no FORMAT file in the data directory: {sorted(os.listdir(server.data))}"
    fmt.write_text("syncstore-store 99\n")
    cp = run_server_once(server.data, server.tls)
    assert cp.returncode != 0, "a server started on a newer format" + describe(cp)
    assert "format" in (cp.stderr + cp.stdout).lower(), "the message should mention the format" + describe(cp)
    assert fmt.read_text() == "syncstore-store 99\n", "the refused server rewrote FORMAT"


def test_data_dir_is_a_file_refused(tmp_path, ca):
    f = tmp_path / "notadir"
    f.write_text("x")
    cp = run_server_once(f, ca)
    assert cp.returncode != 0, describe(cp)
    assert cp.stderr.strip(), "expected an error message" + describe(cp)
