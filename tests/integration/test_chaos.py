"""Single-server chaos: writers keep putting while the server is killed with
-9 and restarted at random; afterwards every acknowledged put reads back.

A put whose acknowledgement was lost to a kill may or may not have landed,
so a path may hold its last acknowledged content or any content attempted
after it — never anything else, and never an unreadable file.  Runs ~20 s
(CHAOS_SECONDS to change it)."""
import hashlib
import os
import random
import subprocess
import threading
import time

from conftest import client_cmd, describe

SECONDS = float(os.environ.get("CHAOS_SECONDS", "20"))


def test_acknowledged_puts_survive_repeated_kill9(make_server, tmp_path):
    server = make_server()
    lock = threading.Lock()
    allowed = {}  # path -> sha256s it may hold: last acked, then later attempts
    acked = set()  # paths with at least one acknowledged put: never absent
    stop = time.monotonic() + SECONDS
    failures = []

    def writer(k):
        try:
            write_loop(k)
        except Exception as e:  # a hung client (timeout) must fail the test
            failures.append(f"writer {k}: {e!r}")

    def write_loop(k):
        rnd = random.Random(k)
        local = tmp_path / f"local{k}"
        while time.monotonic() < stop:
            path = f"w{k}/f{rnd.randrange(6)}"
            data = rnd.randbytes(rnd.choice([0, 1, 5000, 100_000, 2_000_000]))
            local.write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            with lock:
                allowed.setdefault(path, set()).add(digest)
            cp = subprocess.run(client_cmd("put", str(local), path, server=server, tls=server.tls),
                                capture_output=True, text=True, timeout=60)
            if cp.returncode == 0:
                with lock:
                    allowed[path] = {digest}
                    acked.add(path)
            elif cp.returncode != 1:
                failures.append("put exited %d:%s" % (cp.returncode, describe(cp)))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    rnd = random.Random(99)
    kills = 0
    while time.monotonic() < stop:
        time.sleep(rnd.uniform(0.5, 2.5))
        server.kill9()
        kills += 1
        server.start()
    for t in threads:
        t.join()
    assert not failures, failures[0]
    assert kills >= 3

    out = tmp_path / "check"
    for path, digests in sorted(allowed.items()):
        cp = server.cli("get", path, str(out), check=False)
        if cp.returncode != 0:
            # Absent is fine only if no put of it was ever acknowledged.
            assert path not in acked and "no such file" in cp.stderr, describe(cp)
            continue
        got = hashlib.sha256(out.read_bytes()).hexdigest()
        assert got in digests, f"{path} holds content that was never put (kills={kills})"
    assert server.stop() == 0
