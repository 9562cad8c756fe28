"""Remote paths are relative and can never escape the store's root.

Bad paths are refused by the client commands and, when a client skips its
own checks (a raw connection), by the server.
"""

import struct

import pytest

from conftest import (assert_fails, assert_same_file, frame, hello_exchange, make_file,
                      raw_tls, read_frame, tls_context, wire_str)

BAD_PATHS = [
    "../x",
    "..",
    "a/../b",
    "a/b/..",
    "/abs",
    "/",
    "a//b",
    "a/",
    "./a",
    ".",
    "a/./b",
    "n" * 256,
    "dir/" + "y" * 256,
    "",
]


def ids(paths):
    return [repr(p) if len(p) < 30 else f"{p[:8]!r}...({len(p)} bytes)" for p in paths]


@pytest.mark.parametrize("bad", BAD_PATHS, ids=ids(BAD_PATHS))
def test_put_refuses_bad_path(server, tmp_path, bad):
    src = make_file(tmp_path / "f.bin", 1000, seed=1)
    cp = server.put(src, bad, check=False)
    assert_fails(cp, code=None)
    assert server.ls() == [], "a refused put created something"


@pytest.mark.parametrize("bad", BAD_PATHS, ids=ids(BAD_PATHS))
def test_get_refuses_bad_path(server, tmp_path, bad):
    outdir = tmp_path / "out"
    outdir.mkdir()
    cp = server.get(bad, outdir / "o", check=False)
    assert_fails(cp, code=None)
    assert list(outdir.iterdir()) == []


def test_directory_put_to_bad_prefix_refused(server, tmp_path):
    tree = tmp_path / "tree"
    make_file(tree / "a.bin", 100, seed=1)
    make_file(tree / "sub" / "b.bin", 100, seed=2)
    cp = server.put(tree, "../up", check=False)
    assert_fails(cp, code=None)
    assert server.ls() == []


@pytest.mark.parametrize("bad", ["../b", "/b", "a//b", "b/.."])
def test_mv_refuses_bad_target(server, tmp_path, bad):
    src = make_file(tmp_path / "f.bin", 1000, seed=1)
    server.put(src, "a")
    cp = server.cli("mv", "a", bad, check=False)
    assert_fails(cp, code=None)
    assert server.ls() == ["a"], "a refused mv changed the namespace"
    out = tmp_path / "a.out"
    server.get("a", out)
    assert_same_file(out, src)


@pytest.mark.parametrize("bad", ["../x", "/x", "a//b"])
def test_rm_refuses_bad_path(server, bad):
    cp = server.cli("rm", bad, check=False)
    assert_fails(cp, code=None)


def test_longest_name_accepted(server, tmp_path):
    """255 bytes is the limit for one name: it is accepted."""
    src = make_file(tmp_path / "f.bin", 1000, seed=3)
    name = "d/" + "n" * 255
    server.put(src, name)
    assert server.ls() == [name]
    out = tmp_path / "f.out"
    server.get(name, out)
    assert_same_file(out, src)


def test_unusual_but_valid_names(server, tmp_path):
    src = make_file(tmp_path / "f.bin", 100, seed=4)
    names = ["with space.txt", "dots...name", "..hidden", ".hidden", "ünïcødé/файл", "a-b_c=d"]
    for n in names:
        server.put(src, n)
    # Names may contain spaces: match whole line endings rather than fields.
    lines = [ln.rstrip() for ln in server.cli("ls").stdout.splitlines() if ln.strip()]
    assert len(lines) == len(names), f"ls printed {lines}"
    for n in names:
        assert any(ln.endswith(" " + n) or ln == n for ln in lines), f"{n!r} not in ls output {lines}"
        assert server.stat(n)["path"] == n
    for n in names:
        out = tmp_path / "o.bin"
        server.get(n, out)
        assert_same_file(out, src)


# ---- the server checks paths too (a client that skips its own checks) ----

MSG_ERROR = 2
MSG_PUT = 10
MSG_GET = 20


def put_frame(path):
    # PUT: path str, size u64, mode u32, mtime_ns i64, flags u32
    return frame(MSG_PUT, wire_str(path) + struct.pack("<QIqI", 1000, 0o644, 0, 0))


def get_frame(path):
    # GET: path str, version u64 (0 = current)
    return frame(MSG_GET, wire_str(path) + struct.pack("<Q", 0))


@pytest.mark.parametrize("make", [put_frame, get_frame], ids=["PUT", "GET"])
@pytest.mark.parametrize("bad", [b"../etc/passwd", b"/etc/passwd", b"a/../../b", b"a\x00b",
                                 b"a//b", b"x" * 300],
                         ids=["dotdot", "absolute", "inner-dotdot", "nul", "empty-component", "long"])
def test_server_refuses_bad_path_on_the_wire(server, ca, make, bad):
    with raw_tls(server, tls_context(ca)) as s:
        hello_exchange(s)
        s.sendall(make(bad))
        try:
            t, payload = read_frame(s)
        except TimeoutError:
            pytest.fail(f"server neither answered nor closed after a {make.__name__} of {bad!r}")
        except (ConnectionError, OSError):
            t = None  # closed: refused too
        assert t in (None, MSG_ERROR), \
            f"server answered a {make.__name__} of {bad!r} with frame type {t}, expected ERROR"
    assert server.ls() == []
    assert server.alive()
