"""Only certificates of the cluster CA with the right role get in; TLS 1.3 only."""

import shutil
import ssl
import subprocess

import pytest

from conftest import (BIN, HELLO, assert_fails, assert_same_file, describe, frame,
                      hello_exchange, make_file, raw_tls, read_frame, run_server_once,
                      tls_context, wire_str)

MSG_ERROR = 2
MSG_LIST = 30


def run(*args, timeout=60):
    cp = subprocess.run([BIN] + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    assert cp.returncode == 0, "command failed:" + describe(cp)
    return cp


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory):
    d = tmp_path_factory.mktemp("foreign") / "tls"
    run("init", d)
    return d


@pytest.fixture(scope="module")
def tracker_as_client(ca, tmp_path_factory):
    """A --tls dir whose client identity is a tracker-role certificate of our CA."""
    d = tmp_path_factory.mktemp("tracker-id")
    run("cert", "issue", "--tls", ca, "--role", "tracker", "--name", "client", "--out", d)
    shutil.copy(ca / "ca.crt", d / "ca.crt")
    assert (d / "client.crt").exists() and (d / "client.key").exists()
    return d


@pytest.fixture(scope="module")
def second_client(ca, tmp_path_factory):
    """Another client-role identity of our CA (no CA key beside it)."""
    d = tmp_path_factory.mktemp("client2")
    run("cert", "issue", "--tls", ca, "--role", "client", "--name", "client", "--out", d)
    shutil.copy(ca / "ca.crt", d / "ca.crt")
    return d


def assert_still_serves(server, tmp_path):
    src = make_file(tmp_path / "ok.bin", 100 * 1024, seed=99)
    server.put(src, "ok.bin")
    out = tmp_path / "ok.out"
    server.get("ok.bin", out)
    assert_same_file(out, src)
    assert server.alive()


def assert_refused_raw(server, ctx, what):
    """The server ends the connection without serving anything: the
    handshake fails, or the connection closes (an alert or an ERROR frame at
    most), never a HELLO followed by answers."""
    try:
        s = raw_tls(server, ctx)
    except (ssl.SSLError, OSError):
        return  # handshake refused
    with s:
        try:
            s.sendall(HELLO)
            t, _ = read_frame(s)
        except TimeoutError:
            pytest.fail(f"{what}: the server neither refused nor answered within 5 s")
        except (ConnectionError, ssl.SSLError, OSError):
            return  # closed without any response
        if t == MSG_ERROR:
            return
        # It answered HELLO: then it must at least refuse to serve.
        assert t == 1, f"{what}: unexpected first frame type {t}"
        try:
            s.sendall(frame(MSG_LIST, wire_str("")))
            t, payload = read_frame(s)
        except TimeoutError:
            pytest.fail(f"{what}: the server neither refused nor answered LIST within 5 s")
        except (ConnectionError, ssl.SSLError, OSError):
            return
        assert t == MSG_ERROR, f"{what}: the server served a LIST (reply type {t})"


def test_foreign_ca_client_refused(server, foreign_ca, tmp_path):
    cp = server.cli("ls", tls=foreign_ca, check=False)
    assert_fails(cp, 1)
    src = make_file(tmp_path / "f.bin", 1000, seed=1)
    assert_fails(server.put(src, "x.bin", tls=foreign_ca, check=False), 1)
    assert server.ls() == []
    assert_still_serves(server, tmp_path)


def test_tracker_role_client_refused(server, tracker_as_client, tmp_path):
    cp = server.cli("ls", tls=tracker_as_client, check=False)
    assert_fails(cp, 1)
    src = make_file(tmp_path / "f.bin", 1000, seed=1)
    assert_fails(server.put(src, "x.bin", tls=tracker_as_client, check=False), 1)
    assert server.ls() == []
    assert_still_serves(server, tmp_path)


def test_other_client_identity_of_the_ca_accepted(server, second_client, tmp_path):
    src = make_file(tmp_path / "f.bin", 5000, seed=2)
    server.put(src, "from2.bin", tls=second_client)
    assert server.ls() == ["from2.bin"]


def test_raw_foreign_ca_connection_refused(server, ca, foreign_ca, tmp_path):
    # Trust the real CA for the server's certificate, present the foreign one.
    ctx = tls_context(ca, client_dir=foreign_ca)
    assert_refused_raw(server, ctx, "foreign-CA client certificate")
    assert_still_serves(server, tmp_path)


def test_raw_tracker_role_connection_refused(server, ca, tracker_as_client, tmp_path):
    ctx = tls_context(ca, client_dir=tracker_as_client)
    assert_refused_raw(server, ctx, "tracker-role client certificate")
    assert_still_serves(server, tmp_path)


def test_raw_connection_without_certificate_refused(server, ca, tmp_path):
    ctx = tls_context(ca, client_dir=False)
    assert_refused_raw(server, ctx, "no client certificate")
    assert_still_serves(server, tmp_path)


def test_tls12_refused(server, ca, tmp_path):
    ctx = tls_context(ca, max_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises((ssl.SSLError, OSError)):
        s = raw_tls(server, ctx)
        s.close()
    assert_still_serves(server, tmp_path)


def test_server_certificate_is_from_the_cluster_ca(server, ca, foreign_ca):
    # With our CA the handshake verifies and HELLO is exchanged ...
    with raw_tls(server, tls_context(ca)) as s:
        assert s.version() == "TLSv1.3"
        hello_exchange(s)
    # ... and a client trusting only a foreign CA rejects the server.
    with pytest.raises(ssl.SSLCertVerificationError):
        raw_tls(server, tls_context(foreign_ca))


def test_client_with_foreign_ca_rejects_server(server, ca, tmp_path):
    """A client whose ca.crt is another cluster's refuses to talk to our server."""
    d = tmp_path / "mixed"
    d.mkdir()
    other = tmp_path / "other"
    run("init", other)
    shutil.copy(other / "ca.crt", d / "ca.crt")
    shutil.copy(ca / "client.crt", d / "client.crt")
    shutil.copy(ca / "client.key", d / "client.key")
    assert_fails(server.cli("ls", tls=d, check=False), 1)


def test_server_without_ca_key_or_identity_refuses(ca, tmp_path):
    """No identity of its own and no CA key: refuse, naming the command to run."""
    tls = tmp_path / "tls-nokey"
    tls.mkdir()
    shutil.copy(ca / "ca.crt", tls / "ca.crt")
    cp = run_server_once(tmp_path / "data", tls)
    assert cp.returncode != 0, describe(cp)
    assert "cert issue" in (cp.stderr + cp.stdout), "the message should name `syncstore cert issue`" + describe(cp)


def test_server_issues_own_identity_once(make_server, ca, tmp_path):
    """The identity issued on first start is kept: same node id after restart."""
    s = make_server()
    node1 = s.status()["servers"][0]["node"]
    s.restart()
    node2 = s.status()["servers"][0]["node"]
    assert node1 == node2, "the server's node id changed across a restart"
