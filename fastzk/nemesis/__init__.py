"""Nemesis runs: real fastzk or Apache ZooKeeper ensembles on loopback, faults on a seeded
schedule, a recorded client history, and the checks after healing (``fastzk nemesis``)."""
