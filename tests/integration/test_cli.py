"""The command-line contract: certificates, global options, environment,
exit statuses."""

import stat
import subprocess

import pytest

from conftest import BIN, assert_fails, assert_same_file, describe, make_file, run_cli


def run(*args, timeout=60, env=None):
    return subprocess.run([BIN] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def test_init_creates_ca_and_client_with_private_keys_0600(tmp_path):
    d = tmp_path / "tls"
    cp = run("init", d)
    assert cp.returncode == 0, describe(cp)
    for name in ("ca.crt", "ca.key", "client.crt", "client.key"):
        assert (d / name).is_file(), f"init did not create {name}"
    for key in ("ca.key", "client.key"):
        mode = stat.S_IMODE((d / key).stat().st_mode)
        assert mode == 0o600, f"{key} has mode {oct(mode)}, expected 0o600"


def test_init_refuses_to_overwrite(tmp_path):
    d = tmp_path / "tls"
    assert run("init", d).returncode == 0
    before = (d / "ca.key").read_bytes()
    cp = run("init", d)
    assert cp.returncode != 0, "a second init over an existing CA succeeded" + describe(cp)
    assert cp.stderr.strip(), describe(cp)
    assert (d / "ca.key").read_bytes() == before, "init overwrote the CA key"


@pytest.mark.parametrize("role", ["server", "tracker", "client"])
def test_cert_issue_writes_name_crt_and_key(ca, tmp_path, role):
    out = tmp_path / "out"
    out.mkdir()
    cp = run("cert", "issue", "--tls", ca, "--role", role, "--name", f"n-{role}", "--out", out)
    assert cp.returncode == 0, describe(cp)
    assert (out / f"n-{role}.crt").is_file() and (out / f"n-{role}.key").is_file(), describe(cp)
    assert stat.S_IMODE((out / f"n-{role}.key").stat().st_mode) == 0o600


def test_cert_issue_bad_role_is_an_error(ca, tmp_path):
    cp = run("cert", "issue", "--tls", ca, "--role", "emperor", "--name", "x", "--out", tmp_path)
    assert cp.returncode in (1, 2), describe(cp)
    assert cp.stderr.strip(), describe(cp)


def test_cert_issue_without_ca_key_fails(ca, tmp_path):
    d = tmp_path / "nokey"
    d.mkdir()
    (d / "ca.crt").write_bytes((ca / "ca.crt").read_bytes())
    cp = run("cert", "issue", "--tls", d, "--role", "client", "--name", "x", "--out", tmp_path / "o")
    assert_fails(cp, code=None)


def test_environment_variables_stand_in_for_flags(server, ca, tmp_path):
    src = make_file(tmp_path / "f.bin", 3000, seed=1)
    env = {"SYNCSTORE_SERVER": server.addr, "SYNCSTORE_TLS": str(ca)}
    run_cli("put", src, "env.bin", env=env)
    cp = run_cli("ls", env=env)
    assert "env.bin" in cp.stdout, describe(cp)
    run_cli("get", "env.bin", tmp_path / "o", env=env)
    assert_same_file(tmp_path / "o", src)


def test_flag_wins_over_environment(server, ca, tmp_path):
    from conftest import free_port
    env = {"SYNCSTORE_SERVER": f"127.0.0.1:{free_port()}", "SYNCSTORE_TLS": str(tmp_path / "nowhere")}
    cp = run_cli("ls", server=server, tls=ca, env=env, check=False)
    assert cp.returncode == 0, "--server/--tls should win over the environment" + describe(cp)


def test_global_options_in_any_order(server, ca):
    cp = subprocess.run([BIN, "--quiet", "--tls", str(ca), "--server", server.addr, "ls"],
                        capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, describe(cp)


@pytest.mark.parametrize("args", [
    ["frobnicate"],
    ["put"],
    ["put", "only-one-arg"],
    ["get", "x"],
    ["mv", "a"],
    ["put", "a", "b", "c"],
    ["--no-such-option", "ls"],
    [],
], ids=lambda a: " ".join(a) or "(nothing)")
def test_usage_errors_exit_2(server, ca, args):
    cp = run("--server", server.addr, "--tls", ca, *args)
    assert cp.returncode == 2, "expected exit 2 (usage error)" + describe(cp)
    assert cp.stderr.strip(), "a usage error should say something on stderr" + describe(cp)


@pytest.mark.parametrize("cmd", [[], ["put"], ["get"], ["ls"], ["server"], ["status"], ["init"]],
                         ids=lambda c: " ".join(c) or "top")
def test_help(cmd):
    cp = run(*cmd, "--help")
    assert cp.returncode == 0, describe(cp)
    assert (cp.stdout + cp.stderr).strip(), "--help printed nothing"


def test_unreachable_server_is_a_clean_failure(ca, tmp_path):
    from conftest import free_port
    cp = run_cli("ls", server=f"127.0.0.1:{free_port()}", tls=ca, check=False, timeout=60)
    assert_fails(cp, 1)
    assert len(cp.stderr.strip().splitlines()) == 1, "expected one line on stderr" + describe(cp)


def test_missing_tls_dir_is_a_clean_failure(server, tmp_path):
    cp = run_cli("ls", server=server, tls=tmp_path / "nowhere", check=False)
    assert_fails(cp, 1)


def test_put_prints_a_summary(server, tmp_path):
    src = make_file(tmp_path / "f.bin", 100000, seed=2)
    cp = server.put(src, "f.bin")
    assert cp.stdout.strip(), "put printed no summary on stdout" + describe(cp)


def test_ls_json_lists_every_file_with_escaped_names(server, tmp_path):
    import json
    src = make_file(tmp_path / "f.bin", 1000, seed=5)
    names = ["a/b.bin", 'we"ird\\name', "tab\there"]
    for n in names:
        server.put(src, n)
    cp = server.cli("ls", "--json")
    listed = json.loads(cp.stdout)
    assert sorted(e["path"] for e in listed) == sorted(names), cp.stdout
    assert all(e["size"] == 1000 and len(e["content_id"]) == 64 for e in listed), cp.stdout
    empty = server.cli("ls", "--json", "nothing/here")
    assert json.loads(empty.stdout) == [], empty.stdout
