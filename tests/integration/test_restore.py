"""A data directory restored from an older copy (issue 3, docs/REPLICATION.md
"A restored data directory"): its log went back, and what it writes next
gets sequence numbers its peers' cursors already passed.  The server finds
out from the first PULL whose cursor is past its head or points at another
record than the one the peer received there, starts a new sequence space
(a new index id, so every peer pulls its log again from the start) and moves
its version clock past the lost part.  Real servers on 127.0.0.1; the
restore is a real copy of a stopped server's data directory."""

import shutil

from conftest import MiB, assert_served, make_file


def test_restored_directory_starts_a_new_sequence_space(make_cluster, tmp_path):
    # W=1, so server 0 can write while server 1 is down.
    c = make_cluster(2, extra=("--write-quorum", "1"))
    files = {}

    def put(i, name, size, seed):
        files[name] = make_file(tmp_path / name, size, seed=seed)
        c[i].put(files[name], name)

    put(0, "one.bin", MiB + 3, 1)
    c.wait_converged(timeout=60)

    # An operator's backup of server 0, taken while it is stopped.
    c[0].stop()
    backup = tmp_path / "backup"
    shutil.copytree(c[0].data, backup)
    c[0].start()
    c.wait_connected()
    put(0, "two.bin", 300_000, 2)
    put(0, "three.bin", 200_000, 3)
    c.wait_converged(timeout=60)  # server 1's cursor is past the backup's log

    # Server 0 is restored from the backup and writes while server 1 is
    # down: its new records take the seqs that two.bin and three.bin had,
    # which server 1's cursor has already passed.
    c[1].stop()
    c[0].stop()
    shutil.rmtree(c[0].data)
    shutil.copytree(backup, c[0].data)
    c[0].start()
    put(0, "five.bin", 100_000, 5)
    put(0, "six.bin", 50_000, 6)

    c[1].start()
    c.wait_converged(timeout=60)
    log0 = c[0].log()
    assert "restored from an older copy" in log0 and "new sequence space" in log0, (
        "server 0 did not notice its log went back:\n" + log0)
    for s in c:
        for name, src in files.items():
            assert_served(s, name, src, tmp_path, tag=f"{s.port}-{name}")
