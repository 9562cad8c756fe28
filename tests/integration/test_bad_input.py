"""Bad bytes on a connection close that connection only; the server keeps
serving everyone else."""

import random
import socket
import struct
import threading
import zlib

import pytest

from conftest import (HOST, KiB, assert_same_file, frame, hello_exchange, make_file, raw_tls,
                      read_frame, tls_context, wait_closed)

MSG_ERROR = 2
HELLO_PLAIN = frame(1, b"SYNCSTOR" + struct.pack("<HHI", 1, 1, 0))


@pytest.fixture
def stored(server, tmp_path):
    """The server holds one file a legit client reads while bad input flows."""
    src = make_file(tmp_path / "legit.bin", 300 * KiB, seed=5)
    server.put(src, "legit.bin")
    return src


def legit_roundtrip(server, src, tmp_path, tag):
    out = tmp_path / f"legit-{tag}.out"
    server.get("legit.bin", out, timeout=30)
    assert_same_file(out, src)
    new = make_file(tmp_path / f"new-{tag}.bin", 50 * KiB, seed=zlib.crc32(tag.encode()))
    server.put(new, f"new/{tag}.bin", timeout=30)


def garbage(seed, n=64 * KiB):
    return random.Random(seed).randbytes(n)


BAD_AFTER_HELLO = {
    "garbage-1": lambda: garbage(1),
    "garbage-2": lambda: garbage(2),
    "garbage-3": lambda: garbage(3, 100),
    "huge-length": lambda: struct.pack("<I", 0xFFFFFFF0) + b"\x0e",
    "just-over-max-length": lambda: struct.pack("<I", (1 << 20) + 1) + b"\x0e" + b"\0" * 1000,
    "zero-length": lambda: struct.pack("<I", 0) + b"\x01" * 16,
    "unknown-type-0xee": lambda: frame(0xEE, b"\1\2\3\4"),
    "unknown-type-0": lambda: frame(0x00, b"\1\2\3\4"),
}


@pytest.mark.parametrize("kind", list(BAD_AFTER_HELLO))
def test_bad_frames_after_hello_close_the_connection(server, ca, stored, tmp_path, kind):
    with raw_tls(server, tls_context(ca)) as bad:
        hello_exchange(bad)
        try:
            bad.sendall(BAD_AFTER_HELLO[kind]())
        except OSError:
            pass  # already closed by the server: fine
        # A legit client is served while the bad connection is pending.
        legit_roundtrip(server, stored, tmp_path, kind)
        assert wait_closed(bad, timeout=5), f"server kept the connection open after {kind}"
    assert server.alive(), "server died:\n" + server.log()
    legit_roundtrip(server, stored, tmp_path, kind + "-after")


# Well-framed messages whose payload does not decode: the server answers
# ERROR or closes; either way it serves nothing from them and goes on
# serving others.
MALFORMED = {
    "put-short-path": lambda: frame(10, b"\xff\xff" + b"a" * 10),
    "put-trailing-bytes": lambda: frame(10, struct.pack("<H", 1) + b"a"
                                        + struct.pack("<QIqI", 1, 0o644, 0, 0) + b"junk"),
    "get-empty-payload": lambda: frame(20),
    "chunk-outside-put": lambda: frame(14, bytes(32) + b"\0" + struct.pack("<I", 4) + b"abcd"),
    "commit-outside-put": lambda: frame(16, bytes(32) + struct.pack("<Q", 4)),
    "random-body": lambda: frame(random.Random(7).choice([10, 11, 12, 13, 14, 16, 20, 30, 33, 34]),
                                 garbage(7, 999)),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_messages_get_error_or_close(server, ca, stored, tmp_path, kind):
    with raw_tls(server, tls_context(ca)) as bad:
        hello_exchange(bad)
        bad.sendall(MALFORMED[kind]())
        try:
            t, payload = read_frame(bad)
        except TimeoutError:
            pytest.fail(f"server neither answered nor closed after {kind}")
        except (ConnectionError, OSError):
            t = None
        assert t in (None, MSG_ERROR), f"server answered {kind} with frame type {t}, expected ERROR or close"
    assert server.alive(), "server died:\n" + server.log()
    legit_roundtrip(server, stored, tmp_path, kind)
    assert server.ls("new") == [f"new/{kind}.bin"], "a malformed message changed the namespace"


def test_truncated_frame_then_close(server, ca, stored, tmp_path):
    bad = raw_tls(server, tls_context(ca))
    hello_exchange(bad)
    bad.sendall(struct.pack("<IB", 1000, 10) + b"\x05\x00abc")  # 8 of 1000 bytes
    legit_roundtrip(server, stored, tmp_path, "during")
    bad.close()  # no close_notify: an abrupt end in the middle of a frame
    legit_roundtrip(server, stored, tmp_path, "after")
    assert server.alive(), "server died:\n" + server.log()


def test_truncated_frame_then_tcp_shutdown(server, ca, stored, tmp_path):
    bad = raw_tls(server, tls_context(ca))
    hello_exchange(bad)
    bad.sendall(struct.pack("<IB", 1000, 10) + b"\x05\x00abc")
    raw = socket.socket(fileno=bad.detach())  # the TCP socket under TLS
    raw.shutdown(socket.SHUT_WR)
    assert wait_closed(raw, timeout=5), "server kept the connection after the client's FIN mid-frame"
    raw.close()
    legit_roundtrip(server, stored, tmp_path, "after")
    assert server.alive()


def test_no_hello_first(server, ca, stored, tmp_path):
    """A request before HELLO is a protocol error."""
    with raw_tls(server, tls_context(ca)) as bad:
        bad.sendall(frame(30, b"\x00\x00"))  # LIST ""
        assert wait_closed(bad, timeout=5), "server served a request sent before HELLO"
    legit_roundtrip(server, stored, tmp_path, "after")


@pytest.mark.parametrize("payload", [
    b"NOTMAGIC" + struct.pack("<HHI", 1, 1, 0),
    b"SYNCSTOR" + struct.pack("<HHI", 9, 9, 0),   # only a future version
    b"SYNCSTOR",                                  # short
], ids=["bad-magic", "no-common-version", "short-hello"])
def test_bad_hello(server, ca, stored, tmp_path, payload):
    with raw_tls(server, tls_context(ca)) as bad:
        bad.sendall(frame(1, payload))
        assert wait_closed(bad, timeout=5), "server kept a connection with a bad HELLO"
    legit_roundtrip(server, stored, tmp_path, "after")


def test_plaintext_garbage_dropped(server, stored, tmp_path):
    with socket.create_connection((HOST, server.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n" + garbage(9, 4 * KiB))
        assert wait_closed(s, timeout=5), "server kept a plaintext connection open"
    with socket.create_connection((HOST, server.port), timeout=5) as s:
        s.sendall(HELLO_PLAIN)
        assert wait_closed(s, timeout=5), "server kept a plaintext HELLO connection open"
    assert server.alive()
    legit_roundtrip(server, stored, tmp_path, "after")



def test_idle_connections_do_not_block_others(server, stored, tmp_path):
    """Connections that never finish a handshake must not stall the server."""
    idle = []
    try:
        for _ in range(40):
            idle.append(socket.create_connection((HOST, server.port), timeout=5))
        half = socket.create_connection((HOST, server.port), timeout=5)
        half.sendall(b"\x16\x03\x01\x02\x00")  # the start of a ClientHello, then nothing
        idle.append(half)
        legit_roundtrip(server, stored, tmp_path, "idle")
    finally:
        for s in idle:
            s.close()
    assert server.alive()


def test_many_bad_connections_in_parallel(server, ca, stored, tmp_path):
    errors = []

    def one(i):
        try:
            with raw_tls(server, tls_context(ca)) as s:
                hello_exchange(s)
                s.sendall(garbage(100 + i, 8 * KiB))
                if not wait_closed(s, timeout=10):
                    errors.append(f"connection {i} not closed")
        except (OSError, AssertionError):
            pass  # refused or reset early: fine for this test

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    legit_roundtrip(server, stored, tmp_path, "parallel")
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert server.alive()
    legit_roundtrip(server, stored, tmp_path, "parallel-after")
