"""`syncstore forget NODE`: a dead member stops blocking tombstone expiry,
status says so, and the forgotten node cannot bring deleted files back."""

import json
import time

from conftest import assert_fails


def status_json(server):
    return json.loads(server.cli("status", "--json").stdout)


def entry(st, addr):
    return next(s for s in st["servers"] if s["addr"] == addr)


def test_forget_unblocks_tombstones_and_refuses_the_node(make_cluster, tmp_path):
    c = make_cluster(3, extra=("--retention", "1"))
    f = tmp_path / "a.txt"
    f.write_text("soon deleted\n")
    c[0].put(f, "a.txt")
    c.wait_converged(timeout=60)
    dead = c[2]
    dead_id = entry(status_json(c[0]), dead.addr)["node"]

    dead.kill9()
    c[0].cli("rm", "a.txt")

    # Past the retention the tombstone still waits for the dead member,
    # and status says which member it waits for.
    time.sleep(3.5)
    st = status_json(c[0])
    assert st["servers"][0]["tombstones"] >= 1, f"the tombstone expired with a member down: {st}"
    assert entry(st, dead.addr)["blocks_tombstone_expiry"], f"status does not show who blocks: {st}"
    text = c[0].cli("status").stdout
    assert "tombstones wait for it" in text and "tombstone kept" in text, text

    # A prefix of the id is enough; every live member records it.
    cp = c[0].cli("forget", dead_id[:16])
    assert "on 2 servers" in cp.stdout, cp.stdout
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st0, st1 = status_json(c[0]), status_json(c[1])
        if st0["servers"][0]["tombstones"] == 0 and st1["servers"][0]["tombstones"] == 0:
            break
        time.sleep(0.3)
    assert st0["servers"][0]["tombstones"] == 0 and st1["servers"][0]["tombstones"] == 0, \
        f"tombstones did not expire after forget:\n{st0}\n{st1}\n" + c[0].log()
    assert entry(st0, dead.addr)["forgotten"], st0
    assert st0["converged"], f"a forgotten member should not keep the cluster unconverged: {st0}"

    # The forgotten node comes back with its old data (a.txt still live
    # there): it is refused, and a.txt stays deleted everywhere else.
    dead.start()
    time.sleep(3)
    for s in (c[0], c[1]):
        assert "a.txt" not in s.ls(), f"a deleted file came back on {s.addr}:\n" + s.log()
    assert "forgot" in dead.log() or "forgotten" in dead.log(), \
        "the forgotten node was not told why it is refused:\n" + dead.log()


def test_forget_refuses_unknown_and_self(make_cluster):
    c = make_cluster(2)
    self_id = status_json(c[0])["servers"][0]["node"]
    assert_fails(c[0].cli("forget", self_id[:16], check=False), words=("itself",))
    assert_fails(c[0].cli("forget", "0123456789abcdef", check=False), words=("no member",))
    assert_fails(c[0].cli("forget", "xyz", check=False), words=("node id",))
