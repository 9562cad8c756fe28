"""An update sends only what changed (content-defined chunks, manifest tree).

Bytes are counted by a TCP forwarder between client and server, both
directions, TLS and framing included.
"""

import shutil

import pytest

from conftest import MiB, KiB, assert_same_file, make_file

SIZE = 64 * MiB
EDIT_LIMIT = 200_000   # bytes on the wire, both directions, for a small edit
UNCHANGED_LIMIT = 64 * KiB


@pytest.fixture(scope="module")
def base_file(tmp_path_factory):
    return make_file(tmp_path_factory.mktemp("delta") / "base.bin", SIZE, seed=64)


def edited_copy(base, dst, edit):
    data = bytearray(base.read_bytes())
    mid = len(data) // 2
    if edit == "insert-middle":
        data[mid:mid] = bytes(range(100))
    elif edit == "overwrite-4k":
        data[mid:mid + 4096] = bytes(4096)
    elif edit == "insert-start":
        data[0:0] = b"x" * 100
    elif edit == "append":
        data += b"tail" * 25
    else:
        raise ValueError(edit)
    dst.write_bytes(data)
    return dst


def wire_report(fwd):
    c = fwd.counts()
    return f"up {c['up']} + down {c['down']} = {c['total']} bytes over {c['connections']} connection(s)"


@pytest.fixture
def uploaded(server, forwarder, base_file, tmp_path):
    """A server holding the base file (put through the forwarder)."""
    fwd = forwarder(server)
    local = tmp_path / "work.bin"
    shutil.copyfile(base_file, local)
    server.cli("put", local, "big/file.bin", server=fwd, timeout=180)
    assert fwd.up >= SIZE * 0.95, f"the first put sent less than the file: {wire_report(fwd)}"
    return server, fwd, local


def test_insert_100_bytes_in_the_middle(uploaded, base_file, tmp_path):
    server, fwd, local = uploaded
    edited_copy(base_file, local, "insert-middle")
    fwd.reset()
    server.cli("put", local, "big/file.bin", server=fwd, timeout=180)
    sent = fwd.total
    assert sent < EDIT_LIMIT, f"update after a 100-byte insert moved too much: {wire_report(fwd)}"
    out = tmp_path / "out.bin"
    server.get("big/file.bin", out, timeout=180)
    assert_same_file(out, local)


@pytest.mark.parametrize("edit", ["overwrite-4k", "insert-start", "append"])
def test_other_small_edits(uploaded, base_file, tmp_path, edit):
    server, fwd, local = uploaded
    edited_copy(base_file, local, edit)
    fwd.reset()
    server.cli("put", local, "big/file.bin", server=fwd, timeout=180)
    assert fwd.total < EDIT_LIMIT, f"update after {edit} moved too much: {wire_report(fwd)}"
    out = tmp_path / "out.bin"
    server.get("big/file.bin", out, server=fwd, timeout=180)
    assert_same_file(out, local)


def test_unchanged_reput_sends_little(uploaded, tmp_path):
    server, fwd, local = uploaded
    ver = int(server.stat("big/file.bin")["version"])
    fwd.reset()
    server.cli("put", local, "big/file.bin", server=fwd, timeout=180)
    assert fwd.total < UNCHANGED_LIMIT, f"re-put of an unchanged file moved too much: {wire_report(fwd)}"
    out = tmp_path / "out.bin"
    server.get("big/file.bin", out, timeout=180)
    assert_same_file(out, local)
    assert int(server.stat("big/file.bin")["version"]) >= ver


def test_same_content_under_a_new_name_sends_little(uploaded, tmp_path):
    server, fwd, local = uploaded
    fwd.reset()
    server.cli("put", local, "big/copy.bin", server=fwd, timeout=180)
    assert fwd.total < UNCHANGED_LIMIT, f"put of content already stored moved too much: {wire_report(fwd)}"
    out = tmp_path / "copy.bin"
    server.get("big/copy.bin", out, timeout=180)
    assert_same_file(out, local)
