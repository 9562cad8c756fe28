"""Peer lists: two servers that list each other must describe clusters of
the same size (else they would count different majorities) and are refused
at the handshake with a clear message; a server the others do not list yet
may still pull a full copy (tests/integration/test_replication.py)."""

import time

from conftest import HOST, free_port


def test_mismatched_peer_lists_refused(make_server):
    pa, pb, pc = free_port(), free_port(), free_port()
    a = make_server(port=pa, extra=("--peer", f"{HOST}:{pb}", "--peer", f"{HOST}:{pc}"))  # 3 servers
    b = make_server(port=pb, extra=("--peer", f"{HOST}:{pa}"))  # 2 servers
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if "peer lists disagree" in a.log() and "peer lists disagree" in b.log():
            break
        time.sleep(0.2)
    for s in (a, b):
        log = s.log()
        assert "peer lists disagree" in log and "says the cluster has" in log, \
            f"{s.addr} did not say why the link is refused:\n{log}"
    # Nothing replicates between them.
    st = b.status()
    peer = next(x for x in st["servers"] if not x["self"])
    assert not peer["connected"], f"a peer with a different peer list counts as connected: {st}"
