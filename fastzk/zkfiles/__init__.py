"""Apache ZooKeeper's on-disk formats: read a ZooKeeper data directory (`version-2/` snapshots,
gzip/snappy-compressed ones included, transaction logs, `currentEpoch`/`acceptedEpoch`),
recover it exactly as ZooKeeper would, import it as a fastzk data directory, and export a
fastzk data directory back as a snapshot ZooKeeper loads.

Modules: `jute` (the byte reader and the error type), `snapshot` (snapshot files, both ways),
`txnlog` (transaction logs), `recovery` (ZooKeeper's replay semantics and digest over a
DataTree), `takeover` (`fastzk import`, the start-up import, `fastzk export`).
"""
