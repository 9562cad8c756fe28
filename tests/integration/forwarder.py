#!/usr/bin/env python3
"""A counting TCP forwarder (stdlib only, threads).

It listens on 127.0.0.1, connects every accepted connection to a target and
copies bytes both ways, counting what it carries: `up` is client -> target,
`down` is target -> client, totals over all connections.  Counting outside
both programs measures every tool the same way (see PEERS.md).

Tests use it as an object:

    fwd = Forwarder(("127.0.0.1", server_port))
    ... run a client against fwd.addr ...
    fwd.up, fwd.down, fwd.total; fwd.reset(); fwd.close()

`hold_up_after(n)` stops carrying client -> target bytes once `n` have been
carried (exactly n: the last buffer is split), so a test can interrupt a
transfer at a known point however fast the programs are; `release()` lets
bytes flow again.  `drop_connections()` closes every open connection.

`block()` cuts the link (a network partition): it closes every open
connection and, until `unblock()`, resets every new one at once without
connecting it to the target (counted in `refused`, not in `connections`).

As a program (benchmarks):

    python3 forwarder.py LISTEN_PORT TARGET_HOST:PORT

runs until SIGTERM or SIGINT, then prints the counts.
"""

import signal
import socket
import struct
import sys
import threading

BUF = 1 << 20


class Forwarder:
    def __init__(self, target, listen_port=0, listen_host="127.0.0.1"):
        if isinstance(target, str):
            host, _, port = target.rpartition(":")
            target = (host, int(port))
        self.target = target
        self._lock = threading.Condition()
        self._up = 0
        self._down = 0
        self._connections = 0
        self._hold_at = None  # absolute `up` value where upstream pauses
        self._closed = False
        self._blocked = False
        self._refused = 0
        self._socks = set()
        self._threads = []
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((listen_host, listen_port))
        self._lsock.listen(256)
        self.port = self._lsock.getsockname()[1]
        self.addr = f"{listen_host}:{self.port}"
        self._acceptor = threading.Thread(target=self._accept_loop, name="fwd-accept", daemon=True)
        self._acceptor.start()

    # ---- counters ----
    @property
    def up(self):
        with self._lock:
            return self._up

    @property
    def down(self):
        with self._lock:
            return self._down

    @property
    def total(self):
        with self._lock:
            return self._up + self._down

    @property
    def connections(self):
        """Connections accepted since the last reset()."""
        with self._lock:
            return self._connections

    def counts(self):
        with self._lock:
            return {"up": self._up, "down": self._down, "total": self._up + self._down,
                    "connections": self._connections}

    def reset(self):
        with self._lock:
            self._up = 0
            self._down = 0
            self._connections = 0
            self._hold_at = None
            self._lock.notify_all()

    # ---- flow control for interruption tests ----
    def hold_up_after(self, nbytes):
        """Carry at most `nbytes` more client -> target bytes, then pause."""
        with self._lock:
            self._hold_at = self._up + nbytes
            self._lock.notify_all()

    def release(self):
        with self._lock:
            self._hold_at = None
            self._lock.notify_all()

    def held(self):
        """True when upstream has reached the hold point."""
        with self._lock:
            return self._hold_at is not None and self._up >= self._hold_at

    def wait_up(self, nbytes, timeout):
        """Wait until `up` >= nbytes; returns the final `up`."""
        with self._lock:
            self._lock.wait_for(lambda: self._up >= nbytes or self._closed, timeout)
            return self._up

    def drop_connections(self):
        with self._lock:
            socks = list(self._socks)
            self._socks.clear()
            self._lock.notify_all()
        for s in socks:
            _hard_close(s)

    # ---- partitions ----
    def block(self):
        """Cut the link: close every open connection and reset new ones
        (never connected to the target) until unblock()."""
        with self._lock:
            self._blocked = True
        self.drop_connections()

    def unblock(self):
        with self._lock:
            self._blocked = False

    @property
    def blocked(self):
        with self._lock:
            return self._blocked

    @property
    def refused(self):
        """Connections reset because the link was blocked (never reset to 0)."""
        with self._lock:
            return self._refused

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
        _hard_close(self._lsock)
        self.drop_connections()
        self._acceptor.join(5)
        for t in list(self._threads):
            t.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- internals ----
    def _accept_loop(self):
        while True:
            try:
                csock, _ = self._lsock.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    _hard_close(csock)
                    return
                blocked = self._blocked
                if blocked:
                    self._refused += 1
                else:
                    self._connections += 1
            if blocked:
                _reset_close(csock)
                continue
            try:
                tsock = socket.create_connection(self.target, timeout=10)
                tsock.settimeout(None)
            except OSError:
                _hard_close(csock)
                continue
            for s in (csock, tsock):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                blocked = self._blocked  # block() may have come while connecting
                if not blocked:
                    self._socks.update((csock, tsock))
            if blocked:
                _reset_close(csock)
                _hard_close(tsock)
                continue
            pair = [csock, tsock]
            for src, dst, upstream in ((csock, tsock, True), (tsock, csock, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, upstream, pair),
                                     name="fwd-pump", daemon=True)
                self._threads.append(t)
                t.start()
            self._threads = [t for t in self._threads if t.is_alive()]

    def _alive(self, s):
        return not self._closed and s in self._socks

    def _pump(self, src, dst, upstream, pair):
        """Copy src -> dst until EOF; the second direction to end closes both."""
        failed = False
        try:
            while True:
                data = src.recv(BUF)
                if not data:
                    break
                view = memoryview(data)
                while len(view):
                    n = len(view)
                    if upstream:
                        with self._lock:
                            self._lock.wait_for(
                                lambda: not self._alive(src) or self._hold_at is None
                                or self._up < self._hold_at)
                            if not self._alive(src):
                                return  # dropped while held: discard what was read
                            if self._hold_at is not None:
                                n = min(n, self._hold_at - self._up)
                    dst.sendall(view[:n])
                    with self._lock:
                        if upstream:
                            self._up += n
                        else:
                            self._down += n
                        self._lock.notify_all()
                    view = view[n:]
            try:
                dst.shutdown(socket.SHUT_WR)  # pass the FIN on
            except OSError:
                pass
        except OSError:
            failed = True  # reset or dropped: close both sides
        finally:
            with self._lock:
                pair.append(None)  # one more direction finished
                last = failed or len(pair) >= 4 or not self._alive(src)
                if last:
                    self._socks.discard(pair[0])
                    self._socks.discard(pair[1])
                    self._lock.notify_all()
            if last:
                _hard_close(pair[0])
                _hard_close(pair[1])


def _hard_close(s):
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


def _reset_close(s):
    """Close with a RST (SO_LINGER 0), like a refused or cut link."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


def main(argv):
    if len(argv) != 3:
        print(f"usage: {argv[0]} LISTEN_PORT TARGET_HOST:PORT", file=sys.stderr)
        return 2
    fwd = Forwarder(argv[2], listen_port=int(argv[1]))
    print(f"forwarding 127.0.0.1:{fwd.port} -> {argv[2]}", file=sys.stderr, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1):
        pass
    c = fwd.counts()
    fwd.close()
    print(f"up {c['up']} down {c['down']} total {c['total']} connections {c['connections']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
