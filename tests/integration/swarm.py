"""Harness for the swarm tests (test_swarm.py): `tracker` and `client`
processes (docs/SWARM.md), their files parsed, and a fake seeder that
speaks the wire protocol from Python.

Every process goes through the `procs` fixture, so it is killed by PID at
teardown.  Nothing here sleeps for correctness: every wait polls a file
(seederlist export, stdout, stderr, log) or a process until a deadline and
then fails with a report of every process's output.

A client's replies are read from its stdout file.  `show_downloads` is also
the barrier the harness uses: commands run one after another, so once its
answer is printed, every command sent before it has been handled.
"""

import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import BIN, HELLO, HOST, frame, free_port, read_frame, wire_str

BIN_DIR = Path(BIN).parent
TRACKER = BIN_DIR / "tracker"
CLIENT = BIN_DIR / "client"

LEASE_MS = 3000          # SYNCSTORE_LEASE_MS of every tracker and client here
EXPIRY = 10              # seconds allowed for a dead seeder to drop out (lease + slack)
DOWNLOAD = 60            # seconds allowed for one download

# Wire message types (docs/WIRE.md, docs/SWARM.md).
MSG_HELLO, MSG_ERROR, MSG_OK, MSG_END = 1, 2, 3, 4
MSG_CHUNK = 14
MSG_PULL, MSG_PULLED, MSG_READ, MSG_MISSING = 50, 51, 52, 53
MSG_ANNOUNCE, MSG_HEARTBEAT, MSG_SEEDERS, MSG_SEEDER = 60, 61, 62, 63
ANNOUNCE_WITHDRAW, ANNOUNCE_WITHDRAW_ALL = 1, 2
TREE_MAGIC = b"SSMN"     # the first bytes of a manifest tree node (chunk/chunk.h)

# `show_downloads` answer lines:
#   [D] NAME -> DEST  42.0%  12.3 MB/s  3 sources
#   [S] NAME -> DEST
#   [F] NAME -> DEST  reason
DOWNLOAD_RE = re.compile(r"^\[(?P<state>[DSF])\]\s+(?P<name>.*?)\s+->\s+(?P<dest>.*?)(?:\s{2,}(?P<rest>.*))?$")
NO_DOWNLOADS_RE = re.compile(r"^no downloads\s*$")
PERCENT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*%")


def swarm_env(ca):
    env = dict(os.environ)
    env.pop("SYNCSTORE_SERVER", None)
    env["SYNCSTORE_TLS"] = str(ca)
    env["SYNCSTORE_LEASE_MS"] = str(LEASE_MS)
    return env


def esc(s):
    """A word for the client's command line: `\\` before each space."""
    return str(s).replace("\\", "\\\\").replace(" ", "\\ ")


def tail(path, n=4000):
    path = Path(path)
    if not path.exists():
        return f"({path.name}: no such file)"
    text = path.read_text(errors="replace")
    return text if len(text) <= n else "…" + text[-n:]


def wait_port(port, proc, what, report, timeout=30):
    """Until 127.0.0.1:port accepts a TCP connection; fails if proc exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode} before it listened on port {port}\n"
                        + report())
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not listening on port {port} after {timeout}s\n" + report())
        time.sleep(0.05)


# --------------------------------------------------------------------------
# files


@dataclass
class Mtorrent:
    path: Path
    root: str
    name: str
    size: int
    text: str


def parse_mtorrent(path):
    """The fields of a .mtorrent this client wrote ("key value" lines)."""
    text = Path(path).read_text(errors="replace")
    lines = text.splitlines()
    assert lines and re.fullmatch(r"syncstore-mtorrent \d+", lines[0]), \
        f"{path} does not start with 'syncstore-mtorrent N':\n{text}"
    fields = {}
    for line in lines[1:]:
        k, _, v = line.partition(" ")
        fields.setdefault(k, v)
    assert re.fullmatch(r"[0-9a-fA-F]{64}", fields.get("root", "")), f"{path}: no 'root <64 hex>' line:\n{text}"
    assert fields.get("size", "").isdigit(), f"{path}: no 'size N' line:\n{text}"
    return Mtorrent(Path(path), fields["root"].lower(), fields.get("name", ""), int(fields["size"]), text)


@dataclass(frozen=True)
class Seeder:
    root: str
    name: str
    size: int
    addr: str
    node: str


def read_seederlist(path):
    """The entries of a seederlist export: tab-separated root, name, size,
    seeder address, seeder node id; '#' lines are comments."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        f = line.split("\t")
        assert len(f) == 5 and f[2].isdigit(), \
            f"{path}: line is not root<TAB>name<TAB>size<TAB>addr<TAB>node: {line!r}"
        out.append(Seeder(f[0].lower(), f[1], int(f[2]), f[3], f[4].lower()))
    return out


# --------------------------------------------------------------------------
# tracker


class Tracker:
    """tracker MY_ADDR OTHER_ADDR SEEDERLIST LOG, its files in `dir`."""

    def __init__(self, swarm, name, dir, port, other_addr):
        self.swarm, self.name, self.dir = swarm, name, Path(dir)
        self.port, self.other = port, other_addr
        self.dir.mkdir(parents=True, exist_ok=True)
        self.seederlist = self.dir / "seeders.txt"
        self.logfile = self.dir / "tracker.log"
        self.state_dir = Path(str(self.seederlist) + ".state")
        self.proc = None
        self.starts = 0
        self.outfile = None

    @property
    def addr(self):
        return f"{HOST}:{self.port}"

    def cmd(self):
        return [TRACKER, self.addr, self.other, self.seederlist, self.logfile]

    def start(self, wait=True):
        assert not self.alive(), f"tracker {self.name} already running"
        self.starts += 1
        self.outfile = self.dir / f"tracker-{self.starts}.out"
        with open(self.outfile, "wb") as out:
            self.proc = self.swarm.procs.popen(self.cmd(), stdout=out, stderr=subprocess.STDOUT,
                                               env=swarm_env(self.swarm.ca))
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=30):
        wait_port(self.port, self.proc, f"tracker {self.name} ({' '.join(map(str, self.cmd()))})",
                  self.swarm.report, timeout)
        self.swarm.wait(lambda: self.seederlist.exists(), timeout,
                        f"tracker {self.name} listens but did not create its seederlist file {self.seederlist}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self):
        self.kill9()
        return self.start()

    def entries(self):
        return read_seederlist(self.seederlist)

    def pairs(self):
        """{(root, seeder address)} of the export."""
        return {(e.root, e.addr) for e in self.entries()}

    def lists(self, root, addr):
        return (root.lower(), addr) in self.pairs()

    def wait_listed(self, root, addr, timeout=15):
        self.swarm.wait(lambda: self.lists(root, addr), timeout,
                        f"tracker {self.name}'s seederlist does not list seeder {addr} for root {root[:16]}…")

    def wait_unlisted(self, root, addr, timeout=15):
        self.swarm.wait(lambda: not self.lists(root, addr), timeout,
                        f"tracker {self.name}'s seederlist still lists seeder {addr} for root {root[:16]}…")

    def log(self):
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def report(self):
        state = "running" if self.alive() else f"exited {self.proc.returncode}" if self.proc else "not started"
        out = f"=== tracker {self.name} {self.addr} ({state}) ===\n"
        out += f"--- seederlist ---\n{tail(self.seederlist, 2000)}\n--- log ---\n{tail(self.logfile, 2500)}\n"
        if self.outfile is not None:
            out += f"--- stdout+stderr ---\n{tail(self.outfile, 2500)}\n"
        return out


# --------------------------------------------------------------------------
# client


@dataclass
class Download:
    state: str       # D, S or F
    name: str
    dest: str
    rest: str
    line: str

    @property
    def percent(self):
        m = PERCENT_RE.search(self.rest or "")
        return float(m.group(1)) if m else None


def same_dest(shown, dest):
    shown = shown.replace("\\ ", " ").strip()
    dest = str(dest)
    return shown == dest or shown.endswith("/" + dest) or dest.endswith("/" + shown)


class Client:
    """client MY_ADDR TRACKER1 TRACKER2 LOG, run in `cwd` with stdin a pipe."""

    def __init__(self, swarm, name, cwd, port, trackers, logdir, env=None):
        self.env = dict(env or {})  # extra environment (SYNCSTORE_UPLOAD_RATE)
        self.swarm, self.name, self.cwd = swarm, name, Path(cwd)
        self.port = port
        self.trackers = list(trackers)
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.logfile = self.logdir / f"{name}.log"
        self.proc = None
        self.starts = 0
        self.stdout_path = self.stderr_path = None

    @property
    def addr(self):
        return f"{HOST}:{self.port}"

    def cmd(self):
        return [CLIENT, self.addr, self.trackers[0], self.trackers[1], self.logfile]

    def start(self, wait=True):
        assert not self.alive(), f"client {self.name} already running"
        self.starts += 1
        self.stdout_path = self.logdir / f"{self.name}-{self.starts}.stdout"
        self.stderr_path = self.logdir / f"{self.name}-{self.starts}.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = self.swarm.procs.popen(self.cmd(), cwd=self.cwd, stdin=subprocess.PIPE,
                                               stdout=out, stderr=err,
                                               env={**swarm_env(self.swarm.ca), **self.env})
        if wait:
            wait_port(self.port, self.proc, f"client {self.name}", self.swarm.report)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # ---- input and output

    def send(self, line):
        assert self.alive(), f"client {self.name} is not running (exit {self.proc.returncode})\n" \
            + self.swarm.report()
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pytest.fail(f"client {self.name} closed its standard input before {line!r}\n"
                        + self.swarm.report())

    def end_input(self):
        """Close standard input (end of input is `close`)."""
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass

    def out_bytes(self):
        return self.stdout_path.read_bytes() if self.stdout_path.exists() else b""

    def err_bytes(self):
        return self.stderr_path.read_bytes() if self.stderr_path.exists() else b""

    def log(self):
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def wait_for_output(self, regex, timeout=10, since=0):
        """The first match of regex (multiline) in stdout after byte `since`."""
        rx = re.compile(regex, re.M)
        deadline = time.monotonic() + timeout
        while True:
            text = self.out_bytes()[since:].decode(errors="replace")
            m = rx.search(text)
            if m:
                return m
            if not self.alive() or time.monotonic() > deadline:
                pytest.fail(f"client {self.name}: no output matching {regex!r} within {timeout}s "
                            f"(process {'running' if self.alive() else 'exited'})\n" + self.swarm.report())
            time.sleep(0.02)

    def show_downloads(self, timeout=15):
        """Send show_downloads and parse its answer: a list of Download
        ([] for "no downloads")."""
        since = len(self.out_bytes())
        self.send("show_downloads")
        deadline = time.monotonic() + timeout
        while True:
            raw = self.out_bytes()[since:]
            lines = raw.decode(errors="replace").split("\n")[:-1]  # complete lines only
            if any(NO_DOWNLOADS_RE.match(l) or DOWNLOAD_RE.match(l) for l in lines):
                break
            if not self.alive():
                pytest.fail(f"client {self.name} exited ({self.proc.returncode}) instead of answering "
                            f"show_downloads\n" + self.swarm.report())
            if time.monotonic() > deadline:
                pytest.fail(f"client {self.name} did not answer show_downloads within {timeout}s "
                            f"(expected 'no downloads' or '[D|S|F] NAME -> DEST ...' lines on stdout; "
                            f"got {raw[-500:]!r})\n" + self.swarm.report())
            time.sleep(0.02)
        # The answer may span several writes: read until stdout stops growing.
        size, settle = len(raw), time.monotonic() + 1
        while time.monotonic() < settle:
            time.sleep(0.03)
            raw = self.out_bytes()[since:]
            if len(raw) == size:
                break
            size = len(raw)
        out = []
        for line in raw.decode(errors="replace").split("\n")[:-1]:
            m = DOWNLOAD_RE.match(line.rstrip())
            if m:
                out.append(Download(m["state"], m["name"], m["dest"], m["rest"] or "", line.rstrip()))
        return out

    sync = show_downloads

    def download(self, dest):
        """The show_downloads line of dest, or None."""
        for d in self.show_downloads():
            if same_dest(d.dest, dest):
                return d
        return None

    def wait_done(self, dest, timeout=DOWNLOAD):
        """Poll show_downloads until dest is [S]; fails on [F] or timeout."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            downloads = self.show_downloads()
            d = next((d for d in downloads if same_dest(d.dest, dest)), None)
            if d is not None and d.state == "S":
                return d
            if d is not None and d.state == "F":
                pytest.fail(f"client {self.name}: download to {dest} failed: {d.line}\n" + self.swarm.report())
            last = d.line if d else [x.line for x in downloads]
            if time.monotonic() > deadline:
                pytest.fail(f"client {self.name}: download to {dest} not [S] after {timeout}s; "
                            f"last show_downloads: {last}\n" + self.swarm.report())
            time.sleep(0.1)

    # ---- commands

    def share(self, path, mtorrent_name, timeout=60):
        """share PATH NAME.mtorrent; returns the written .mtorrent, parsed."""
        err0 = len(self.err_bytes())
        self.send(f"share {esc(path)} {esc(mtorrent_name)}")
        self.show_downloads(timeout=timeout)
        mt = self.cwd / mtorrent_name
        self.swarm.wait(lambda: mt.exists() and b"\nroot " in mt.read_bytes(), 10,
                        f"client {self.name}: `share {path} {mtorrent_name}` wrote no {mt} "
                        f"(stderr: {self.err_bytes()[err0:].decode(errors='replace')!r})")
        return parse_mtorrent(mt)

    def get(self, mtorrent_path, dest):
        self.send(f"get {esc(mtorrent_path)} {esc(dest)}")

    def remove(self, mtorrent_name):
        self.send(f"remove {esc(mtorrent_name)}")
        self.show_downloads()

    def wait_exit(self, timeout=60):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"client {self.name} did not exit within {timeout}s\n" + self.swarm.report())

    def close(self, timeout=60):
        """close, end of input, wait for the exit; returns the exit status."""
        self.send("close")
        self.end_input()
        return self.wait_exit(timeout)

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def kill9(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def report(self):
        if self.proc is None:
            return f"=== client {self.name} (not started) ===\n"
        state = "running" if self.alive() else f"exited {self.proc.returncode}"
        return (f"=== client {self.name} {self.addr} in {self.cwd} ({state}) ===\n"
                f"--- stdout ---\n{tail(self.stdout_path, 1500)}\n--- stderr ---\n{tail(self.stderr_path, 1500)}\n"
                f"--- log ---\n{tail(self.logfile, 3000)}\n")


# --------------------------------------------------------------------------
# the swarm: trackers and clients of one test


class Swarm:
    def __init__(self, procs, ca, root):
        self.procs, self.ca, self.root = procs, Path(ca), Path(root)
        self.trackers = []
        self.clients = {}
        for exe in (TRACKER, CLIENT):
            if not os.path.exists(exe):
                pytest.fail(f"{exe} not found: build/tracker and build/client are symlinks to syncstore")

    def tracker_pair(self):
        p1, p2 = free_port(), free_port()
        while p2 == p1:
            p2 = free_port()
        t1 = self.tracker("T1", p1, f"{HOST}:{p2}", start=False)
        t2 = self.tracker("T2", p2, f"{HOST}:{p1}", start=False)
        t1.start(wait=False)
        t2.start(wait=False)
        t1.wait_ready()
        t2.wait_ready()
        return t1, t2

    def tracker(self, name, port, other_addr, start=True):
        t = Tracker(self, name, self.root / name, port, other_addr)
        self.trackers.append(t)
        return t.start() if start else t

    def client(self, name, trackers=None, start=True, env=None):
        trackers = trackers or self.trackers[:2]
        addrs = [t.addr if hasattr(t, "addr") else str(t) for t in trackers]
        c = Client(self, name, self.root / name, free_port(), addrs, self.root / "logs", env=env)
        self.clients[name] = c
        return c.start() if start else c

    def give(self, mt, client, as_name=None):
        """Copy a .mtorrent into a client's working directory; returns the copy."""
        dst = client.cwd / (as_name or Path(mt.path if isinstance(mt, Mtorrent) else mt).name)
        shutil.copyfile(mt.path if isinstance(mt, Mtorrent) else mt, dst)
        return dst

    def wait(self, pred, timeout, what):
        """Poll pred() until true; else fail with `what` (a string, or a
        callable giving one at the time of failure) and every process's output."""
        deadline = time.monotonic() + timeout
        while True:
            if pred():
                return
            if time.monotonic() > deadline:
                what = what() if callable(what) else what
                pytest.fail(f"{what} (waited {timeout:.1f}s)\n" + self.report())
            time.sleep(0.05)

    def report(self):
        return "".join(t.report() for t in self.trackers) + "".join(c.report() for c in self.clients.values())


# --------------------------------------------------------------------------
# raw wire access to trackers and seeders


def id_bytes(hex_root):
    return bytes.fromhex(hex_root)


def tls_client_ctx(ca, crt, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(str(Path(ca) / "ca.crt"))
    ctx.load_cert_chain(str(crt), str(key))
    return ctx


def connect(addr, ctx, timeout=5):
    """A TLS connection to addr with the HELLO exchange done."""
    host, _, port = addr.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        s = ctx.wrap_socket(sock)
    except Exception:
        sock.close()
        raise
    s.sendall(HELLO)
    t, p = read_frame(s)
    if t != MSG_HELLO:
        s.close()
        raise ConnectionError(f"{addr} answered HELLO with a frame of type {t}: {p[:80]!r}")
    return s


def error_text(payload):
    try:
        (code,) = struct.unpack_from("<i", payload)
        (n,) = struct.unpack_from("<H", payload, 4)
        return f"ERROR {code}: {payload[6:6 + n].decode(errors='replace')}"
    except struct.error:
        return f"ERROR {payload!r}"


def announce_frame(root, size, name, addr, flags=0):
    return frame(MSG_ANNOUNCE, id_bytes(root) + struct.pack("<Q", size) + wire_str(name)
                 + wire_str(addr) + struct.pack("<I", flags))


def heartbeat_frame(addr, shares):
    return frame(MSG_HEARTBEAT, wire_str(addr) + struct.pack("<Q", shares))


def call_ok(sock, data):
    """Send one request; its OK value (raises on anything else)."""
    sock.sendall(data)
    t, p = read_frame(sock)
    if t == MSG_OK and len(p) == 8:
        return struct.unpack("<Q", p)[0]
    raise AssertionError(error_text(p) if t == MSG_ERROR else f"expected OK, got type {t} {p[:80]!r}")


def query_seeders(addr, ctx, root):
    """SEEDERS(root) at a tracker: [(node hex, addr, size, name)]."""
    with connect(addr, ctx) as s:
        s.sendall(frame(MSG_SEEDERS, id_bytes(root)))
        out = []
        while True:
            t, p = read_frame(s)
            if t == MSG_END:
                return out
            if t != MSG_SEEDER:
                raise AssertionError(error_text(p) if t == MSG_ERROR else f"unexpected frame type {t}")
            node = p[:32].hex()
            (n,) = struct.unpack_from("<H", p, 32)
            a = p[34:34 + n].decode()
            off = 34 + n
            (size,) = struct.unpack_from("<Q", p, off)
            (m,) = struct.unpack_from("<H", p, off + 8)
            out.append((node, a, size, p[off + 10:off + 10 + m].decode(errors="replace")))


class FakeSeeder:
    """A corrupt seeder: announces itself to trackers for a real file's root
    and keeps heartbeating, then answers every READ with CHUNK frames whose
    bytes are wrong.  With `upstream` (an honest seeder's address) it fetches
    the true chunk there: tree nodes pass unchanged, so a downloader takes
    the tree from it and then asks it for data, and data chunks get one byte
    flipped, so the length is right and only the hash can tell.  Without
    upstream (or when it fails) every answer is 32 KiB of random bytes.  It
    serves with the same certificate it announces with, so its node id
    matches the tracker's record."""

    def __init__(self, ca, crt, key, trackers, upstream=None, nodes_then_missing=None):
        """nodes_then_missing=N: a seeder that dies halfway through the tree
        instead — it passes the first N tree nodes on and answers MISSING to
        everything after."""
        self.nodes_then_missing = nodes_then_missing
        self.missing_sent = 0
        self.ca, self.crt, self.key = Path(ca), Path(crt), Path(key)
        self.trackers = [t.addr if hasattr(t, "addr") else t for t in trackers]
        self.upstream = upstream
        self.port = free_port()
        self.addr = f"{HOST}:{self.port}"
        self.ctx = tls_client_ctx(ca, crt, key)
        self.sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.sctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.sctx.load_cert_chain(str(crt), str(key))
        self.sctx.load_verify_locations(str(self.ca / "ca.crt"))
        self.sctx.verify_mode = ssl.CERT_REQUIRED
        self.shares = []            # (root, size, name)
        self.lock = threading.Lock()
        self.connections = 0
        self.ids_asked = 0
        self.bad_chunks = 0
        self.tree_nodes = 0
        self.errors = []            # problems of the fake itself, for reports
        self.stop = threading.Event()
        self.socks = []
        self.listener = socket.create_server((HOST, self.port), backlog=16)
        threading.Thread(target=self._accept, daemon=True).start()

    # ---- tracker side

    def announce(self, root, size, name):
        self.shares.append((root, size, name))
        for t in self.trackers:
            with connect(t, self.ctx) as s:
                call_ok(s, announce_frame(root, size, name, self.addr))

    def start_heartbeats(self, interval=LEASE_MS / 3000):
        threading.Thread(target=self._heartbeats, args=(interval,), daemon=True).start()

    def _heartbeats(self, interval):
        while not self.stop.wait(interval):
            for t in self.trackers:
                try:
                    with connect(t, self.ctx, timeout=2) as s:
                        held = call_ok(s, heartbeat_frame(self.addr, len(self.shares)))
                        if held != len(self.shares):
                            for root, size, name in self.shares:
                                call_ok(s, announce_frame(root, size, name, self.addr))
                except Exception as e:  # a tracker down is not the fake's problem
                    self._note(f"heartbeat to {t}: {e!r}")

    # ---- seeder side

    def _accept(self):
        while not self.stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        up = conn = None
        try:
            sock.settimeout(30)
            conn = self.sctx.wrap_socket(sock, server_side=True)
            with self.lock:
                self.socks.append(conn)
                self.connections += 1
            t, _ = read_frame(conn)
            if t != MSG_HELLO:
                return
            conn.sendall(HELLO)
            while not self.stop.is_set():
                t, p = read_frame(conn)
                if t != MSG_READ:
                    conn.sendall(frame(MSG_ERROR, struct.pack("<i", -22) + wire_str("not here")))
                    continue
                (count,) = struct.unpack_from("<H", p)
                ids = [p[2 + 32 * i:2 + 32 * (i + 1)] for i in range(count)]
                with self.lock:
                    self.ids_asked += count
                true = None
                if self.upstream:
                    try:
                        up = up or connect(self.upstream, self.ctx)
                        up.sendall(frame(MSG_READ, p))
                        true = [read_frame(up) for _ in ids]
                    except Exception as e:
                        self._note(f"upstream {self.upstream}: {e!r}")
                        up, true = None, None
                out = b"".join(self._bad_chunk(i, true[k] if true else None) for k, i in enumerate(ids))
                conn.sendall(out)
        except Exception:
            return  # the downloader hung up, or dropped this seeder
        finally:
            for s in (up, conn, sock):
                if s is not None:
                    s.close()

    def _bad_chunk(self, id_, true):
        if self.nodes_then_missing is not None:
            with self.lock:
                if true is not None and true[0] == MSG_CHUNK and self.tree_nodes < self.nodes_then_missing:
                    self.tree_nodes += 1
                    return frame(MSG_CHUNK, true[1])
                self.missing_sent += 1
            return frame(MSG_MISSING, id_)
        if true is not None and true[0] == MSG_CHUNK and len(true[1]) > 37:
            p = bytearray(true[1])
            if p[32] == 0 and p[37:41] == TREE_MAGIC:
                with self.lock:
                    self.tree_nodes += 1
                return frame(MSG_CHUNK, bytes(p))  # tree nodes pass: the data is what is wrong
            with self.lock:
                self.bad_chunks += 1
            p[37 + (len(p) - 37) // 2] ^= 0x5A  # one byte of the chunk's bytes
            return frame(MSG_CHUNK, bytes(p))
        with self.lock:
            self.bad_chunks += 1
        data = random.randbytes(32 * 1024)
        return frame(MSG_CHUNK, id_ + struct.pack("<BI", 0, len(data)) + data)

    def _note(self, msg):
        with self.lock:
            self.errors.append(msg)
            del self.errors[:-20]

    def report(self):
        return (f"=== fake seeder {self.addr}: {self.connections} connections, {self.ids_asked} ids asked, "
                f"{self.tree_nodes} tree nodes passed, {self.bad_chunks} bad chunks sent; "
                f"notes: {self.errors[-5:]}\n")

    def close(self):
        self.stop.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            for s in self.socks:
                try:
                    s.close()
                except OSError:
                    pass

