"""zoo.cfg parsing and the `fastzk serve` process lifecycle."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import four_letter_word, free_port
from wire import fresh_session_ping

from fastzk.config import DEFAULT_4LW, ConfigError, load


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
    cfg = load(write_cfg(tmp_path, "dataDir=/tmp/x\ninitLimit=5\nserver.1=a:1:2\nbogus=1\n"))
    assert any(w.startswith("initLimit:") and "not used" in w for w in cfg.warnings)
    assert any(w.startswith("server.1:") for w in cfg.warnings)
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
