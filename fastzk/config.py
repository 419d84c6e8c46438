"""The one place that reads configuration: a ZooKeeper-style zoo.cfg, or the embedded default.

Every limit the server enforces is read and validated here, once. Keys ZooKeeper knows but
fastzk does not use yet, and keys nobody knows, are reported as warnings rather than silently
dropped, so an operator can point fastzk at the zoo.cfg they already have and see what differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_4LW = frozenset({"srvr", "stat", "ruok", "isro", "mntr", "conf", "wchs", "dirs"})
ALL_4LW = frozenset(
    {"ruok", "isro", "srvr", "stat", "conf", "cons", "crst", "srst", "envi", "dirs", "wchs",
     "wchc", "wchp", "dump", "mntr", "gtmk", "stmk", "hash"}
)

# Keys of Apache ZooKeeper's zoo.cfg that fastzk accepts but does not act on yet.
KNOWN_UNUSED = frozenset(
    {
        "initLimit", "syncLimit",
        "autopurge.purgeInterval", "standaloneEnabled", "reconfigEnabled",
        "secureClientPort", "secureClientPortAddress",
        "metricsProvider.className", "metricsProvider.httpPort", "electionAlg",
        "peerType", "quorumListenOnAllIPs", "syncEnabled", "clientPortListenBacklog",
        "forceSync", "leaderServes", "cnxTimeout", "audit.enable", "skipACL",
        "localSessionsEnabled", "localSessionsUpgradingEnabled", "readonlymode.enabled",
        "dynamicConfigFile", "serverCnxnFactory", "maxResponseCacheSize",
    }
)


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("fastzk-data")
    tick_time: int = 2000
    client_port: int = 2181
    client_port_address: str = "127.0.0.1"
    min_session_timeout: int = 4000
    max_session_timeout: int = 40000
    max_client_cnxns: int = 60
    jute_max_buffer: int = 0xFFFFF
    four_letter_words: frozenset[str] = DEFAULT_4LW
    # resource limits: reading from a connection pauses while one of them is reached
    max_outstanding: int = 1000  # fastzk.clientOutstandingLimit: requests in flight per connection
    client_outstanding_limit_bytes: int = 16 << 20  # fastzk.clientOutstandingLimitBytes
    global_outstanding_limit: int = 1000  # globalOutstandingLimit: requests in flight, all clients
    large_request_max_bytes: int = 100 << 20  # largeRequestMaxBytes: their bytes, all clients
    large_request_threshold: int = -1  # largeRequestThreshold: only larger requests count (-1: all)
    client_output_limit_bytes: int = 4 << 20  # fastzk.clientOutputLimitBytes: unsent replies
    client_output_hard_limit_bytes: int = 64 << 20  # fastzk.clientOutputHardLimitBytes: closed
    super_digest: str | None = None
    ttl_enabled: bool = True  # extendedTypesEnabled: on by default (ZooKeeper: off)
    admin_enabled: bool = True
    admin_address: str = "127.0.0.1"
    admin_port: int = 8080
    handshake_timeout_ms: int = 10000
    container_check_interval_ms: int = 60000
    container_max_per_minute: int = 10000
    # durability (runtime/storage.py, wal.py, snapshot.py)
    data_log_dir: Path | None = None  # dataLogDir: the WAL's directory (default: dataDir)
    snap_count: int = 100000  # snapCount: txns between snapshots (with jitter, as ZooKeeper)
    snap_size_limit_kb: int = 4194304  # snapSizeLimitInKb: log KB between snapshots (0: off)
    snap_retain_count: int = 3  # autopurge.snapRetainCount: snapshots kept, with their log
    prealloc_kb: int = 65536  # preAllocSize: KB per log segment (preallocated, roll size)
    wal_max_batch_bytes: int = 8 * 1024 * 1024  # fastzk.walMaxBatchBytes: bytes per write
    snapshot_chunk_nodes: int = 1000  # fastzk.snapshotChunkNodes: nodes per loop callback
    # TESTING ONLY: acknowledge writes before they are durable, and write them
    # unsafe_write_delay_ms later, so that a crash loses acknowledged writes (the crash
    # test's negative control). Never set this on a server whose data matters.
    unsafe_ack_before_sync: bool = False  # fastzk.unsafeAckBeforeSync
    unsafe_write_delay_ms: int = 500  # fastzk.unsafeWriteDelayMs
    source: str = "embedded default"
    warnings: tuple[str, ...] = field(default=())


def _int(key: str, value: str, minimum: int = 0) -> int:
    try:
        number = int(value, 0)
    except ValueError:
        raise ConfigError(f"{key}: not an integer: {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{key}: must be >= {minimum}, got {number}")
    return number


def _bool(key: str, value: str) -> bool:
    if value.lower() in ("true", "yes", "1"):
        return True
    if value.lower() in ("false", "no", "0"):
        return False
    raise ConfigError(f"{key}: not a boolean: {value!r}")


def parse_properties(text: str) -> dict[str, str]:
    """Java .properties lines: key=value, key: value or key value; # and ! comments."""
    result: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        for index, char in enumerate(line):
            if char in "=: \t":
                key, value = line[:index], line[index + 1:].strip()
                if char in " \t" and value[:1] in ("=", ":"):
                    value = value[1:].strip()
                break
        else:
            key, value = line, ""
        result[key] = value
    return result


def _whitelist(value: str) -> frozenset[str]:
    words = {word.strip() for word in value.split(",") if word.strip()}
    if "*" in words:
        return ALL_4LW
    unknown = words - ALL_4LW
    if unknown:
        raise ConfigError(f"4lw.commands.whitelist: unknown commands {sorted(unknown)}")
    return frozenset(words)


def load(path: str | Path | None) -> Config:
    if path is None:
        return Config()
    path = Path(path)
    try:
        props = parse_properties(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    return from_properties(props, source=str(path), base=path.parent)


def from_properties(props: dict[str, str], source: str, base: Path) -> Config:
    values: dict[str, object] = {"source": source}
    warnings: list[str] = []
    tick = _int("tickTime", props.get("tickTime", "2000"), 1)
    values["tick_time"] = tick
    min_timeout = max_timeout = None
    for key, value in props.items():
        bare = key.removeprefix("zookeeper.")
        if key == "tickTime":
            continue
        if key == "dataDir":
            data_dir = Path(value)
            values["data_dir"] = data_dir if data_dir.is_absolute() else base / data_dir
        elif key == "clientPort":
            values["client_port"] = _int(key, value, 0)
        elif key == "clientPortAddress":
            values["client_port_address"] = value
        elif key == "minSessionTimeout":
            min_timeout = _int(key, value, -1)
        elif key == "maxSessionTimeout":
            max_timeout = _int(key, value, -1)
        elif key == "maxClientCnxns":
            values["max_client_cnxns"] = _int(key, value, 0)
        elif key == "fastzk.clientOutstandingLimit":
            values["max_outstanding"] = _int(key, value, 1)
        elif key == "fastzk.clientOutstandingLimitBytes":
            values["client_outstanding_limit_bytes"] = _int(key, value, 1)
        elif bare == "globalOutstandingLimit":
            values["global_outstanding_limit"] = _int(key, value, 1)
        elif bare == "largeRequestMaxBytes":
            values["large_request_max_bytes"] = _int(key, value, 1)
        elif bare == "largeRequestThreshold":
            values["large_request_threshold"] = _int(key, value, -1)
        elif key == "fastzk.clientOutputLimitBytes":
            values["client_output_limit_bytes"] = _int(key, value, 1)
        elif key == "fastzk.clientOutputHardLimitBytes":
            values["client_output_hard_limit_bytes"] = _int(key, value, 1)
        elif bare == "jute.maxbuffer":
            values["jute_max_buffer"] = _int(key, value, 1024)
        elif key == "4lw.commands.whitelist":
            values["four_letter_words"] = _whitelist(value)
        elif bare == "DigestAuthenticationProvider.superDigest":
            values["super_digest"] = value
        elif bare == "znode.container.checkIntervalMs":
            values["container_check_interval_ms"] = _int(key, value, 1)
        elif bare == "znode.container.maxPerMinute":
            values["container_max_per_minute"] = _int(key, value, 1)
        elif key == "admin.enableServer":
            values["admin_enabled"] = _bool(key, value)
        elif key == "admin.serverAddress":
            values["admin_address"] = value
        elif key == "admin.serverPort":
            values["admin_port"] = _int(key, value, 0)
        elif key == "dataLogDir":
            log_dir = Path(value)
            values["data_log_dir"] = log_dir if log_dir.is_absolute() else base / log_dir
        elif bare == "snapCount":
            values["snap_count"] = _int(key, value, 2)
        elif bare == "snapSizeLimitInKb":
            values["snap_size_limit_kb"] = _int(key, value, -1)
        elif key == "autopurge.snapRetainCount":
            values["snap_retain_count"] = _int(key, value, 1)
        elif bare == "preAllocSize":
            values["prealloc_kb"] = _int(key, value, 1)
        elif key == "fastzk.walMaxBatchBytes":
            values["wal_max_batch_bytes"] = _int(key, value, 4096)
        elif key == "fastzk.snapshotChunkNodes":
            values["snapshot_chunk_nodes"] = _int(key, value, 1)
        elif key == "fastzk.unsafeAckBeforeSync":
            values["unsafe_ack_before_sync"] = _bool(key, value)
            if values["unsafe_ack_before_sync"]:
                warnings.append(f"{key}=true: writes are acknowledged BEFORE they are durable; "
                                "a crash loses them. For testing only.")
        elif key == "fastzk.unsafeWriteDelayMs":
            values["unsafe_write_delay_ms"] = _int(key, value, 0)
        elif bare == "extendedTypesEnabled":
            values["ttl_enabled"] = _bool(key, value)
        elif key in KNOWN_UNUSED or key.startswith("server."):
            warnings.append(f"{key}: accepted but not used by fastzk yet (ignored)")
        else:
            warnings.append(f"{key}: unknown key (ignored)")
    values["min_session_timeout"] = (
        2 * tick if min_timeout in (None, -1) else min_timeout
    )
    values["max_session_timeout"] = (
        20 * tick if max_timeout in (None, -1) else max_timeout
    )
    if values["min_session_timeout"] > values["max_session_timeout"]:
        raise ConfigError("minSessionTimeout must not exceed maxSessionTimeout")
    if "dataDir" not in props:
        raise ConfigError("dataDir is not set")
    values["warnings"] = tuple(warnings)
    cfg = Config(**values)  # type: ignore[arg-type]
    if cfg.client_output_hard_limit_bytes < cfg.client_output_limit_bytes:
        raise ConfigError("fastzk.clientOutputHardLimitBytes must not be below "
                          "fastzk.clientOutputLimitBytes")
    return cfg
