"""Import speed (issue 11): fastzk reading an Apache ZooKeeper data directory with a
1,000,000-znode snapshot, against ZooKeeper 3.8 loading the same snapshot, in one run.

Usage::

    python bench/zk_import.py [--nodes 1000000] [--data-bytes 64] [--json FILE]

The snapshot is written by fastzk's ZooKeeper snapshot encoder (the one `fastzk export` uses;
the tests show ZooKeeper loads its output) in ZooKeeper's usual shape: /bench/g<k>/n<i>,
1,000 children per group, `--data-bytes` of data each, with the digest record. Then:

* fastzk: `recovery.recover` (read, check the Adler32 seal and the digest, build the tree)
  and the whole `fastzk import` (plus writing the fastzk snapshot, fsynced), each timed in
  this process; then `fastzk serve` on the imported directory, timed from spawn to the first
  answered request.
* fastzk: `fastzk export` of the imported directory back into a ZooKeeper one (recover it,
  write ZooKeeper's snapshot), timed in this process.
* ZooKeeper 3.8 (JVM defaults, as shipped, INFO logging): `zkServer`'s ZooKeeperServerMain on
  a copy of the directory, timed from spawn to the first answered request; its own log line
  "Snapshot loaded in N ms" is reported too.
Results are printed and written as JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from fastzk.nemesis.servers import start_server
from fastzk.runtime import wal
from fastzk.zkfiles import recovery, takeover
from fastzk.zkfiles import snapshot as zksnap

OPEN = ((31, "world", "anyone"),)


def nodes(count: int, data_bytes: int, zxid: int) -> Iterator[zksnap.SnapshotNode]:
    """The tree, parents first, with plausible Stats (each node created at its own zxid)."""
    now = int(time.time() * 1000)
    groups = (count + 999) // 1000

    def node(path: bytes, data: bytes, czxid: int, children: int) -> zksnap.SnapshotNode:
        return zksnap.SnapshotNode(path, data, OPEN, czxid, czxid, now, now, 0, children, 0, 0,
                                   czxid + children)

    yield node(b"", b"", 0, 2)
    yield node(b"/zookeeper", b"", 0, 0)
    yield node(b"/zookeeper/quota", b"", 0, 0)
    yield node(b"/bench", b"", 1, groups)
    value = b"v" * data_bytes
    created = 1
    for g in range(groups):
        in_group = min(1000, count - g * 1000)
        created += 1
        gz = created
        yield node(b"/bench/g%d" % g, b"", gz, in_group)
        for i in range(in_group):
            created += 1
            yield node(b"/bench/g%d/n%d" % (g, i), value, created, 0)
    assert created <= zxid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--data-bytes", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zk-import-bench-"))
    results: dict[str, object] = {"nodes": args.nodes, "data_bytes": args.data_bytes}
    try:
        zk_data = work / "zk-data"
        (zk_data / "version-2").mkdir(parents=True)
        zxid = args.nodes + args.nodes // 1000 + 10
        started = time.monotonic()
        data, _ = zksnap.encode_snapshot({}, nodes(args.nodes, args.data_bytes, zxid), zxid)
        (zk_data / "version-2" / f"snapshot.{zxid:x}").write_bytes(data)
        total = args.nodes + (args.nodes + 999) // 1000 + 4  # + /, /zookeeper(/quota), /bench
        results["snapshot_bytes"] = len(data)
        print(f"snapshot: {len(data) / 1e6:.1f} MB, ~{total} znodes, written in "
              f"{time.monotonic() - started:.1f}s", flush=True)
        del data
        zk_copy = work / "zk-copy"
        shutil.copytree(zk_data, zk_copy)

        started = time.monotonic()
        rec = recovery.recover(zk_data)
        seconds = time.monotonic() - started
        results["fastzk_recover_s"] = round(seconds, 3)
        results["fastzk_recover_znodes_per_s"] = round(len(rec.tree) / seconds)
        results["digest"] = rec.digest_status
        print(f"fastzk recover: {seconds:.2f}s, {len(rec.tree) / seconds:,.0f} znodes/s, "
              f"{len(rec.tree)} znodes, digest {rec.digest_status}", flush=True)
        del rec
        imported = work / "fastzk-data"
        started = time.monotonic()
        report = takeover.import_zk(zk_data, None, wal.log_dir_of(imported))
        seconds = time.monotonic() - started
        results["fastzk_import_s"] = round(seconds, 3)
        results["fastzk_import_znodes_per_s"] = round(len(report.recovered.tree) / seconds)
        print(f"fastzk import (recover + write the fastzk snapshot): {seconds:.2f}s, "
              f"{len(report.recovered.tree) / seconds:,.0f} znodes/s", flush=True)
        del report
        started = time.monotonic()
        server = start_server("fastzk", work / "fz", dataDir=imported)
        results["fastzk_serve_first_request_s"] = round(time.monotonic() - started, 3)
        server.stop()
        print(f"fastzk serve on the imported dir: first request after "
              f"{results['fastzk_serve_first_request_s']:.2f}s", flush=True)
        started = time.monotonic()
        exported = takeover.export_fastzk(imported, work / "exported")
        seconds = time.monotonic() - started
        results["fastzk_export_s"] = round(seconds, 3)
        results["fastzk_export_znodes_per_s"] = round(exported.nodes / seconds)
        print(f"fastzk export (recover the fastzk dir + write ZooKeeper's snapshot): "
              f"{seconds:.2f}s, {exported.nodes / seconds:,.0f} znodes/s", flush=True)

        started = time.monotonic()
        zk = start_server("zookeeper", work / "zk", dataDir=zk_copy, base_jvm_flags=(),
                          jvm_flags=["-Dzookeeper.root.logger=INFO,CONSOLE"])
        results["zookeeper_first_request_s"] = round(time.monotonic() - started, 3)
        zk.stop()
        found = re.search(r"Snapshot loaded in (\d+) ms", zk.log_text())
        results["zookeeper_snapshot_loaded_ms"] = int(found.group(1)) if found else None
        print(f"ZooKeeper 3.8: first request after {results['zookeeper_first_request_s']:.2f}s"
              f", its log: snapshot loaded in {results['zookeeper_snapshot_loaded_ms']} ms",
              flush=True)
        if found:
            results["zookeeper_znodes_per_s"] = round(total / (int(found.group(1)) / 1000))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
