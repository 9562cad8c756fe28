"""Shared fixtures and helpers for the syncstore integration tests.

Everything runs real processes on 127.0.0.1: `build/syncstore` (or
$SYNCSTORE_BIN) as server and as client.  Every process a test starts is
registered with the `procs` fixture and killed by PID at teardown, whatever
the outcome of the test.
"""

import hashlib
import json
import os
import random
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from forwarder import Forwarder  # noqa: E402

BIN = os.environ.get("SYNCSTORE_BIN") or str(REPO / "build" / "syncstore")
HOST = "127.0.0.1"
MiB = 1 << 20
KiB = 1 << 10

# The wire protocol's first frame: u32 LE length, type 1 (HELLO), magic,
# max_version, min_version, flags.
HELLO = struct.pack("<IB8sHHI", 17, 1, b"SYNCSTOR", 1, 1, 0)
MAX_FRAME = 1 << 20


# --------------------------------------------------------------------------
# small helpers


def free_port():
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_file(path, size, seed=0):
    """Write `size` deterministic random bytes (random.Random(seed)) to path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 8 * MiB)
            f.write(rng.randbytes(n))
            left -= n
    return path


def make_text_file(path, size, seed=0):
    """Compressible text: lines of words from a small vocabulary."""
    rng = random.Random(seed)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
             "hotel", "india", "juliet", "kilo", "lima", "mike", "november"]
    out = []
    n = 0
    while n < size:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + "\n"
        out.append(line)
        n += len(line)
    data = "".join(out).encode()[:size]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def assert_same_file(got, want):
    got, want = Path(got), Path(want)
    assert got.exists(), f"{got} was not written"
    gs, ws = got.stat().st_size, want.stat().st_size
    assert gs == ws, f"{got}: size {gs}, expected {ws} (as {want})"
    assert sha256_file(got) == sha256_file(want), f"{got}: content differs from {want}"


def addr_of(server):
    """'127.0.0.1:PORT' from a Server, a Forwarder, an int port or a string."""
    if server is None:
        return None
    if isinstance(server, int):
        return f"{HOST}:{server}"
    if hasattr(server, "addr"):
        return server.addr
    return str(server)


def describe(cp):
    """A readable dump of a CompletedProcess for assertion messages."""
    args = " ".join(str(a) for a in cp.args)
    return (f"\n$ {args}\nexit {cp.returncode}\n--- stdout ---\n{cp.stdout}"
            f"\n--- stderr ---\n{cp.stderr}")


# --------------------------------------------------------------------------
# processes


class Procs:
    """Every process a test starts; kill_all() kills leftovers by PID."""

    def __init__(self):
        self.items = []

    def add(self, p):
        self.items.append(p)
        return p

    def popen(self, args, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        return self.add(subprocess.Popen([str(a) for a in args], **kw))

    def kill_all(self):
        for p in self.items:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.items:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.items.clear()


@pytest.fixture
def procs():
    p = Procs()
    yield p
    p.kill_all()


# --------------------------------------------------------------------------
# the client


def client_cmd(*args, server=None, tls=None, quiet=True):
    cmd = [BIN]
    if server is not None:
        cmd += ["--server", addr_of(server)]
    if tls is not None:
        cmd += ["--tls", str(tls)]
    if quiet:
        cmd.append("--quiet")
    return cmd + [str(a) for a in args]


def run_cli(*args, server=None, tls=None, check=True, timeout=120, quiet=True, env=None, cwd=None):
    """Run one client command; returns the CompletedProcess (text).

    check=True asserts exit 0 and shows stdout/stderr otherwise.
    """
    cmd = client_cmd(*args, server=server, tls=tls, quiet=quiet)
    full_env = dict(os.environ)
    full_env.pop("SYNCSTORE_SERVER", None)
    full_env.pop("SYNCSTORE_TLS", None)
    if env:
        full_env.update(env)
    try:
        cp = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            errors="replace", timeout=timeout, env=full_env, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\nstderr so far: {e.stderr!r}")
    if check:
        assert cp.returncode == 0, "command failed:" + describe(cp)
    return cp


def assert_fails(cp, code=1, words=()):
    """A failed command: exit `code` (None: any non-zero), a message on stderr
    containing one of `words` (case-insensitive) when given."""
    if code is None:
        assert cp.returncode != 0, "expected a failure:" + describe(cp)
    else:
        assert cp.returncode == code, f"expected exit {code}:" + describe(cp)
    err = cp.stderr.strip()
    assert err, "expected an error message on stderr:" + describe(cp)
    assert "Traceback" not in err and "Segmentation" not in err, describe(cp)
    if words:
        low = err.lower()
        assert any(w.lower() in low for w in words), \
            f"stderr should mention one of {list(words)}:" + describe(cp)
    return err


def ls_paths(cp):
    """Remote paths from `ls` output: the last field of each non-empty line."""
    return [line.split()[-1] for line in cp.stdout.splitlines() if line.strip()]


def parse_stat(cp):
    """`stat` output ("key: value" lines) as a dict."""
    out = {}
    for line in cp.stdout.splitlines():
        if ":" in line:
            k, _, v = line.partition(":")
            out[k.strip().lower()] = v.strip()
    return out


# --------------------------------------------------------------------------
# the server


class Server:
    """One `syncstore server` process on 127.0.0.1.

    The log (stdout and stderr) goes to a file so a chatty server never
    blocks on a full pipe; `log()` reads it for assertion messages.
    """

    def __init__(self, procs, data, tls, port=None, extra=(), logdir=None):
        self.procs = procs
        self.data = Path(data)
        self.tls = Path(tls)
        self.port = port or free_port()
        self.extra = [str(a) for a in extra]
        self.logdir = Path(logdir) if logdir else self.data.parent
        self.proc = None
        self.starts = 0
        self.logfile = None

    @property
    def addr(self):
        return f"{HOST}:{self.port}"

    def cmd(self):
        return [BIN, "server", "--data", str(self.data), "--listen", self.addr,
                "--tls", str(self.tls)] + self.extra

    def start(self, wait=True, timeout=30):
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        self.starts += 1
        self.logfile = self.logdir / f"server-{self.port}-{self.starts}.log"
        with open(self.logfile, "wb") as log:
            self.proc = self.procs.popen(self.cmd(), stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode} before it was ready:\n"
                            f"{' '.join(self.cmd())}\n{self.log()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    pass
                if self.proc.poll() is None:
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"server not ready on {self.addr} after {timeout}s:\n{self.log()}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Send `sig` and wait; returns the exit code (kill -9 after timeout)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
                pytest.fail(f"server did not exit within {timeout}s of signal {sig}:\n{self.log()}")
        return self.proc.returncode

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self, **kw):
        """Stop (SIGTERM) if running, then start again on the same data and port."""
        if self.alive():
            self.stop()
        return self.start(**kw)

    def log(self):
        if self.logfile is None or not self.logfile.exists():
            return "(no log)"
        text = self.logfile.read_text(errors="replace")
        return text[-6000:]

    def cli(self, *args, check=True, **kw):
        """Run a client command against this server (admin identity by default)."""
        kw.setdefault("tls", self.tls)
        kw.setdefault("server", self)  # or a forwarder in front of it
        cp = run_cli(*args, check=False, **kw)
        if check:
            assert cp.returncode == 0, "command failed:" + describe(cp) + "\n--- server log ---\n" + self.log()
        return cp

    def put(self, local, remote, **kw):
        return self.cli("put", local, remote, **kw)

    def get(self, remote, local, **kw):
        return self.cli("get", remote, local, **kw)

    def ls(self, *prefix, **kw):
        return ls_paths(self.cli("ls", *prefix, **kw))

    def stat(self, remote, **kw):
        return parse_stat(self.cli("stat", remote, **kw))

    def status(self, **kw):
        cp = self.cli("status", "--json", **kw)
        try:
            return json.loads(cp.stdout)
        except ValueError:
            pytest.fail("status --json did not print JSON:" + describe(cp))


def run_server_once(data, tls, port=None, timeout=20, extra=()):
    """Run a server that is expected to refuse to start; returns the
    CompletedProcess (output in .stderr) or fails if it keeps running."""
    port = port or free_port()
    cmd = [BIN, "server", "--data", str(data), "--listen", f"{HOST}:{port}", "--tls", str(tls)]
    cmd += [str(a) for a in extra]
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"server kept running (expected it to refuse to start): {' '.join(cmd)}")


# --------------------------------------------------------------------------
# fixtures


def _check_binary():
    if not os.path.isfile(BIN) or not os.access(BIN, os.X_OK):
        pytest.fail(f"syncstore binary not found at {BIN} (build it, or set SYNCSTORE_BIN)")


@pytest.fixture(scope="session")
def bin_path():
    _check_binary()
    return BIN


@pytest.fixture(scope="session")
def ca(tmp_path_factory):
    """A cluster CA with the admin client identity (`syncstore init`)."""
    _check_binary()
    d = tmp_path_factory.mktemp("ca") / "tls"
    cp = subprocess.run([BIN, "init", str(d)], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, "syncstore init failed:" + describe(cp)
    for name in ("ca.crt", "ca.key", "client.crt", "client.key"):
        assert (d / name).exists(), f"syncstore init did not create {name}:" + describe(cp)
    return d


@pytest.fixture
def cli(ca):
    """cli(*args, server=, tls=, check=True, timeout=) -> CompletedProcess."""
    def _cli(*args, server=None, tls=None, check=True, timeout=120, **kw):
        return run_cli(*args, server=server, tls=tls if tls is not None else ca,
                       check=check, timeout=timeout, **kw)
    return _cli


@pytest.fixture
def make_server(procs, ca, tmp_path):
    """make_server(data=None, port=None, extra=(), start=True) -> Server."""
    servers = []

    def _make(data=None, port=None, extra=(), start=True, tls=None):
        data = Path(data) if data else tmp_path / f"data{len(servers)}"
        s = Server(procs, data, tls or ca, port=port, extra=extra, logdir=tmp_path)
        servers.append(s)
        if start:
            s.start()
        return s

    yield _make
    for s in servers:
        s.kill9()


@pytest.fixture
def server(make_server):
    """One running server with a fresh data directory."""
    return make_server()


@pytest.fixture
def forwarder():
    """forwarder(target) -> Forwarder; all closed at teardown."""
    fwds = []

    def _make(target):
        f = Forwarder(addr_of(target))
        fwds.append(f)
        return f

    yield _make
    for f in fwds:
        f.close()


# --------------------------------------------------------------------------
# raw wire access (auth and bad-input tests)


def tls_context(ca_dir, client_dir=None, verify=True, max_version=None):
    """A client TLS context: trusts ca_dir/ca.crt, presents
    client_dir/client.crt (client_dir=False: no certificate)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(str(Path(ca_dir) / "ca.crt"))
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if client_dir is not False:
        d = Path(client_dir or ca_dir)
        ctx.load_cert_chain(str(d / "client.crt"), str(d / "client.key"))
    if max_version is not None:
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = max_version
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def raw_tls(server, ctx, timeout=5):
    """A TLS connection to server (handshake done); raises on handshake failure."""
    sock = socket.create_connection((HOST, server.port), timeout=timeout)
    try:
        return ctx.wrap_socket(sock)
    except Exception:
        sock.close()
        raise


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        d = sock.recv(n - len(buf))
        if not d:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += d
    return buf


def read_frame(sock):
    """One frame: (type, payload)."""
    (length,) = struct.unpack("<I", recv_exact(sock, 4))
    assert 1 <= length <= MAX_FRAME, f"server sent a frame of length {length}"
    body = recv_exact(sock, length)
    return body[0], body[1:]


def frame(type_, payload=b""):
    return struct.pack("<IB", len(payload) + 1, type_) + payload


def wire_str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<H", len(b)) + b


def hello_exchange(sock):
    """Send our HELLO and read the server's; returns its payload fields."""
    sock.sendall(HELLO)
    t, payload = read_frame(sock)
    assert t == 1, f"server's first frame has type {t}, expected HELLO (1)"
    assert len(payload) >= 16 and payload[:8] == b"SYNCSTOR", f"bad server HELLO {payload!r}"
    magic, vmax, vmin, flags = struct.unpack("<8sHHI", payload[:16])
    assert vmin <= 1 <= vmax, f"server HELLO versions {vmin}..{vmax} do not include 1"
    return {"max_version": vmax, "min_version": vmin, "flags": flags}


def wait_closed(sock, timeout=5, limit=4 * MiB):
    """True when the peer closes the connection (EOF or an error) within
    `timeout` seconds; bytes it sends first (an ERROR frame, an alert) are
    read and ignored, up to `limit`."""
    deadline = time.monotonic() + timeout
    got = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            d = sock.recv(65536)
        except socket.timeout:
            return False
        except (OSError, ssl.SSLError):
            return True
        if not d:
            return True
        got += len(d)
        if got > limit:
            return False


@pytest.fixture
def tmpfs(tmp_path, procs):
    """Mount a small tmpfs (tests run as root): tmpfs("48m") -> its path.
    Unmounted at teardown, after the processes using it are killed."""
    mounts = []

    def mount(size):
        mnt = tmp_path / f"tmpfs{len(mounts)}"
        mnt.mkdir()
        cp = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                            capture_output=True, text=True)
        assert cp.returncode == 0, "cannot mount a tmpfs (these tests run as root):" + describe(cp)
        mounts.append(mnt)
        return mnt

    yield mount
    procs.kill_all()
    for mnt in mounts:
        for _ in range(50):
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# --------------------------------------------------------------------------
# clusters (replication tests)

# "NAME.sync-conflict-YYYYMMDD-HHMMSS-<16 hex>.EXT" (the extension is optional)
CONFLICT_RE = re.compile(r"^(?P<stem>.+)\.sync-conflict-(?P<when>\d{8}-\d{6})-(?P<node>[0-9a-f]{16})"
                         r"(?P<ext>\.[^./]+)?$")


def split_ext(path):
    """('docs/a', '.txt') for 'docs/a.txt'; ('.profile', '') for '.profile'."""
    head, _, base = path.rpartition("/")
    dot = base.rfind(".")
    if dot <= 0:
        return path, ""
    return path[:len(path) - len(base) + dot], base[dot:]


def conflict_copies(paths, path):
    """The conflict copies of `path` among `paths` (an ls listing)."""
    stem, ext = split_ext(path)
    out = []
    for p in paths:
        m = CONFLICT_RE.match(p)
        if m and m.group("stem") == stem and (m.group("ext") or "") == ext:
            out.append(p)
    return sorted(out)


def ls_json(server, *prefix, **kw):
    """`ls --json [PREFIX]` on server: a list of dicts."""
    cp = server.cli("ls", "--json", *prefix, **kw)
    try:
        return json.loads(cp.stdout)
    except ValueError:
        pytest.fail("ls --json did not print JSON:" + describe(cp))


def listing(server):
    """{path: (size, mode, mtime_ns, content_id)} from `ls --json`: what must be
    the same on every server of a converged cluster (local version numbers
    are left out)."""
    return {e["path"]: (e.get("size"), e.get("mode"), e.get("mtime_ns"), e.get("content_id"))
            for e in ls_json(server)}


def assert_same_listing(servers):
    """`ls` prints the same on every server, and `ls --json` agrees on every
    path's size, mode, mtime and content id."""
    texts = [s.cli("ls").stdout for s in servers]
    maps = [listing(s) for s in servers]
    for s, text, m in zip(servers[1:], texts[1:], maps[1:]):
        if m != maps[0]:
            a, b = maps[0], m
            only_a = sorted(set(a) - set(b))
            only_b = sorted(set(b) - set(a))
            differ = sorted(p for p in set(a) & set(b) if a[p] != b[p])
            pytest.fail(f"ls differs between {servers[0].addr} and {s.addr} after convergence:\n"
                        f"only on {servers[0].addr}: {only_a}\nonly on {s.addr}: {only_b}\n"
                        f"different (size, mode, mtime_ns, content_id): "
                        f"{[(p, a[p], b[p]) for p in differ]}\n"
                        f"--- log {servers[0].addr} ---\n{servers[0].log()}\n"
                        f"--- log {s.addr} ---\n{s.log()}")
        assert text == texts[0], (f"`ls` output differs between {servers[0].addr} and {s.addr}:\n"
                                  f"--- {servers[0].addr} ---\n{texts[0]}\n--- {s.addr} ---\n{text}")
    return maps[0]


def assert_served(server, remote, want, tmp_path, tag=""):
    """`get remote` from server is byte-identical to the local file `want`."""
    out = Path(tmp_path) / f"got-{server.port}-{tag or remote.replace('/', '_')}"
    if out.exists():
        out.unlink()
    cp = server.cli("get", remote, out, check=False)
    assert cp.returncode == 0, (f"get {remote} from {server.addr} failed (expected the replicated "
                                f"file):" + describe(cp) + "\n--- server log ---\n" + server.log())
    got_size, want_size = out.stat().st_size, Path(want).stat().st_size
    assert got_size == want_size and sha256_file(out) == sha256_file(want), (
        f"{remote} from {server.addr}: {got_size} bytes, sha256 {sha256_file(out)[:16]}; expected "
        f"{want_size} bytes, sha256 {sha256_file(want)[:16]} (as {want})\n--- server log ---\n"
        + server.log())
    return out


def cluster_report(servers):
    """Every server's `status --json` and log tail, for failure messages."""
    parts = []
    for s in servers:
        parts.append(f"===== server {s.addr} (data {s.data}) "
                     f"{'running' if s.alive() else 'NOT RUNNING'} =====")
        if s.alive():
            cp = run_cli("status", "--json", server=s, tls=s.tls, check=False, timeout=20)
            parts.append(f"status --json: exit {cp.returncode}\n{cp.stdout.strip()}"
                         f"{chr(10) + cp.stderr.strip() if cp.stderr.strip() else ''}")
        parts.append(f"--- log tail ---\n{s.log()}")
    return "\n".join(parts)


def wait_converged(servers, timeout=60, via=None):
    """Block until the cluster converged: `status --wait --timeout` against
    `via` (default servers[0]), then against every other running server in
    `servers` with what is left of the time (at least 10 s), so each one's own
    view agrees.  Fails with every server's status JSON and log tail."""
    servers = list(servers)
    first = via or servers[0]
    order = [first] + [s for s in servers if s is not first and s.alive()]
    deadline = time.monotonic() + timeout
    for s in order:
        left = max(10, int(deadline - time.monotonic() + 0.999))
        t0 = time.monotonic()
        cp = run_cli("status", "--wait", "--timeout", left, server=s, tls=s.tls, check=False,
                     timeout=left + 30)
        if cp.returncode != 0:
            pytest.fail(f"cluster did not converge: `status --wait --timeout {left}` on {s.addr} "
                        f"exited {cp.returncode} after {time.monotonic() - t0:.1f} s (expected 0: "
                        f"every server connected, nothing pending, all digests equal)"
                        + describe(cp) + "\n" + cluster_report(servers))
    # A server that knows no peers is trivially "converged": `via` must list
    # at least every server given, all connected.
    cp = run_cli("status", "--json", server=first, tls=first.tls, check=False, timeout=30)
    try:
        st = json.loads(cp.stdout)
        entries = st["servers"]
    except (ValueError, KeyError, TypeError):
        pytest.fail("status --json did not print {'servers': [...], ...}:" + describe(cp))
    if len(entries) < len(servers) or not all(e.get("connected") is True for e in entries):
        pytest.fail(f"status --wait said converged, but status --json on {first.addr} lists "
                    f"{len(entries)} server(s) ({sum(e.get('connected') is True for e in entries)} "
                    f"connected); expected all {len(servers)} ({', '.join(s.addr for s in servers)}) "
                    f"connected:\n{json.dumps(st, indent=1)}\n" + cluster_report(servers))
    return time.monotonic() - (deadline - timeout)


class Cluster:
    """n servers, each started with --peer for every other one.

    With via_forwarders, server i reaches server j only through
    `links[(i, j)]`, a Forwarder in front of j: its `down` counts what j
    sent to i over i's connections, its `up` what i sent to j.
    """

    def __init__(self, make_server, servers, links, extra, via_forwarders, tmp_path):
        self._make_server = make_server
        self.servers = servers
        self.links = links
        self.extra = list(extra)
        self.via_forwarders = via_forwarders
        self.tmp_path = tmp_path
        self._fwds = list(links.values())

    def __getitem__(self, i):
        return self.servers[i]

    def __len__(self):
        return len(self.servers)

    def __iter__(self):
        return iter(self.servers)

    def index(self, server):
        return self.servers.index(server) if not isinstance(server, int) else server

    def link(self, i, j):
        """The forwarder server i uses to reach server j."""
        assert self.via_forwarders, "this cluster was made without forwarders"
        return self.links[(self.index(i), self.index(j))]

    def links_from(self, i):
        i = self.index(i)
        return {j: f for (a, j), f in self.links.items() if a == i}

    def links_to(self, j):
        j = self.index(j)
        return {i: f for (i, b), f in self.links.items() if b == j}

    def reset_counts(self, i=None):
        """Reset the byte counts of every link (or of every link from/to i)."""
        for (a, b), f in self.links.items():
            if i is None or self.index(i) in (a, b):
                f.reset()

    def received_by(self, i):
        """Bytes server i received over the replication links: `down` on its
        outgoing links plus `up` on the links others use to reach it."""
        return (sum(f.down for f in self.links_from(i).values())
                + sum(f.up for f in self.links_to(i).values()))

    def link_counts(self, i):
        """A readable line of every link's counts from/to server i."""
        i = self.index(i)
        parts = []
        for (a, b), f in sorted(self.links.items()):
            if i in (a, b):
                c = f.counts()
                parts.append(f"{a}->{b}: up {c['up']} down {c['down']} ({c['connections']} conn)")
        return "; ".join(parts)

    def block(self, i, j, both=True):
        """Cut the link i -> j (and j -> i)."""
        self.link(i, j).block()
        if both:
            self.link(j, i).block()

    def unblock(self, i, j, both=True):
        self.link(i, j).unblock()
        if both:
            self.link(j, i).unblock()

    def partition(self, *groups):
        """Block every link between servers of different groups (indexes)."""
        assert self.via_forwarders, "a partition needs a cluster made with via_forwarders=True"
        where = {self.index(s): g for g, members in enumerate(groups) for s in members}
        for (a, b), f in self.links.items():
            if where.get(a, -1) != where.get(b, -2):
                f.block()

    def heal(self):
        for f in self.links.values():
            f.unblock()

    def isolate(self, i):
        i = self.index(i)
        for (a, b), f in self.links.items():
            if i in (a, b):
                f.block()

    def wait_converged(self, timeout=60, via=None, servers=None):
        servers = [s for s in (servers or self.servers) if s.alive()]
        return wait_converged(servers, timeout=timeout, via=via)

    def wait_connected(self, timeout=20, servers=None):
        """Poll `status --json` on every running server (or `servers`) until
        it lists itself and all its --peer servers, every one connected.
        make_cluster calls it, so a test's first put never races the links
        coming up."""
        pending = [s for s in (servers or self.servers) if s.alive()]
        deadline = time.monotonic() + timeout
        last = {}
        while pending:
            for s in list(pending):
                want = 1 + s.extra.count("--peer")
                cp = run_cli("status", "--json", server=s, tls=s.tls, check=False, timeout=30)
                try:
                    entries = json.loads(cp.stdout)["servers"]
                except (ValueError, KeyError, TypeError):
                    entries = None
                last[s.addr] = cp.stdout.strip() or cp.stderr.strip()
                if (entries is not None and len(entries) >= want
                        and all(e.get("connected") is True for e in entries)):
                    pending.remove(s)
            if not pending:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"cluster not connected {timeout}s after start: status --json on "
                            f"{', '.join(s.addr for s in pending)} should list itself and its "
                            f"{[s.extra.count('--peer') for s in pending]} peer(s), all connected; "
                            f"last: {json.dumps(last, indent=1)}\n" + cluster_report(self.servers))
            time.sleep(0.1)

    def wait_disconnected(self, i, j, timeout=20):
        """Poll `status --json` on server i until it shows server j not connected."""
        si, sj = self[i], self[j]
        addr = self.link(i, j).addr if self.via_forwarders else sj.addr
        deadline = time.monotonic() + timeout
        st = None
        while time.monotonic() < deadline:
            st = si.status()
            entries = [e for e in st.get("servers", []) if isinstance(e, dict)]
            # Listed under the --peer address (the forwarder's) or j's own;
            # with neither, every other entry must be down.
            match = [e for e in entries if e.get("addr") in (addr, sj.addr)]
            match = match or [e for e in entries if e.get("self") is not True]
            if match and all(e.get("connected") is False for e in match):
                return st
            time.sleep(0.2)
        pytest.fail(f"server {si.addr} still does not show its peer {addr} as disconnected "
                    f"{timeout}s after the link was cut; last status: {json.dumps(st)}\n"
                    + cluster_report(self.servers))

    def add_server(self, extra=(), peers=None):
        """Start one more server with --peer for every server of the cluster
        (or `peers`, indexes); the running ones are not told about it."""
        peers = range(len(self.servers)) if peers is None else [self.index(p) for p in peers]
        new = len(self.servers)
        port = free_port()
        args = []
        for j in peers:
            if self.via_forwarders:
                f = Forwarder(self.servers[j].addr)
                self.links[(new, j)] = f
                self._fwds.append(f)
                args += ["--peer", f.addr]
            else:
                args += ["--peer", self.servers[j].addr]
        s = self._make_server(port=port, extra=args + self.extra + [str(a) for a in extra])
        self.servers.append(s)
        return s

    def close(self):
        for f in self._fwds:
            f.close()


@pytest.fixture
def make_cluster(make_server, tmp_path):
    """make_cluster(n, extra=(), via_forwarders=False, connected=True, each=None) -> Cluster:
    servers running and (connected=True) all showing every peer connected; server i
    also gets the flags each[i] (after `extra`)."""
    clusters = []

    def _make(n, extra=(), via_forwarders=False, connected=True, each=None):
        each = each or {}
        ports = []
        while len(ports) < n:
            p = free_port()
            if p not in ports:
                ports.append(p)
        addrs = [f"{HOST}:{p}" for p in ports]
        links = {}
        if via_forwarders:
            for i in range(n):
                for j in range(n):
                    if i != j:
                        links[(i, j)] = Forwarder(addrs[j])
        servers = []
        for i in range(n):
            args = []
            for j in range(n):
                if j != i:
                    args += ["--peer", links[(i, j)].addr if via_forwarders else addrs[j]]
            args += [str(a) for a in extra] + [str(a) for a in each.get(i, ())]
            servers.append(make_server(port=ports[i], extra=args, start=False))
        c = Cluster(make_server, servers, links, extra, via_forwarders, tmp_path)
        clusters.append(c)
        for s in servers:
            s.start(wait=False)
        for s in servers:
            s.wait_ready()
        if connected:
            c.wait_connected()
        return c

    yield _make
    for c in clusters:
        c.close()


# --------------------------------------------------------------------------
# write quorum tests: clusters with per-server flags, polling a survivor


@pytest.fixture
def make_cluster_each(make_cluster):
    """make_cluster_each(n, each={i: args}, extra=(), connected=True) -> Cluster:
    like make_cluster without forwarders, but server i also gets each[i]
    (after `extra`), e.g. each={0: ("--write-quorum", "all")}."""
    def _make(n, each=None, extra=(), connected=True):
        return make_cluster(n, extra=extra, connected=connected, each=each)
    return _make


def wait_served(server, remote, want, tmp_path, timeout=60, others=()):
    """Poll `get remote` on server until it succeeds (or fail after `timeout`
    seconds), then assert the bytes equal the local file `want`.  For servers
    whose cluster cannot converge by `status --wait` (a member is gone);
    `others` are servers whose logs go in the failure message."""
    out = Path(tmp_path) / f"polled-{server.port}-{remote.replace('/', '_')}"
    deadline = time.monotonic() + timeout
    tries = 0
    while True:
        if out.exists():
            out.unlink()
        cp = server.cli("get", remote, out, check=False, timeout=60)
        tries += 1
        if cp.returncode == 0:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"{remote} not served by {server.addr} within {timeout}s ({tries} tries); "
                        f"last try:" + describe(cp) + "\n" + cluster_report([server, *others]))
        time.sleep(0.2)
    got_size, want_size = out.stat().st_size, Path(want).stat().st_size
    assert got_size == want_size and sha256_file(out) == sha256_file(want), (
        f"{remote} from {server.addr}: {got_size} bytes, sha256 {sha256_file(out)[:16]}; expected "
        f"{want_size} bytes, sha256 {sha256_file(want)[:16]} (as {want})\n"
        + cluster_report([server, *others]))
    return out


# --------------------------------------------------------------------------
# retention, tombstones, garbage collection (test_gc.py)

# One line of `log REMOTE_PATH`, newest first:
#   "version 5      2026-11-25 21:32         5 B  568bc2…"   (a kept version)
#   "version 3      2026-11-25 21:32     deleted"            (a tombstone)
LOG_LINE_RE = re.compile(r"^version\s+(?P<version>\d+)\s+(?P<rest>.*)$")


def dir_size(path):
    """Sum of the sizes of every file under `path` (os.walk; symlinks not
    followed; files that vanish while walking count 0)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def log_versions(server, remote, **kw):
    """`log REMOTE_PATH` on server: the CompletedProcess and a list of
    {"version": int, "deleted": bool, "line": str}, newest first (an empty
    list when the command failed)."""
    cp = server.cli("log", remote, check=False, **kw)
    out = []
    if cp.returncode == 0:
        for line in cp.stdout.splitlines():
            m = LOG_LINE_RE.match(line.strip())
            if m:
                out.append({"version": int(m.group("version")),
                            "deleted": m.group("rest").split()[-1:] == ["deleted"],
                            "line": line.strip()})
    return cp, out


def server_log_lines(server, needle):
    """Every line containing `needle` in all of the server's log files (one
    per start), in order."""
    lines = []
    for n in range(1, server.starts + 1):
        f = server.logdir / f"server-{server.port}-{n}.log"
        if f.exists():
            lines += [line for line in f.read_text(errors="replace").splitlines() if needle in line]
    return lines
