"""Scrub and repair: a byte flipped in a stored chunk on one server is found
by the background scrub, never served, and fetched again from a peer whose
copy verifies.  Real servers on 127.0.0.1; the corruption is a real write
into the segment file under a running server."""

import time

from conftest import MiB, assert_served, make_file


def flip_byte_in_chunk_data(data_dir, offset_hint=200_000):
    """Flip one byte inside the first segment file, past its headers, so a
    chunk's bytes no longer match its id."""
    segs = sorted((data_dir / "seg").glob("*.seg"))
    assert segs, f"no segment files under {data_dir}/seg"
    seg = segs[0]
    size = seg.stat().st_size
    assert size > offset_hint + 1, f"{seg} is only {size} bytes"
    with open(seg, "r+b") as f:
        f.seek(offset_hint)
        b = f.read(1)
        f.seek(offset_hint)
        f.write(bytes([b[0] ^ 0x40]))
    return seg


def test_bitrot_found_by_scrub_and_repaired_from_peer(make_cluster, tmp_path):
    c = make_cluster(2, extra=("--scrub-interval", "1"))
    src = make_file(tmp_path / "rot.bin", 3 * MiB + 777, seed=41)
    c[0].put(src, "rot.bin")
    c.wait_converged(timeout=60)

    flip_byte_in_chunk_data(c[1].data)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log = c[1].log()
        if "repaired 1 of 1 chunks" in log:
            break
        time.sleep(0.2)
    log = c[1].log()
    assert "scrub: chunk" in log and "corrupt" in log, \
        "scrub did not report the flipped byte within 30 s:\n" + log
    assert "repaired 1 of 1 chunks" in log, "the corrupt chunk was not repaired from the peer:\n" + log

    # The repaired copy serves, byte-identical, and the peer's is untouched.
    assert_served(c[1], "rot.bin", src, tmp_path, tag="repaired")
    assert_served(c[0], "rot.bin", src, tmp_path, tag="peer")

    # And it stays repaired across a restart (the repair was made durable).
    c[1].restart()
    c.wait_converged(timeout=60)
    assert_served(c[1], "rot.bin", src, tmp_path, tag="after-restart")
