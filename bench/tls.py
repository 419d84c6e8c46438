"""TLS throughput: fastzk and Apache ZooKeeper 3.8 (Netty), same certificates, same run.

Starts one standalone server of each kind with a plaintext clientPort and a mutual-TLS
secureClientPort (one CA, PEM key stores as ZooKeeper 3.6+ reads them), then drives each
port with `fastzk load` (closed loop, 8 sessions x 32 in flight) for getData and setData.
Prints requests/s per server and port, the TLS cost on each server (TLS / plaintext) and
fastzk / ZooKeeper over TLS. Ratios matter; absolute numbers depend on the machine.

    .venv/bin/python bench/tls.py [--duration 5] [--repeat 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from certs import Issuer, key_pem, pem  # noqa: E402

from fastzk.load import LoadConfig, run_load  # noqa: E402
from fastzk.nemesis.servers import LOOPBACK, free_port, start_server  # noqa: E402


def _certs(root: Path) -> dict[str, Path]:
    ca = Issuer("bench CA")
    key, cert = ca.issue("CN=server,O=fastzk")
    client_key, client_cert = ca.issue("CN=bench,O=fastzk")
    files = {"ca": root / "ca.pem", "server": root / "server.pem", "client": root / "client.pem"}
    files["ca"].write_bytes(pem(ca.cert))
    files["server"].write_bytes(key_pem(key) + pem(cert) + pem(ca.cert))
    files["client"].write_bytes(key_pem(client_key) + pem(client_cert))
    return files


def _rate(port: int, op: str, duration: float, tls: dict[str, str]) -> float:
    cfg = LoadConfig(host=LOOPBACK, port=port, op=op, sessions=8, depth=32, keys=64,
                     duration=duration, warmup=1.0, root=f"/bench-tls-{op}", **tls)
    return run_load(cfg).ops_per_sec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    files = _certs(root)
    client_tls = {"tls_ca": str(files["ca"]), "tls_cert": str(files["client"])}
    rows: dict[tuple[str, str, str], float] = {}
    for kind in ("zookeeper", "fastzk"):
        secure = free_port()
        proc = start_server(kind, root / kind, secureClientPort=secure, **{
            "serverCnxnFactory": "org.apache.zookeeper.server.NettyServerCnxnFactory",
            "ssl.keyStore.location": files["server"], "ssl.trustStore.location": files["ca"],
            "ssl.clientAuth": "need"})
        try:
            for op in ("get", "set"):
                for transport, port, tls in (("plain", proc.port, {}),
                                             ("tls", secure, client_tls)):
                    rates = [_rate(port, op, args.duration, tls) for _ in range(args.repeat)]
                    rows[kind, op, transport] = statistics.fmean(rates)
                    print(f"{kind:9} {op:3} {transport:5} {rows[kind, op, transport]:>12,.0f} "
                          f"req/s  runs {[round(r) for r in rates]}", flush=True)
        finally:
            proc.stop()
    print()
    print(f"{'op':4} {'fastzk TLS/plain':>17} {'ZooKeeper TLS/plain':>20} "
          f"{'fastzk/ZooKeeper, TLS':>22} {'fastzk/ZooKeeper, plain':>24}")
    for op in ("get", "set"):
        f_tls, f_plain = rows["fastzk", op, "tls"], rows["fastzk", op, "plain"]
        z_tls, z_plain = rows["zookeeper", op, "tls"], rows["zookeeper", op, "plain"]
        print(f"{op:4} {f_tls / f_plain:>16.2f}x {z_tls / z_plain:>19.2f}x "
              f"{f_tls / z_tls:>21.2f}x {f_plain / z_plain:>23.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
