"""put / get / ls / rm / mv / stat / status against one server."""

import os
import re

import pytest

from conftest import MiB, assert_fails, assert_same_file, make_file, make_text_file

MTIME = 1_600_000_000  # whole seconds: exact whatever the precision kept


@pytest.mark.parametrize("size", [0, 1, 8191, 8192, 131072, 131073, 1 * MiB, 5 * MiB])
def test_roundtrip_sizes(server, tmp_path, size):
    src = make_file(tmp_path / "src.bin", size, seed=size)
    server.put(src, f"sizes/{size}.bin")
    out = tmp_path / "out" / "got.bin"
    out.parent.mkdir()
    server.get(f"sizes/{size}.bin", out)
    assert_same_file(out, src)


def test_roundtrip_compressible_text(server, tmp_path):
    src = make_text_file(tmp_path / "words.txt", 3 * MiB + 17, seed=7)
    server.put(src, "docs/words.txt")
    out = tmp_path / "words.out"
    server.get("docs/words.txt", out)
    assert_same_file(out, src)


@pytest.mark.parametrize("mode", [0o640, 0o755, 0o600, 0o444])
def test_mode_and_mtime_restored(server, tmp_path, mode):
    src = make_file(tmp_path / "m.bin", 20000, seed=mode)
    os.chmod(src, mode)
    os.utime(src, (MTIME, MTIME))
    server.put(src, "m.bin")
    out = tmp_path / "m.out"
    server.get("m.bin", out)
    assert_same_file(out, src)
    st = out.stat()
    assert oct(st.st_mode & 0o7777) == oct(mode), "mode not restored"
    assert int(st.st_mtime) == MTIME, f"mtime not restored: {st.st_mtime} != {MTIME}"


def test_subsecond_mtime_restored(server, tmp_path):
    src = make_file(tmp_path / "ns.bin", 1000, seed=3)
    mtime_ns = MTIME * 10**9 + 123_456_789
    os.utime(src, ns=(mtime_ns, mtime_ns))
    server.put(src, "ns.bin")
    out = tmp_path / "ns.out"
    server.get("ns.bin", out)
    got = out.stat().st_mtime_ns
    assert abs(got - mtime_ns) < 1_000_000, f"mtime {got} differs from {mtime_ns} by more than 1 ms"


def make_tree(root):
    files = {
        "a.txt": 100,
        "sub/b.bin": 70000,
        "sub/deeper/c.bin": 300000,
        "sub/deeper/d.bin": 0,
        "other/e.bin": 5000,
    }
    for i, (rel, size) in enumerate(sorted(files.items())):
        make_file(root / rel, size, seed=100 + i)
    (root / "emptydir").mkdir()
    return files


def test_directory_put_recursive(server, tmp_path):
    tree = tmp_path / "tree"
    files = make_tree(tree)
    server.put(tree, "proj")
    listed = server.ls()
    assert sorted(listed) == sorted(f"proj/{rel}" for rel in files), f"ls shows {listed}"
    for rel in files:
        out = tmp_path / "out" / rel.replace("/", "_")
        out.parent.mkdir(exist_ok=True)
        server.get(f"proj/{rel}", out)
        assert_same_file(out, tree / rel)


def test_ls_with_prefix(server, tmp_path):
    tree = tmp_path / "tree"
    make_tree(tree)
    server.put(tree, "proj")
    one = make_file(tmp_path / "one.bin", 10, seed=1)
    server.put(one, "top.bin")
    assert sorted(server.ls("proj/sub")) == ["proj/sub/b.bin", "proj/sub/deeper/c.bin",
                                             "proj/sub/deeper/d.bin"]
    assert sorted(server.ls("proj/sub/deeper")) == ["proj/sub/deeper/c.bin", "proj/sub/deeper/d.bin"]
    assert server.ls("proj/other") == ["proj/other/e.bin"]
    assert server.ls("nothing/here") == []
    assert len(server.ls()) == 6


def test_ls_empty_store(server):
    cp = server.cli("ls")
    assert cp.stdout.strip() == "", f"ls of an empty store printed {cp.stdout!r}"


def test_rm_then_get_fails(server, tmp_path):
    src = make_file(tmp_path / "x.bin", 5000, seed=5)
    server.put(src, "dir/x.bin")
    server.put(src, "dir/y.bin")
    server.cli("rm", "dir/x.bin")
    assert server.ls() == ["dir/y.bin"]
    out = tmp_path / "x.out"
    cp = server.get("dir/x.bin", out, check=False)
    assert_fails(cp, 1)
    assert not out.exists(), "get of a removed path created the local file"
    server.get("dir/y.bin", out)
    assert_same_file(out, src)


def test_rm_missing_fails(server):
    cp = server.cli("rm", "not/there", check=False)
    assert_fails(cp, 1)


def test_rm_recursive(server, tmp_path):
    tree = tmp_path / "tree"
    make_tree(tree)
    server.put(tree, "gone")
    keep = make_file(tmp_path / "keep.bin", 1234, seed=9)
    server.put(keep, "keep/k.bin")
    server.put(keep, "gonekeep.bin")  # shares a string prefix, not a directory
    server.cli("rm", "-r", "gone")
    assert sorted(server.ls()) == ["gonekeep.bin", "keep/k.bin"]
    cp = server.get("gone/sub/b.bin", tmp_path / "b.out", check=False)
    assert_fails(cp, 1)


def test_mv(server, tmp_path):
    src = make_file(tmp_path / "a.bin", 200000, seed=11)
    os.chmod(src, 0o640)
    os.utime(src, (MTIME, MTIME))
    server.put(src, "old/name.bin")
    server.cli("mv", "old/name.bin", "new/place/name2.bin")
    assert server.ls() == ["new/place/name2.bin"]
    out = tmp_path / "moved.out"
    server.get("new/place/name2.bin", out)
    assert_same_file(out, src)
    assert out.stat().st_mode & 0o7777 == 0o640
    assert int(out.stat().st_mtime) == MTIME
    cp = server.get("old/name.bin", tmp_path / "old.out", check=False)
    assert_fails(cp, 1)


def test_mv_missing_fails(server):
    cp = server.cli("mv", "nope", "other", check=False)
    assert_fails(cp, 1)
    assert server.ls() == []


def test_stat_fields(server, tmp_path):
    size = 300000
    src = make_file(tmp_path / "s.bin", size, seed=12)
    os.chmod(src, 0o640)
    os.utime(src, (MTIME, MTIME))
    server.put(src, "st/s.bin")
    cp = server.cli("stat", "st/s.bin")
    st = {}
    for line in cp.stdout.splitlines():
        if ":" in line:
            k, _, v = line.partition(":")
            st[k.strip()] = v.strip()
    show = f"\nstat printed:\n{cp.stdout}"
    for key in ("path", "size", "mode", "mtime", "version", "content id", "durable on"):
        assert key in st, f"stat has no '{key}:' line" + show
    assert st["path"] == "st/s.bin", show
    assert re.match(rf"{size}\b", st["size"]), f"size should start with {size}" + show
    assert "(" in st["size"], "size should show a human-readable form in parentheses" + show
    assert st["mode"] == "0640", show
    assert st["mtime"], show
    assert re.fullmatch(r"\d+", st["version"]) and int(st["version"]) >= 1, show
    assert re.fullmatch(r"[0-9a-f]{64}", st["content id"]), show
    assert re.match(r"1 of 1 servers?", st["durable on"]), show


def test_stat_content_id_is_content(server, tmp_path):
    a = make_file(tmp_path / "a.bin", 100000, seed=21)
    b = make_file(tmp_path / "b.bin", 100000, seed=22)
    server.put(a, "a1")
    server.put(a, "a2")
    server.put(b, "b1")
    ida, ida2, idb = (server.stat(p)["content id"] for p in ("a1", "a2", "b1"))
    assert ida == ida2, "the same content should have the same content id"
    assert ida != idb, "different content should have different content ids"


def test_stat_missing_fails(server):
    assert_fails(server.cli("stat", "missing.txt", check=False), 1)


def test_put_existing_path_is_update(server, tmp_path):
    v1 = make_file(tmp_path / "v1.bin", 150000, seed=31)
    v2 = make_file(tmp_path / "v2.bin", 90000, seed=32)
    server.put(v1, "doc.bin")
    ver1 = int(server.stat("doc.bin")["version"])
    server.put(v2, "doc.bin")
    ver2 = int(server.stat("doc.bin")["version"])
    assert ver2 > ver1, f"version did not increase on update: {ver1} -> {ver2}"
    out = tmp_path / "doc.out"
    server.get("doc.bin", out)
    assert_same_file(out, v2)
    assert server.ls() == ["doc.bin"]


def test_get_overwrites_existing_local_file(server, tmp_path):
    src = make_file(tmp_path / "src.bin", 50000, seed=41)
    server.put(src, "f.bin")
    out = make_file(tmp_path / "out.bin", 999999, seed=42)
    server.get("f.bin", out)
    assert_same_file(out, src)


def test_get_missing_path_fails(server, tmp_path):
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    cp = server.get("no/such/file.txt", outdir / "missing.out", check=False)
    assert_fails(cp, 1, words=("no/such/file.txt", "not found", "no such", "does not exist"))
    assert len(cp.stderr.strip().splitlines()) == 1, "expected one line on stderr:\n" + cp.stderr
    assert os.listdir(outdir) == [], f"get of a missing path left {os.listdir(outdir)}"


def test_status_json_counts(server, tmp_path):
    st0 = server.status()
    sizes = [1000, 20000, 300000]
    for i, size in enumerate(sizes):
        server.put(make_file(tmp_path / f"f{i}", size, seed=50 + i), f"st/f{i}")
    st = server.status()
    show = f"\nstatus: {st}"
    assert len(st["servers"]) == 1, show
    me = st["servers"][0]
    assert me["self"] is True, show
    assert me["files"] == 3, show
    assert me["bytes"] >= sum(sizes), show
    assert isinstance(me["head"], int) and me["head"] >= 3, show
    assert me["head"] >= st0["servers"][0]["head"] + 3, show
    assert re.fullmatch(r"[0-9a-f]+", me["node"]), show
    assert re.fullmatch(r"[0-9a-f]+", me["digest"]), show
    assert me["pending_records"] == 0 and me["pending_bytes"] == 0, show
    assert st["converged"] is True, show
    # The digest is a digest of the namespace: it changes with it.
    server.cli("rm", "st/f0")
    st2 = server.status()
    assert st2["servers"][0]["files"] == 2
    assert st2["servers"][0]["digest"] != me["digest"], "namespace digest did not change after rm"
    assert st2["servers"][0]["head"] > me["head"], "head did not advance after rm"


def test_status_text(server):
    cp = server.cli("status")
    assert cp.stdout.strip(), "status printed nothing"


def test_many_small_files_in_one_directory_put(server, tmp_path):
    tree = tmp_path / "many"
    for i in range(200):
        make_file(tree / f"d{i % 7}" / f"f{i}.bin", (i * 37) % 3000, seed=1000 + i)
    server.put(tree, "many")
    listed = server.ls("many")
    assert len(listed) == 200, f"ls shows {len(listed)} files, expected 200"
    out = tmp_path / "f123.out"
    server.get("many/d4/f123.bin", out)
    assert_same_file(out, tree / "d4" / "f123.bin")


def test_put_local_missing_fails(server, tmp_path):
    cp = server.put(tmp_path / "does-not-exist", "x", check=False)
    assert_fails(cp, 1)
    assert server.ls() == []


def test_get_of_a_directory_prefix_fetches_the_tree(server, tmp_path):
    """`get PREFIX LOCAL` where PREFIX is a directory put earlier mirrors it."""
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    files = {
        "top.bin": make_file(src / "top.bin", 100_000, seed=41),
        "sub/mid.bin": make_file(src / "sub" / "mid.bin", 1, seed=42),
        "sub/deeper/low.bin": make_file(src / "sub" / "deeper" / "low.bin", 300_000, seed=43),
    }
    os.chmod(src / "sub" / "mid.bin", 0o600)
    server.put(src, "tree")
    out = tmp_path / "out"
    cp = server.cli("get", "tree", str(out))
    assert "3 files" in cp.stdout, cp.stdout
    for rel, original in files.items():
        assert_same_file(out / rel, original)
    assert (os.stat(out / "sub" / "mid.bin").st_mode & 0o777) == 0o600
    # A prefix with nothing under it is still a clear "no such file".
    assert_fails(server.cli("get", "tre", str(tmp_path / "x"), check=False), 1, words=("no such file",))
