"""`fastzk check`: is a recorded history of operations linearizable (for znode: ZooKeeper's
consistency contract)? history.py reads and pairs events, models.py holds the sequential
specifications, search.py partitions and searches (its loop is Cython: core/lincheck.pxi)."""

from fastzk.check.history import HistoryError, read_history
from fastzk.check.search import CheckResult, check_history

__all__ = ["CheckResult", "HistoryError", "check_history", "read_history"]
