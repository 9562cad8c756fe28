"""Small files of a directory put travel whole, one PUT_SMALL frame each,
without waiting for answers; the server commits those that arrive together
in one transaction (docs/WIRE.md).  Checked here: everything arrives
byte-identical and replicated, mixed with large files in any order; the
server really groups commits; a refusal still refuses every file; a failed
file fails the put with its name."""

import os
import re
import struct

from conftest import (KiB, MiB, assert_fails, describe, frame, hello_exchange, make_file, raw_tls,
                      read_frame, tls_context, wait_converged, wire_str)
from test_quorum import CONVERGE, wait_peers_gone


def make_tree(root, n, seed=0):
    """n small files (0 B to 64 KiB, sizes at the edges included) in a few
    directories, plus two files over the small-file limit in between."""
    sizes = [0, 1, 64 * KiB, 64 * KiB + 1] + [(i * 7919) % (20 * KiB) + 1 for i in range(n)]
    files = {}
    for i, size in enumerate(sizes):
        rel = f"d{i % 7}/f{i:04d}.bin"
        files[rel] = make_file(root / rel, size, seed=seed + i)
    files["d3/big.bin"] = make_file(root / "d3" / "big.bin", 3 * MiB + 5, seed=seed + 9999)
    return files


def test_small_files_round_trip_and_replicate(make_cluster, tmp_path):
    c = make_cluster(3)
    files = make_tree(tmp_path / "tree", 400, seed=100)
    cp = c[0].cli("put", str(tmp_path / "tree"), "t")
    assert f"{len(files)} files" in cp.stdout, describe(cp)
    wait_converged(c.servers, CONVERGE)
    for s in (c[1], c[2]):
        out = tmp_path / f"back{s.port}"
        s.cli("get", "t", str(out))
        for rel, src in files.items():
            got = out / rel
            assert got.exists() and got.read_bytes() == src.read_bytes(), \
                f"{rel} from server {s.addr} differs from what was put"
            assert got.stat().st_mtime_ns == src.stat().st_mtime_ns, f"{rel}: mtime not kept"
    groups = [int(n) for n in re.findall(r"put (\d+) small files? in one commit", c[0].log())]
    assert groups and max(groups) > 1 and sum(groups) == len(files) - 2, \
        f"the server should commit small files in groups; its log says {groups} for {len(files) - 2}"


def test_small_files_update_in_place(make_cluster, tmp_path):
    """A second put of the tree with some files changed writes new versions
    of those, and the history has both."""
    c = make_cluster(3)
    tree = tmp_path / "tree"
    files = make_tree(tree, 50, seed=300)
    c[0].cli("put", str(tree), "t")
    changed = tree / "d1" / "f0008.bin"
    changed.write_bytes(b"new content")
    c[1].cli("put", str(tree), "t")
    wait_converged(c.servers, CONVERGE)
    out = tmp_path / "x"
    c[2].cli("get", "t/d1/f0008.bin", str(out))
    assert out.read_bytes() == b"new content"
    log = c[2].cli("log", "t/d1/f0008.bin").stdout
    assert len([l for l in log.splitlines() if l.strip() and not l.startswith(("VERSION", "SEQ"))]) >= 2, log


def test_small_files_refused_without_quorum(make_cluster, tmp_path):
    c = make_cluster(3, extra=("--quorum-timeout", "5"))
    files = make_tree(tmp_path / "tree", 30, seed=500)
    c[1].kill9()
    c[2].kill9()
    wait_peers_gone(c, 0, (1, 2))
    cp = c[0].cli("put", str(tmp_path / "tree"), "t", check=False)
    err = assert_fails(cp, 1, words=("write quorum not available",))
    assert "nothing was written" in err, describe(cp)
    listed = c[0].cli("ls", "t", check=False).stdout
    assert not any(rel.split("/")[-1] in listed for rel in files), f"refused, yet ls shows: {listed}"


def small_frame(path, data, flags=1):
    """PUT_SMALL (18): path str, size u64, mode u32, mtime_ns i64, flags u32
    (1 = deferred), then the bytes."""
    return frame(18, wire_str(path) + struct.pack("<QIqI", len(data), 0o644, 1_700_000_000 * 10**9, flags) + data)


def test_small_puts_answered_in_order_each_alone(server, ca, tmp_path):
    """Pipelined PUT_SMALLs: each gets its own answer, in order; a bad one
    (path, size) gets ERROR and the session goes on; the good ones are
    committed, together."""
    sock = raw_tls(server, tls_context(ca, ca))
    hello_exchange(sock)
    reqs = [("ok/a", b"alpha"), ("bad/../b", b"beta"), ("ok/c", b""), ("ok/d", os.urandom(64 * 1024))]
    sock.sendall(b"".join(small_frame(p, d) for p, d in reqs))
    answers = [read_frame(sock) for _ in reqs]
    kinds = [t for t, _ in answers]
    assert kinds == [3, 2, 3, 3], f"expected OK, ERROR, OK, OK in order; got types {kinds}: {answers}"
    seqs = [struct.unpack("<Q", p)[0] for t, p in answers if t == 3]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3, f"seqs {seqs}"
    # A size that disagrees with the bytes is a protocol error: the
    # connection ends with an ERROR, the server keeps serving.
    sock.sendall(frame(18, wire_str("ok/e") + struct.pack("<QIqI", 10, 0o644, 0, 1) + b"short"))
    t, payload = read_frame(sock)
    assert t == 2, f"a PUT_SMALL whose size disagrees with its bytes should get ERROR, got {t} {payload!r}"
    sock.close()
    listed = server.ls("ok")
    for name in ("ok/a", "ok/c", "ok/d"):
        assert name in listed, f"{name} should be committed; ls: {listed}"
    assert "ok/e" not in listed
    out = tmp_path / "d"
    server.get("ok/d", out)
    assert out.read_bytes() == reqs[3][1]
