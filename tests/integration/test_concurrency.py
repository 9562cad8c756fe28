"""Many clients at once against one server."""

import subprocess
import threading

from conftest import (KiB, assert_same_file, client_cmd, describe, make_file, sha256_file)

CLIENTS = 64


def run_tracked(procs, cmd, timeout):
    """Popen registered for teardown; returns a CompletedProcess-like result."""
    p = procs.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        err += f"\n(timed out after {timeout}s)"
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def failures_of(results):
    return [r if isinstance(r, Exception) else describe(r)
            for r in results if isinstance(r, Exception) or r.returncode != 0]


def run_clients(n, work):
    """Run work(i) in n threads at once; returns the list of results."""
    results = [None] * n
    start = threading.Barrier(n)

    def body(i):
        start.wait()
        try:
            results[i] = work(i)
        except Exception as e:  # reported by the caller
            results[i] = e

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_64_clients_put_then_get(server, procs, tmp_path):
    srcs = [make_file(tmp_path / "in" / f"f{i}.bin", 1000 + i * 4099 + (i % 5) * 30 * KiB, seed=i)
            for i in range(CLIENTS)]
    outdir = tmp_path / "out"
    outdir.mkdir()

    def work(i):
        put = run_tracked(procs, client_cmd("put", srcs[i], f"c/{i}.bin", server=server, tls=server.tls), 120)
        if put.returncode != 0:
            return ("put", put)
        get = run_tracked(procs, client_cmd("get", f"c/{i}.bin", outdir / f"f{i}.bin",
                                            server=server, tls=server.tls), 120)
        if get.returncode != 0:
            return ("get", get)
        return None

    results = run_clients(CLIENTS, work)
    failures = [(i, r) for i, r in enumerate(results) if r is not None]
    msgs = [f"client {i}: {r if isinstance(r, Exception) else r[0] + ' failed' + describe(r[1])}"
            for i, r in failures[:5]]
    assert not failures, f"{len(failures)} of {CLIENTS} clients failed:\n" + "\n".join(msgs) + \
        "\n--- server log ---\n" + server.log()
    for i in range(CLIENTS):
        assert_same_file(outdir / f"f{i}.bin", srcs[i])
    assert sorted(server.ls("c")) == sorted(f"c/{i}.bin" for i in range(CLIENTS))
    assert server.status()["servers"][0]["files"] == CLIENTS
    assert server.alive()


def test_concurrent_puts_to_one_path_leave_one_whole_version(server, procs, tmp_path):
    n = 12
    srcs = [make_file(tmp_path / f"v{i}.bin", 200 * KiB + i, seed=500 + i) for i in range(n)]
    digests = {sha256_file(s) for s in srcs}

    def work(i):
        return run_tracked(procs, client_cmd("put", srcs[i], "shared.bin", server=server, tls=server.tls), 120)

    results = run_clients(n, work)
    failed = failures_of(results)
    assert not failed, "concurrent puts to one path failed:\n" + "\n".join(map(str, failed[:3]))
    out = tmp_path / "shared.out"
    server.get("shared.bin", out)
    assert sha256_file(out) in digests, "the stored file is none of the versions put (mixed content?)"
    assert server.ls() == ["shared.bin"]
    assert int(server.stat("shared.bin")["version"]) >= 1


def test_reads_during_writes(server, procs, tmp_path):
    """Readers of a stable file are not disturbed by writers of others."""
    stable = make_file(tmp_path / "stable.bin", 600 * KiB, seed=77)
    server.put(stable, "stable.bin")
    srcs = [make_file(tmp_path / f"w{i}.bin", 300 * KiB, seed=600 + i) for i in range(8)]
    outdir = tmp_path / "out"
    outdir.mkdir()

    def work(i):
        if i % 2 == 0:
            return run_tracked(procs, client_cmd("put", srcs[i // 2], f"w/{i}", server=server,
                                                 tls=server.tls), 120)
        return run_tracked(procs, client_cmd("get", "stable.bin", outdir / f"r{i}", server=server,
                                             tls=server.tls), 120)

    results = run_clients(16, work)
    failed = failures_of(results)
    assert not failed, "clients failed:\n" + "\n".join(map(str, failed[:3]))
    for i in range(1, 16, 2):
        assert_same_file(outdir / f"r{i}", stable)
