"""Operator interfaces: four-letter words compared with ZooKeeper, and fastzk's HTTP admin.

The four-letter words are compared on a module-scoped (ZooKeeper, fastzk) pair that
has seen exactly the same client activity, so besides the *fields* (line prefixes,
keys, line shapes) every value that does not depend on the implementation (node,
watch, ephemeral, session and connection counts, approximate data size, mode) is
compared too.  Values such as latencies, packet counts, versions and sizes on disk
may differ; only their format is checked.

The HTTP endpoint (``admin.serverPort``, a free port per fastzk test server, see
fastzk/nemesis/servers.py) is fastzk's own; in reference-only mode those tests are skipped.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.security import ACL, Id, Permissions, make_digest_acl_credential
from prometheus_client.parser import text_string_to_metric_families

from fastzk.nemesis.servers import ServerProcess, start_server

Pair = tuple[ServerProcess, ServerProcess]


@pytest.fixture(scope="module")
def pair(launch_pair: Callable[..., Pair]) -> Iterator[Pair]:
    servers = launch_pair()
    try:
        yield servers
    finally:
        for proc in servers:
            proc.stop()


@pytest.fixture(scope="module")
def activity(pair: Pair) -> Iterator[list[KazooClient]]:
    """The same session, nodes and watches on both servers, kept for the whole module."""
    clients = []
    try:
        for proc in pair:
            c = KazooClient(hosts=proc.connect_string, timeout=10.0)
            c.start(timeout=15)
            clients.append(c)
            c.create("/a", b"x")
            c.create("/a/b", b"yy")
            c.create("/e", b"", ephemeral=True)
            c.get("/a", watch=lambda e: None)
            c.get_children("/", watch=lambda e: None)
            c.exists("/nope", watch=lambda e: None)
            c.exists("/a/b", watch=lambda e: None)
        yield clients
    finally:
        for c in clients:
            c.stop()
            c.close()


def both(pair: Pair, word: str) -> tuple[str, str]:
    """(ZooKeeper's, fastzk's) answer to *word*."""
    zk, fz = pair
    return zk.four_letter_word(word).decode(), fz.four_letter_word(word).decode()


def keyed(text: str, sep: str) -> dict[str, str]:
    """``key<sep>value`` lines as a dict (other lines ignored)."""
    out = {}
    for line in text.splitlines():
        if sep in line:
            key, value = line.split(sep, 1)
            out[key] = value
    return out


SRVR_VALUES = {
    "Zookeeper version": r"3\.\d+\.\d+\S*, built on .+",
    "Latency min/avg/max": r"\d+/\d+\.\d+/\d+",
    "Received": r"\d+",
    "Sent": r"\d+",
    "Connections": r"\d+",
    "Outstanding": r"\d+",
    "Zxid": r"0x[0-9a-f]+",
    "Mode": r"standalone",
    "Node count": r"\d+",
}
BRIEF = r" /127\.0\.0\.1:\d+\[\d\]\(queued=\d+,recved=\d+,sent=\d+\)"
FULL = (
    r" /127\.0\.0\.1:\d+\[\d\]\(queued=\d+,recved=\d+,sent=\d+,sid=0x[0-9a-f]+,lop=[A-Z]+,"
    r"est=\d+,to=\d+,lcxid=0x[0-9a-f]+,lzxid=0x[0-9a-f]+,lresp=\d+,llat=\d+,minlat=\d+,"
    r"avglat=\d+,maxlat=\d+\)"
)


def _srvr_fields(text: str) -> list[tuple[str, str]]:
    return [tuple(line.split(": ", 1)) for line in text.splitlines() if ": " in line]


@pytest.mark.usefixtures("activity")
def test_ruok_isro_gtmk_are_identical(pair: Pair) -> None:
    for word in ("ruok", "isro", "gtmk"):
        zk, fz = both(pair, word)
        assert zk == fz, word
    assert both(pair, "ruok")[0] == "imok"


@pytest.mark.usefixtures("activity")
def test_srvr_fields(pair: Pair) -> None:
    """Same lines in the same order; implementation-independent values equal."""
    zk, fz = (_srvr_fields(t) for t in both(pair, "srvr"))
    assert [k for k, _ in zk] == [k for k, _ in fz] == list(SRVR_VALUES)
    for text in (zk, fz):
        for key, value in text:
            assert re.fullmatch(SRVR_VALUES[key], value), (key, value)
    same = ("Connections", "Outstanding", "Mode", "Node count")
    assert {k: v for k, v in zk if k in same} == {k: v for k, v in fz if k in same}


@pytest.mark.usefixtures("activity")
def test_stat_fields(pair: Pair) -> None:
    """srvr plus a Clients: section with one brief line per connection (the probe too)."""
    for text in both(pair, "stat"):
        lines = text.splitlines()
        assert lines[1] == "Clients:"
        end = lines.index("", 2)
        clients = lines[2:end]
        assert len(clients) == 2, clients  # the kazoo session and this probe
        assert all(re.fullmatch(BRIEF, line) for line in clients), clients
        assert [k for k, _ in _srvr_fields("\n".join(lines[end:]))] == list(SRVR_VALUES)[1:]


@pytest.mark.usefixtures("activity")
def test_cons_fields(pair: Pair) -> None:
    """One line per connection: the full form for a session, the brief one for the probe."""
    for text in both(pair, "cons"):
        lines = [line for line in text.splitlines() if line]
        assert text.endswith("\n\n")
        assert sorted("sid=" in line for line in lines) == [False, True]
        for line in lines:
            assert re.fullmatch(FULL if "sid=" in line else BRIEF, line), line


@pytest.mark.usefixtures("activity")
def test_conf_keys(pair: Pair) -> None:
    zk, fz = (keyed(t, "=") for t in both(pair, "conf"))
    assert list(zk) == list(fz)
    same = ("clientPort", "tickTime", "maxClientCnxns", "minSessionTimeout",
            "maxSessionTimeout", "secureClientPort", "serverId")
    assert {k: zk[k] for k in same if k != "clientPort"} == {
        k: fz[k] for k in same if k != "clientPort"
    }
    assert zk["clientPort"] == str(pair[0].port) and fz["clientPort"] == str(pair[1].port)


@pytest.mark.usefixtures("activity")
def test_envi_keys(pair: Pair) -> None:
    """Environment: key=value lines; every key ZooKeeper has that is not about the JVM
    (java.*, os.memory.* heap figures) is there in fastzk's too."""
    zk_text, fz_text = both(pair, "envi")
    assert zk_text.splitlines()[0] == fz_text.splitlines()[0] == "Environment:"
    zk, fz = keyed(zk_text, "="), keyed(fz_text, "=")
    wanted = {k for k in zk if not k.startswith(("java.", "os.memory."))}
    assert wanted == {"zookeeper.version", "host.name", "os.name", "os.arch", "os.version",
                      "user.name", "user.home", "user.dir"}
    assert wanted <= set(fz), sorted(wanted - set(fz))
    assert zk["os.name"] == fz["os.name"] and zk["user.name"] == fz["user.name"]


@pytest.mark.usefixtures("activity")
def test_dirs_format(pair: Pair) -> None:
    for text in both(pair, "dirs"):
        assert re.fullmatch(r"datadir_size: \d+\nlogdir_size: \d+\n", text), text


def _bytes_in(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def test_dirs_and_conf_measure_the_snapshot_and_log_directories(tmp_path: Path) -> None:
    """As ZooKeeper: `dirs` and `conf` give the bytes in the snapshot directory and in the
    log directory, which differ once dataLogDir is a directory of its own (measured off the
    event loop, once a tick)."""
    log_dir = tmp_path / "txnlog"
    proc = start_server("fastzk", tmp_path / "server", tickTime=100, dataLogDir=log_dir,
                        **{"4lw.commands.whitelist": "dirs,conf"})
    try:
        snap_dir = proc.data_dir / "fastzk"
        expected = {}

        def measured() -> bool:
            expected.update(datadir_size=_bytes_in(snap_dir),
                            logdir_size=_bytes_in(log_dir / "fastzk"))
            text = proc.four_letter_word("dirs").decode()
            return keyed(text, ": ") == {k: str(v) for k, v in expected.items()}

        deadline = time.monotonic() + 10
        while not measured():
            assert time.monotonic() < deadline, (proc.four_letter_word("dirs"), expected)
            time.sleep(0.05)
        assert expected["datadir_size"] > 0 and expected["logdir_size"] > 0
        assert expected["datadir_size"] != expected["logdir_size"]
        conf = keyed(proc.four_letter_word("conf").decode(), "=")
        assert conf["dataLogDir"] == str(log_dir)
        assert int(conf["dataDirSize"]) > 0 and int(conf["dataLogSize"]) > 0
        assert conf["dataDirSize"] != conf["dataLogSize"]
    finally:
        proc.stop()


@pytest.mark.usefixtures("activity")
def test_watch_words_are_identical_up_to_session_ids(pair: Pair) -> None:
    """wchs counts data/exists watches (not child watches); wchc/wchp list them by session
    and by path.  Same watches on both: same text once session ids are masked."""
    def grouped(text: str) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        key = ""
        for line in text.splitlines():
            if line.startswith("\t"):
                groups[key].append(line[1:])
            elif line:
                key = line
                groups[key] = []
        return {k: sorted(v) for k, v in groups.items()}

    zk, fz = (re.sub(r"0x[0-9a-f]+", "0xSID", t) for t in both(pair, "wchs"))
    assert zk == fz
    for word in ("wchc", "wchp"):
        zk, fz = (re.sub(r"0x[0-9a-f]+", "0xSID", t) for t in both(pair, word))
        assert zk.endswith("\n\n") and fz.endswith("\n\n"), word
        assert grouped(zk) == grouped(fz), word
    assert both(pair, "wchs")[1] == "1 connections watching 3 paths\nTotal watches:3\n"


MNTR_CORE = {
    "zk_version", "zk_server_state", "zk_avg_latency", "zk_max_latency", "zk_min_latency",
    "zk_packets_received", "zk_packets_sent", "zk_num_alive_connections",
    "zk_outstanding_requests", "zk_znode_count", "zk_watch_count", "zk_ephemerals_count",
    "zk_approximate_data_size", "zk_open_file_descriptor_count",
    "zk_max_file_descriptor_count", "zk_global_sessions", "zk_local_sessions", "zk_uptime",
}


@pytest.mark.usefixtures("activity")
def test_mntr_keys_and_values(pair: Pair) -> None:
    """zk_<key>\\t<value>: the core keys on both; for every key both have, the same value
    type (integer vs decimal); implementation-independent values equal."""
    zk, fz = (keyed(t, "\t") for t in both(pair, "mntr"))
    assert MNTR_CORE <= set(zk) and MNTR_CORE <= set(fz), sorted(MNTR_CORE - set(fz))
    assert list(zk)[:2] == list(fz)[:2] == ["zk_version", "zk_server_state"]

    def kind(value: str) -> str:
        return "int" if re.fullmatch(r"-?\d+", value) else (
            "float" if re.fullmatch(r"-?\d+\.\d+", value) else "text")

    common = set(zk) & set(fz)
    assert {k: kind(zk[k]) for k in common} == {k: kind(fz[k]) for k in common}
    same = ("zk_server_state", "zk_znode_count", "zk_watch_count", "zk_ephemerals_count",
            "zk_approximate_data_size", "zk_global_sessions", "zk_local_sessions",
            "zk_outstanding_requests", "zk_num_alive_connections")
    assert {k: zk[k] for k in same} == {k: fz[k] for k in same}


# Documented fastzk additions to mntr (README): everything else uses ZooKeeper's key names.
MNTR_ADDITIONS = {"zk_persistent_watch_count", "zk_last_processed_zxid"}


@pytest.mark.usefixtures("activity")
def test_mntr_keys_are_zookeepers_plus_documented_additions(pair: Pair) -> None:
    """Monitoring tools key on ZooKeeper's names: fastzk's extra keys are only the two
    documented additions."""
    zk, fz = (keyed(t, "\t") for t in both(pair, "mntr"))
    expected = MNTR_ADDITIONS if pair[1].kind == "fastzk" else set()
    assert set(fz) - set(zk) == expected


def _shape(line: str) -> str:
    """A dump line with ids, numbers, dates and paths generalised."""
    line = re.sub(r"\w{3} \w{3} \d\d \d\d:\d\d:\d\d \w+ \d{4}", "DATE", line)
    line = re.sub(r"0x[0-9a-f]+", "SID", line)
    line = re.sub(r"^\t/\S*$", "\tPATH", line)
    return re.sub(r"\d+", "N", line)


@pytest.mark.usefixtures("activity")
def test_dump_layout(pair: Pair) -> None:
    """Session expiry buckets, ephemerals by session, connections: the same section
    headers in the same order and the same set of line shapes in each section (how many
    connections ZooKeeper lists varies: closed four-letter-word probes linger briefly)."""
    headers = ("SessionTracker dump:", "ephemeral nodes dump:", "Connections dump:")

    def sections(text: str) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        current = ""
        for line in text.splitlines():
            if line in headers:
                current = line
                out[current] = set()
            elif line:
                out[current].add(_shape(line))
        return out

    zk, fz = (sections(t) for t in both(pair, "dump"))
    assert list(zk) == list(fz) == list(headers)
    assert zk == fz


@pytest.mark.usefixtures("activity")
def test_crst_and_srst_reset_counters(pair: Pair) -> None:
    """crst zeroes per-connection counters (cons recved/sent), srst the server's (srvr
    Received/Sent and latencies); both answer their fixed line."""
    for proc in pair:
        assert proc.four_letter_word("crst").decode() == "Connection stats reset.\n"
        session_line = next(
            line for line in proc.four_letter_word("cons").decode().splitlines() if "sid=" in line
        )
        # (a kazoo ping may slip in between)
        counts = re.search(r"recved=(\d+),sent=(\d+),", session_line)
        assert counts and max(map(int, counts.groups())) <= 1, (proc.kind, session_line)
        before = dict(_srvr_fields(proc.four_letter_word("srvr").decode()))
        assert int(before["Received"]) > 5
        assert proc.four_letter_word("srst").decode() == "Server stats reset.\n"
        after = dict(_srvr_fields(proc.four_letter_word("srvr").decode()))
        assert int(after["Received"]) <= 2 and int(after["Sent"]) <= 2, (proc.kind, after)
        assert after["Latency min/avg/max"].split("/")[2] == "0", (proc.kind, after)


# --- fastzk's HTTP admin endpoint -----------------------------------------------------------
@pytest.fixture(scope="module")
def http(pair: Pair) -> Callable[[str], tuple[int, str, bytes]]:
    fz = pair[1]
    if fz.kind != "fastzk":
        pytest.skip("fastzk's HTTP admin endpoint (the fastzk side is ZooKeeper here)")
    port = fz.admin_port
    assert port is not None

    def get(path: str) -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.headers.get("Content-Type", ""), r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type", ""), e.read()

    return get


@pytest.mark.usefixtures("activity")
def test_http_commands_json_shape(http: Callable[[str], tuple[int, str, bytes]]) -> None:
    """/commands lists the commands; /commands/<name or alias> answers a JSON object with
    "command" (the primary name) and "error": null; an unknown one answers 200 with an
    error, as ZooKeeper's AdminServer does."""
    status, ctype, body = http("/commands")
    assert status == 200 and ctype.startswith("application/json")
    names = json.loads(body)["commands"]
    assert {"server_stats", "stats", "connections", "configuration", "monitor", "watches",
            "watches_by_path", "watch_summary", "dirs", "dump", "environment",
            "is_read_only", "ruok", "stat_reset", "connection_stat_reset"} <= set(names)
    aliases = {"srvr": "server_stats", "stat": "stats", "cons": "connections",
               "conf": "configuration", "mntr": "monitor", "wchs": "watch_summary",
               "wchc": "watches", "wchp": "watches_by_path", "envi": "environment",
               "isro": "is_read_only", "crst": "connection_stat_reset", "srst": "stat_reset"}
    for name in [*names, *aliases]:
        status, ctype, body = http(f"/commands/{name}")
        doc = json.loads(body)
        assert status == 200 and ctype.startswith("application/json"), name
        assert doc["command"] == aliases.get(name, name) and doc["error"] is None, (name, doc)
    doc = json.loads(http("/commands/no_such_thing")[2])
    assert doc["command"] == "no_such_thing" and "Unknown command" in doc["error"]
    srvr = json.loads(http("/commands/srvr")[2])
    assert srvr["read_only"] is False and srvr["server_stats"]["server_state"] == "standalone"
    assert json.loads(http("/commands/isro")[2])["read_only"] is False
    watches = json.loads(http("/commands/wchp")[2])["path_to_session_ids"]
    assert sorted(watches) == ["/a", "/a/b", "/nope"]
    assert http("/nothing")[0] == 404


def test_http_ready(http: Callable[[str], tuple[int, str, bytes]]) -> None:
    status, _, body = http("/ready")
    assert status == 200 and json.loads(body)["ready"] is True


def test_each_fastzk_server_has_its_own_admin_port(pair: Pair, fastzk: ServerProcess,
                                                   http: Any) -> None:
    """fastzk/nemesis/servers.py gives every fastzk a free admin.serverPort: the shared server and
    this module's both serve HTTP, on different ports."""
    del http  # only for the skip in reference-only mode
    ports = {pair[1].admin_port, fastzk.admin_port}
    assert None not in ports and len(ports) == 2 and 8080 not in ports
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as r:
            assert r.status == 200


def _metrics(http: Callable[[str], tuple[int, str, bytes]]) -> dict[str, Any]:
    status, ctype, body = http("/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    samples: dict[str, Any] = {"_families": families}
    for family in families.values():
        for s in family.samples:
            key = s.name + "".join(f"[{k}={v}]" for k, v in sorted(s.labels.items())
                                   if k != "le")
            if "le" in s.labels:
                continue
            samples[key] = s.value
    return samples


README_FAMILIES = {
    "fastzk_request_latency_seconds": "histogram",
    "fastzk_outstanding_requests": "gauge",
    "fastzk_connections": "gauge",
    "fastzk_sessions": "gauge",
    "fastzk_znodes": "gauge",
    "fastzk_approximate_data_size_bytes": "gauge",
    "fastzk_ephemerals": "gauge",
    "fastzk_watches": "gauge",
    "fastzk_last_zxid": "gauge",
    "fastzk_packets_received": "counter",
    "fastzk_packets_sent": "counter",
    "fastzk_ready": "gauge",
    "fastzk_write_stage_seconds": "histogram",
}


@pytest.mark.usefixtures("activity")
def test_http_metrics_exist_and_move(
    http: Callable[[str], tuple[int, str, bytes]], pair: Pair
) -> None:
    """Every metric family the README lists is there with its type, and moves with load:
    request latency counts, znodes, sessions, ephemerals, watches by kind, last zxid and
    packet counters."""
    before = _metrics(http)
    families = before["_families"]
    assert {n: families[n].type for n in README_FAMILIES if n in families} == README_FAMILIES
    assert before["fastzk_ready"] == 1
    assert {f"fastzk_watches[kind={k}]" for k in ("data", "child", "persistent", "recursive")} \
        <= set(before)
    c = KazooClient(hosts=pair[1].connect_string, timeout=10.0)
    c.start(timeout=15)
    try:
        # Under /a: a create under / would fire (and use up) the module's child watch.
        c.create("/a/m", b"12345")
        c.create("/a/m/e", b"", ephemeral=True)
        c.get("/a/m", watch=lambda e: None)
        c.get_children("/a/m", watch=lambda e: None)
        c.set("/a/m", b"123")  # fires (and uses up) the new data watch
        after = _metrics(http)
        create = "fastzk_request_latency_seconds_count[op=create]"
        assert after[create] == before.get(create, 0) + 2
        assert after["fastzk_request_latency_seconds_count[op=setData]"] >= 1
        assert after["fastzk_znodes"] == before["fastzk_znodes"] + 2
        assert after["fastzk_sessions"] == before["fastzk_sessions"] + 1
        assert after["fastzk_connections"] == before["fastzk_connections"] + 1
        assert after["fastzk_ephemerals"] == before["fastzk_ephemerals"] + 1
        assert after["fastzk_watches[kind=child]"] == before["fastzk_watches[kind=child]"] + 1
        assert after["fastzk_watches[kind=data]"] == before["fastzk_watches[kind=data]"]
        assert after["fastzk_approximate_data_size_bytes"] > before[
            "fastzk_approximate_data_size_bytes"]
        assert after["fastzk_last_zxid"] >= before["fastzk_last_zxid"] + 4
        assert after["fastzk_packets_received_total"] >= before[
            "fastzk_packets_received_total"] + 5
        assert after["fastzk_packets_sent_total"] > before["fastzk_packets_sent_total"]
        # the session, two creates and a setData went through every stage of the write path
        for stage in ("gather", "wal", "quorum", "apply", "flush"):
            count = f"fastzk_write_stage_seconds_count[stage={stage}]"
            assert after[count] >= before[count] + 4, stage
    finally:
        c.stop()
        c.close()
    gone = _metrics(http)
    assert gone["fastzk_sessions"] == before["fastzk_sessions"]
    assert gone["fastzk_ephemerals"] == before["fastzk_ephemerals"]


def test_http_commands_revealing_sessions_need_every_permission_on_the_root(
        make_server: Callable[..., ServerProcess]) -> None:
    """As ZooKeeper 3.9.4+ guards its authenticated admin commands: an identity with every
    permission on "/" (checked one by one: READ alone is not enough), here a digest identity
    sent as `Authorization: digest user:password`."""
    server = make_server("fastzk")
    if server.kind != "fastzk":
        pytest.skip("fastzk's HTTP admin endpoint")
    port = server.admin_port

    def get(path: str, authorization: str | None = None) -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
        if authorization is not None:
            request.add_header("Authorization", authorization)
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    assert get("/commands/dump") == 200  # "/" is world:anyone: open, as before
    zk = KazooClient(hosts=server.connect_string, timeout=10.0)
    zk.start(timeout=15)
    try:
        admin_id = make_digest_acl_credential("admin", "s3cret")
        reader_id = make_digest_acl_credential("reader", "r")
        zk.set_acls("/", [ACL(Permissions.ALL, Id("digest", admin_id)),
                          ACL(Permissions.READ, Id("digest", reader_id)),
                          ACL(Permissions.READ, Id("world", "anyone"))])
        for name in ("dump", "cons", "connections", "wchc", "wchp", "crst", "srst"):
            assert get(f"/commands/{name}") == 403, name
        assert get("/commands/dump", "digest admin:wrong") == 403
        assert get("/commands/dump", "digest reader:r") == 403  # READ is not every permission
        assert get("/commands/dump", "basic YWRtaW46czNjcmV0") == 403  # an unknown scheme
        assert get("/commands/dump", "digest admin:s3cret") == 200
        assert get("/commands/wchp", "Digest admin:s3cret") == 200
        assert get("/commands/mntr") == 200 and get("/commands/srvr") == 200  # not guarded
    finally:
        zk.add_auth("digest", "admin:s3cret")
        zk.set_acls("/", [ACL(Permissions.ALL, Id("world", "anyone"))])
        zk.stop()
        zk.close()
