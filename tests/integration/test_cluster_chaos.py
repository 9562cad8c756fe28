"""Cluster chaos: writers keep putting to random servers of a 3-server
cluster (write quorum: majority) while a chaos thread kills one server at a
time with -9 and restarts it; afterwards every acknowledged put reads back
byte-identical from every server.

An acknowledged put (exit 0) is durable on a majority.  A put that failed
(exit 1: no quorum, not acknowledged in time, the server died under it) may
or may not have landed — "may still appear" — so a path may hold its last
acknowledged content or the content of any put of it attempted after that
one (a later attempt also wins a conflict: it has the newer mtime); never
anything else, never an older acknowledged version, never nothing.

Runs ~40 s of chaos plus convergence and checks (CHAOS_SECONDS to change
it; CHAOS_SEED for the kill schedule and the writers' choices).
"""

import hashlib
import os
import random
import re
import subprocess
import threading
import time
from collections import Counter

from conftest import client_cmd, cluster_report, conflict_copies, describe, wait_converged

SECONDS = float(os.environ.get("CHAOS_SECONDS", "40"))
SEED = int(os.environ.get("CHAOS_SEED", "0")) or random.randrange(1, 1 << 30)
WRITERS = 4
PUT_TIMEOUT = 120      # a client that hangs longer than this fails the test
CONVERGE = 180         # after the chaos, generous


def test_cluster_chaos(make_cluster, tmp_path):
    c = make_cluster(3)
    n = len(c)
    lock = threading.Lock()
    allowed = {}           # path -> sha256s it may hold: last acknowledged + later attempts
    last_acked = {}        # path -> sha256 of its last acknowledged put
    acked_history = {}     # path -> sha256s of its acknowledged puts, in order
    counts = Counter()     # attempted, acknowledged, failed
    reasons = Counter()    # first line of a failed put's stderr, normalised a little
    failures = []          # what fails the test: a hung client, an exit other than 0/1
    stop = time.monotonic() + SECONDS
    t_start = time.monotonic()

    def writer(k):
        try:
            write_loop(k)
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(f"writer {k}: {e!r}")

    def write_loop(k):
        rnd = random.Random(SEED * 31 + k)
        local = tmp_path / f"local{k}"
        mine = []
        i = 0
        while time.monotonic() < stop:
            overwrite = bool(mine) and rnd.random() < 0.25
            if overwrite:
                path = rnd.choice(mine)                 # an overwrite of one of its own paths
            else:
                path = f"w{k}/n{i:05d}.bin"
                i += 1
                mine.append(path)
            data = rnd.randbytes(int(2 ** rnd.uniform(11, 17.6)))   # 2 KiB .. ~200 KiB
            local.write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            target = c[rnd.randrange(n)]
            with lock:
                allowed.setdefault(path, set()).add(digest)
                counts["attempted"] += 1
                counts["overwrites attempted"] += overwrite
            cmd = client_cmd("put", str(local), path, server=target, tls=target.tls)
            try:
                cp = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    errors="replace", timeout=PUT_TIMEOUT)
            except subprocess.TimeoutExpired:
                failures.append(f"put {path} to {target.addr} hung for more than {PUT_TIMEOUT} s")
                return
            with lock:
                if cp.returncode == 0:
                    counts["acknowledged"] += 1
                    allowed[path] = {digest}
                    last_acked[path] = digest
                    acked_history.setdefault(path, []).append(digest)
                elif cp.returncode == 1:
                    counts["failed"] += 1
                    first = (cp.stderr.strip().splitlines() or ["(no message)"])[0]
                    reasons[normalise(first)] += 1
                else:
                    failures.append(f"put exited {cp.returncode} (expected 0 or 1):" + describe(cp))

    threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(WRITERS)]
    for t in threads:
        t.start()

    rnd = random.Random(SEED)
    kills = Counter()
    while time.monotonic() < stop:
        time.sleep(rnd.uniform(2.0, 4.0))
        if time.monotonic() >= stop:
            break
        victim = rnd.randrange(n)
        crashed = [i for i, s in enumerate(c) if not s.alive()]
        assert not crashed, (f"server(s) {crashed} died without being killed:\n"
                             + cluster_report(c.servers))
        c[victim].kill9()
        kills[victim] += 1
        time.sleep(rnd.uniform(0.5, 2.0))
        c[victim].start(timeout=60)   # never more than one down: W=majority stays possible
    for t in threads:
        t.join(timeout=PUT_TIMEOUT + 30)
    chaos_took = time.monotonic() - t_start
    assert not any(t.is_alive() for t in threads), "a writer did not finish"

    summary = (f"seed {SEED}; {chaos_took:.1f} s of writes and kills: puts attempted {counts['attempted']}, "
               f"acknowledged {counts['acknowledged']}, failed {counts['failed']}; "
               f"kills {sum(kills.values())} (per server {dict(sorted(kills.items()))}); "
               f"{counts['overwrites attempted']} of the attempts overwrites; distinct paths "
               f"acknowledged {len(last_acked)}, of which "
               f"{sum(1 for h in acked_history.values() if len(h) > 1)} with more than one "
               f"acknowledged version")
    print("\n" + summary)
    print("failed puts by reason: " + "; ".join(f"{v} × {r}" for r, v in reasons.most_common()))
    assert not failures, failures[0] + "\n" + summary
    assert sum(kills.values()) >= max(1, int(SECONDS / 8)), summary
    assert counts["acknowledged"] > 0, summary

    # Every server up, the cluster converged.
    crashed = [i for i, s in enumerate(c) if not s.alive()]
    assert not crashed, f"server(s) {crashed} died without being killed:\n" + cluster_report(c.servers)
    c.wait_connected(timeout=60)
    t0 = time.monotonic()
    wait_converged(c.servers, CONVERGE)
    print(f"converged {time.monotonic() - t0:.1f} s after the chaos")

    # Every acknowledged put reads back from every server: one `get wK DIR`
    # per writer and server, then each file compared.
    problems = []
    conflicts = set()
    t0 = time.monotonic()
    for i, s in enumerate(c):
        listed = set(line.split()[-1] for line in s.cli("ls").stdout.splitlines() if line.strip())
        for k in range(WRITERS):
            paths = sorted(p for p in last_acked if p.startswith(f"w{k}/"))
            if not paths:
                continue
            out = tmp_path / f"check-{i}-w{k}"
            cp = s.cli("get", f"w{k}", out, check=False, timeout=300)
            if cp.returncode != 0:
                problems.append(f"server {i}: `get w{k}` failed:" + describe(cp))
                continue
            for p in paths:
                conflicts.update(conflict_copies(listed, p))
                f = out / p.split("/", 1)[1]
                if p not in listed:
                    problems.append(f"server {i}: acknowledged {p} is not listed by `ls`")
                if not f.exists():
                    problems.append(f"server {i}: acknowledged {p} was not served")
                    continue
                got = hashlib.sha256(f.read_bytes()).hexdigest()
                if got not in allowed[p]:
                    what = ("an OLDER acknowledged version" if got in acked_history[p][:-1]
                            else "content never put there (or an attempt before the last ack)")
                    problems.append(f"server {i}: {p} holds {what} (sha256 {got[:16]}); last "
                                    f"acknowledged {last_acked[p][:16]}, later attempts "
                                    f"{sorted(d[:16] for d in allowed[p] - {last_acked[p]})}")
    print(f"checked {len(last_acked)} acknowledged paths on {n} servers in "
          f"{time.monotonic() - t0:.1f} s; conflict copies of acknowledged paths: {len(conflicts)}"
          + (f" ({sorted(conflicts)[:5]}…)" if conflicts else ""))
    assert not problems, (f"{len(problems)} problem(s) after the chaos ({summary}):\n"
                          + "\n".join(problems[:30]) + "\n" + cluster_report(c.servers))
    for s in c:
        assert s.alive()


def normalise(line):
    """A failed put's first stderr line without the numbers and addresses that
    make every one unique."""
    line = re.sub(r"\d+\.\d+\.\d+\.\d+:\d+", "ADDR", line)
    line = re.sub(r"\bw\d+/n\d+\.bin\b", "PATH", line)
    return re.sub(r"\d+", "N", line)
