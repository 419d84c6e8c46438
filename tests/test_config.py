"""zoo.cfg parsing and the `fastzk serve` process lifecycle."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wire import fresh_session_ping

from fastzk.config import DEFAULT_4LW, ConfigError, load
from fastzk.nemesis.servers import four_letter_word, free_port


def write_cfg(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "zoo.cfg"
    path.write_text(text)
    return path


def test_zoo_cfg_keys_are_read_and_session_bounds_default_to_ticks(tmp_path: Path) -> None:
    cfg = load(
        write_cfg(
            tmp_path,
            "# comment\ntickTime=500\ndataDir=data\nclientPort = 2300\n"
            "maxClientCnxns: 7\njute.maxbuffer=4096\n4lw.commands.whitelist=ruok, srvr\n",
        )
    )
    assert cfg.tick_time == 500
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.client_port == 2300
    assert cfg.max_client_cnxns == 7
    assert cfg.jute_max_buffer == 4096
    assert cfg.four_letter_words == {"ruok", "srvr"}
    assert (cfg.min_session_timeout, cfg.max_session_timeout) == (1000, 10000)
    assert cfg.warnings == ()


def test_unknown_and_unsupported_keys_are_warned_not_dropped(tmp_path: Path) -> None:
    cfg = load(write_cfg(tmp_path, "dataDir=/tmp/x\nforceSync=no\nserver.1=a:1:2\nbogus=1\n"))
    assert any(w.startswith("forceSync:") and "not used" in w for w in cfg.warnings)
    assert any("one server.N line" in w and "standalone" in w for w in cfg.warnings)
    assert not cfg.ensemble
    assert any(w.startswith("bogus:") and "unknown" in w for w in cfg.warnings)


@pytest.mark.parametrize(
    "text",
    [
        "tickTime=2000\n",  # no dataDir
        "dataDir=/tmp/x\ntickTime=fast\n",
        "dataDir=/tmp/x\nminSessionTimeout=9000\nmaxSessionTimeout=4000\n",
        "dataDir=/tmp/x\n4lw.commands.whitelist=ruok,nope\n",
        "dataDir=/tmp/x\nfastzk.clientOutputLimitBytes=0\n",
        "dataDir=/tmp/x\nglobalOutstandingLimit=-5\n",
        "dataDir=/tmp/x\nlargeRequestThreshold=-2\n",
        "dataDir=/tmp/x\nfastzk.clientOutputLimitBytes=2048\n"
        "fastzk.clientOutputHardLimitBytes=1024\n",
    ],
)
def test_invalid_config_is_a_clear_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load(write_cfg(tmp_path, text))


def test_resource_limit_keys_are_read_with_zookeeper_names_where_it_has_them(
    tmp_path: Path,
) -> None:
    cfg = load(write_cfg(
        tmp_path,
        "dataDir=d\nglobalOutstandingLimit=50\nzookeeper.largeRequestMaxBytes=1000000\n"
        "largeRequestThreshold=4096\nfastzk.clientOutstandingLimit=20\n"
        "fastzk.clientOutstandingLimitBytes=300000\nfastzk.clientOutputLimitBytes=65536\n"
        "fastzk.clientOutputHardLimitBytes=131072\n",
    ))
    assert (cfg.global_outstanding_limit, cfg.large_request_max_bytes,
            cfg.large_request_threshold, cfg.max_outstanding,
            cfg.client_outstanding_limit_bytes, cfg.client_output_limit_bytes,
            cfg.client_output_hard_limit_bytes) == (50, 1000000, 4096, 20, 300000, 65536, 131072)
    assert cfg.warnings == ()


def test_embedded_default_matches_the_readme() -> None:
    cfg = load(None)
    assert (cfg.client_port_address, cfg.client_port, cfg.tick_time) == ("127.0.0.1", 2181, 2000)
    assert cfg.four_letter_words == DEFAULT_4LW


def test_serve_reports_a_bad_config_and_exits_nonzero(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path, "tickTime=2000\n")
    result = subprocess.run(
        [sys.executable, "-m", "fastzk", "serve", str(cfg)],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "dataDir is not set" in result.stderr


def test_serve_runs_in_the_foreground_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_cfg(
        tmp_path, f"dataDir={tmp_path / 'data'}\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastzk", "serve", str(cfg)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        for _ in range(100):
            try:
                if four_letter_word("127.0.0.1", port, "ruok", timeout=0.5) == b"imok":
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        assert fresh_session_ping("127.0.0.1", port).err == 0
        assert (tmp_path / "data").is_dir()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, output
        assert "shutting down" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


ENSEMBLE = (
    "tickTime=200\ninitLimit=7\nsyncLimit=3\ndataDir=data\n"
    "server.1=127.0.0.1:2888:3888\n"
    "server.2=127.0.0.1:2889:3889:participant;127.0.0.1:2182\n"
    "server.3=127.0.0.1:2890:3890\n"
    "server.4=127.0.0.1:2891:3891:observer;2184\n"
)


def _ensemble(tmp_path: Path, extra: str = "", myid: str | None = "2") -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    if myid is not None:
        (tmp_path / "data" / "myid").write_text(myid + "\n")
    return write_cfg(tmp_path, ENSEMBLE + extra)


def test_a_zookeeper_ensemble_config_is_read_as_is(tmp_path: Path) -> None:
    cfg = load(_ensemble(tmp_path))
    assert cfg.ensemble and cfg.server_id == 2
    assert cfg.voters == (1, 2, 3) and cfg.observers == (4,)
    assert (cfg.init_limit, cfg.sync_limit) == (7, 3)
    assert (cfg.client_port_address, cfg.client_port) == ("127.0.0.1", 2182)  # from server.2
    assert cfg.member(4).spec() == "127.0.0.1:2891:3891:observer;0.0.0.0:2184"
    assert not cfg.warnings


@pytest.mark.parametrize(
    ("extra", "myid", "message"),
    [
        ("", None, "cannot read this server's id"),
        ("", "two", "not a number"),
        ("", "9", "has no server.9 line"),
        ("server.5=127.0.0.1:2888:3999\n", "2", "also used by server.1"),
        ("server.5=127.0.0.1:2999:3999:witness\n", "2", "participant or observer"),
        ("server.5=127.0.0.1\n", "2", "expected host:quorumPort:electionPort"),
        ("server.x=127.0.0.1:1:2\n", "2", "must be a number"),
        ("server.300=127.0.0.1:2999:3999\n", "2", "from 1 to 255"),
        ("electionAlg=1\n", "2", "only 3"),
        ("peerType=observer\n", "2", "add :observer"),
    ],
)
def test_ensemble_mistakes_are_one_clear_line(tmp_path: Path, extra: str, myid: str | None,
                                              message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(_ensemble(tmp_path, extra, myid))


def test_an_even_number_of_voters_is_warned(tmp_path: Path) -> None:
    cfg = load(_ensemble(tmp_path, "server.5=127.0.0.1:2999:3999\n"))
    assert any("even number" in w for w in cfg.warnings)


def test_serve_on_a_busy_port_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = write_cfg(tmp_path, f"dataDir={tmp_path / 'data'}\nclientPort={port}\n"
                                  "admin.enableServer=false\n")
        result = subprocess.run([sys.executable, "-m", "fastzk", "serve", str(cfg)],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "cannot start" in result.stderr and "Traceback" not in result.stderr


def test_the_example_ensemble_configs_load(tmp_path: Path) -> None:
    """examples/ensemble/ (what `make ensemble` runs): three members of one ensemble."""
    import shutil

    examples = Path(__file__).resolve().parent.parent / "examples" / "ensemble"
    copy = tmp_path / "examples" / "ensemble"
    shutil.copytree(examples, copy)
    ids = []
    for number in (1, 2, 3):
        data = tmp_path / "fastzk-ensemble" / str(number)
        data.mkdir(parents=True)
        (data / "myid").write_text(f"{number}\n")
        cfg = load(copy / f"zoo{number}.cfg")
        assert cfg.warnings == () and cfg.data_dir.resolve() == data.resolve()
        ids.append((cfg.server_id, cfg.client_port, cfg.admin_port))
    assert ids == [(1, 2181, 8080), (2, 2182, 8081), (3, 2183, 8082)]


def test_the_quorum_secret_file_is_read_and_checked(tmp_path: Path) -> None:
    secret = tmp_path / "quorum.secret"
    secret.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    secret.chmod(0o600)
    cfg = write_cfg(tmp_path, "dataDir=data\nfastzk.quorumSecretFile=quorum.secret\n")
    loaded = load(cfg)
    secret_bytes = b"0123456789abcdef0123456789abcdef"  # relative to zoo.cfg
    assert loaded.quorum_auth is not None
    assert (loaded.quorum_auth.key, loaded.quorum_auth.keys) == (secret_bytes, (("", secret_bytes),))
    assert not [w for w in loaded.warnings if "quorumSecretFile" in w]
    secret.chmod(0o644)
    assert any("readable by other users" in w for w in load(cfg).warnings)
    secret.write_bytes(b"short\n")
    with pytest.raises(ConfigError, match="holds 5 bytes; use at least 16"):
        load(cfg)
    secret.unlink()
    with pytest.raises(ConfigError, match="quorumSecretFile: cannot read"):
        load(cfg)


QUORUM_JAAS = """
QuorumServer { org.apache.zookeeper.server.auth.DigestLoginModule required
    user_zkpeer="peerpass" user_other="otherpass"; };
QuorumLearner { org.apache.zookeeper.server.auth.DigestLoginModule required
    username="zkpeer" password="peerpass"; };
"""


def test_quorum_auth_keys_take_the_jaas_quorum_sections(tmp_path: Path) -> None:
    """ZooKeeper's quorum.auth.* keys: a member dials as its QuorumLearner user and accepts
    the QuorumServer users; each inconsistency ZooKeeper refuses is a start-up error."""
    (tmp_path / "jaas.conf").write_text(QUORUM_JAAS)
    base = ("dataDir=data\njava.security.auth.login.config=jaas.conf\n"
            "quorum.auth.enableSasl=true\n")
    loaded = load(write_cfg(tmp_path, base + "quorum.auth.serverRequireSasl=true\n"
                                              "quorum.auth.learnerRequireSasl=true\n"))
    auth = loaded.quorum_auth
    assert auth is not None and (auth.user, auth.key) == ("zkpeer", b"peerpass")
    assert auth.keys == (("other", b"otherpass"), ("zkpeer", b"peerpass"))
    assert auth.server_required and auth.learner_required
    assert [w.split(": ")[-1] for w in loaded.warnings] == ["no SASL for clients"]
    lax = load(write_cfg(tmp_path, base)).quorum_auth
    assert lax is not None and not lax.server_required and not lax.learner_required
    assert any("serverRequireSasl=false" in w for w in load(write_cfg(tmp_path, base)).warnings)
    assert load(write_cfg(tmp_path, "dataDir=data\n")).quorum_auth is None
    bad = {
        "quorum.auth.serverRequireSasl=true\n": "needs quorum.auth.enableSasl=true",
        "quorum.auth.enableSasl=true\n": "needs the JAAS file",
        base + "quorum.auth.learner.saslLoginContext=Missing\n": "no Missing section",
        base + "quorum.auth.server.saslLoginContext=QuorumLearner\n": "has no user_NAME",
    }
    for text, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            load(write_cfg(tmp_path, "dataDir=data\n" + text))
    (tmp_path / "quorum.secret").write_bytes(b"0123456789abcdef0123456789abcdef")
    (tmp_path / "quorum.secret").chmod(0o600)
    with pytest.raises(ConfigError, match="configure one of them"):
        load(write_cfg(tmp_path, base + "fastzk.quorumSecretFile=quorum.secret\n"))
    (tmp_path / "jaas.conf").write_text(QUORUM_JAAS.replace(
        "org.apache.zookeeper.server.auth.DigestLoginModule required\n    username",
        "com.sun.security.auth.module.Krb5LoginModule required\n    username"))
    with pytest.raises(ConfigError, match="Kerberos between members is not supported"):
        load(write_cfg(tmp_path, base))
