"""An interrupted put resumes: chunks the server already stored are not sent again."""

import signal
import time

from conftest import MiB, assert_same_file, client_cmd, make_file

SIZE = 48 * MiB
CUT = 12 * MiB
SLACK = 8 * MiB


def test_put_resumes_after_client_killed(server, forwarder, procs, tmp_path):
    src = make_file(tmp_path / "big.bin", SIZE, seed=48)
    fwd = forwarder(server)
    # Let exactly CUT bytes through upstream, then hold: the put is
    # interrupted at a known point however fast the programs are.
    fwd.hold_up_after(CUT)
    log = open(tmp_path / "put1.log", "wb")
    p = procs.popen(client_cmd("put", src, "r/big.bin", server=fwd, tls=server.tls),
                    stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while fwd.up < CUT and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.01)
    first_sent = fwd.up
    assert p.poll() is None, (f"the first put ended (exit {p.returncode}) after {first_sent} bytes "
                              f"before it could be interrupted:\n{(tmp_path / 'put1.log').read_text()}")
    assert first_sent >= CUT, f"only {first_sent} bytes flowed in 60 s"
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    log.close()
    fwd.drop_connections()
    fwd.reset()  # also releases the hold
    time.sleep(0.5)  # let the server see the connection drop and store what it got

    assert "r/big.bin" not in server.ls(), "an interrupted put must not be visible"

    server.cli("put", src, "r/big.bin", server=fwd, timeout=180)
    second_sent = fwd.up
    limit = SIZE - first_sent + SLACK
    assert second_sent < limit, (f"the resumed put sent {second_sent} bytes upstream; the first had sent "
                                 f"{first_sent}, so it should send less than {limit}")
    out = tmp_path / "big.out"
    server.get("r/big.bin", out, timeout=120)
    assert_same_file(out, src)
    assert server.alive()
