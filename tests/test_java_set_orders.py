"""Two orders from Java hash tables against ground truth from real Java (one JVM run each):

- a connection's identities (`acl.zookeeper_order`) as ZooKeeper's authInfo, a set over a
  ConcurrentHashMap<Id>, iterates them: random and colliding sets of 1 to 200 ids, so that
  the table grows, presizes and builds tree bins;
- a session's ephemerals (`DataTree.ephemerals`) as a clone of a HashSet<String> iterates
  them (getEphemerals): histories of creates and deletes, and histories of creates with
  groups of paths whose String.hashCode is equal (deletes there are not modelled: see
  DataTree.ephemerals).

The differential tests (test_conformance_acl.py, test_conformance_nodetypes.py) check the same
against ZooKeeper itself on a few cases each; these cover many.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from fastzk._core import DataTree
from fastzk.server import acl

JAVA_SOURCE = r"""
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.util.*;
import java.util.concurrent.ConcurrentHashMap;

public class JavaSets {
  // org.apache.zookeeper.data.Id's hashCode and equals
  static final class Id {
    final String scheme, id;
    Id(String scheme, String id) { this.scheme = scheme; this.id = id; }
    public int hashCode() { return 37 * (37 * 17 + scheme.hashCode()) + id.hashCode(); }
    public boolean equals(Object o) {
      return o instanceof Id && ((Id) o).scheme.equals(scheme) && ((Id) o).id.equals(id);
    }
  }

  static String hex(String s) {
    StringBuilder b = new StringBuilder();
    for (byte x : s.getBytes(StandardCharsets.UTF_8)) b.append(String.format("%02x", x));
    return b.toString();
  }

  static String unhex(String h) {
    byte[] b = new byte[h.length() / 2];
    for (int i = 0; i < b.length; i++) b[i] = (byte) Integer.parseInt(h.substring(2 * i, 2 * i + 2), 16);
    return new String(b, StandardCharsets.UTF_8);
  }

  // stdin: "I" starts an identity set, "i<scheme hex>,<id hex>" adds one; "E" starts an
  // ephemeral set, "+<path hex>" / "-<path hex>" add and remove; "?" prints the order (ids:
  // scheme,id pairs; ephemerals: the clone's) as hex, comma separated
  public static void main(String[] args) throws IOException {
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    Set<Id> ids = null;
    HashSet<String> paths = null;
    StringBuilder out = new StringBuilder();
    for (String line; (line = in.readLine()) != null; ) {
      char op = line.charAt(0);
      String arg = line.substring(1);
      if (op == 'I') { ids = Collections.newSetFromMap(new ConcurrentHashMap<>()); paths = null; }
      else if (op == 'E') { paths = new HashSet<>(); ids = null; }
      else if (op == 'i') { String[] p = arg.split(",", -1); ids.add(new Id(unhex(p[0]), unhex(p[1]))); }
      else if (op == '+') paths.add(unhex(arg));
      else if (op == '-') paths.remove(unhex(arg));
      else if (op == '?') {
        List<String> items = new ArrayList<>();
        if (ids != null) for (Id x : ids) items.add(hex(x.scheme) + ":" + hex(x.id));
        else {
          @SuppressWarnings("unchecked") HashSet<String> clone = (HashSet<String>) paths.clone();
          for (String p : clone) items.add(hex(p));
        }
        out.append(String.join(",", items)).append('\n');
      }
    }
    System.out.print(out);
  }
}
"""

SESSION = 0x0100000D992F0013
OPEN = [(31, "world", "anyone")]


def _hex(text: str) -> str:
    return text.encode("utf-8").hex()


def _run_java(tmp_path: Path, lines: list[str]) -> list[str]:
    java = shutil.which("java")
    if java is None:
        pytest.skip("no java on PATH")
    source = tmp_path / "JavaSets.java"
    source.write_text(JAVA_SOURCE)
    done = subprocess.run([java, str(source)], input="\n".join(lines) + "\n", text=True,
                          capture_output=True, timeout=120, check=True)
    return done.stdout.splitlines()


def _colliding(blocks: int) -> list[str]:
    """Names of `blocks` blocks of "Aa" or "BB": all with one String.hashCode."""
    names = [""]
    for _ in range(blocks):
        names = [name + block for name in names for block in ("Aa", "BB")]
    return names


def _identity_sets(rng: random.Random) -> list[list[tuple[str, str]]]:
    sets = []
    for _ in range(300):
        count = rng.choice([1, 3, 11, 12, 13, 23, 24, 25, 47, 48, 60, 100, 200])
        ids = [("ip", "127.0.0.1")]
        if rng.random() < 0.5:
            ids += [("digest", f"u{rng.randrange(10**6)}:{rng.randbytes(6).hex()}")
                    for _ in range(count)]
        else:  # most in one bin of a table of `mask + 1`
            mask = rng.choice([15, 31, 63, 127])
            target = rng.randrange(mask + 1)
            while len(ids) <= count:
                ident = ("digest", f"c{rng.randrange(10**8)}:x")
                if rng.random() < 0.05 or acl._id_hash(ident) & mask == target:
                    ids.append(ident)
        if rng.random() < 0.2:
            ids.append(("super", ""))
        sets.append(list(dict.fromkeys(ids)))
    return sets


def test_identity_order_matches_java_concurrent_hash_map(tmp_path: Path) -> None:
    sets = _identity_sets(random.Random(12))
    lines = []
    for ids in sets:
        lines.append("I")
        lines += [f"i{_hex(scheme)},{_hex(ident)}" for scheme, ident in ids]
        lines.append("?")
    out = _run_java(tmp_path, lines)
    assert len(out) == len(sets)
    for ids, line in zip(sets, out, strict=True):
        java = [tuple(bytes.fromhex(h).decode() for h in pair.split(":"))
                for pair in line.split(",")]
        assert acl.zookeeper_order(ids) == java, ids


def _ephemeral_histories(rng: random.Random) -> list[list[tuple[str, str]]]:
    """Commands ("+", path), ("-", path), ("?", ""): over plain paths with deletes, or over
    plain and colliding paths without."""
    histories = []
    for _ in range(120):
        plain = [f"/e/p{i}" for i in range(rng.choice([5, 20, 60, 150]))]
        colliding = (["/e/" + name for name in _colliding(rng.choice([3, 4, 5]))]
                     if rng.random() < 0.6 else [])
        pool = plain + colliding
        rng.shuffle(pool)
        live: list[str] = []
        commands = []
        for _ in range(rng.randrange(10, 160)):
            if live and not colliding and rng.random() < 0.3:
                path = rng.choice(live)
                live.remove(path)
                commands.append(("-", path))
            else:
                fresh = [p for p in pool if p not in live]
                if not fresh:
                    break
                path = rng.choice(fresh)
                live.append(path)
                commands.append(("+", path))
            if rng.random() < 0.1:
                commands.append(("?", ""))
        commands.append(("?", ""))
        histories.append(commands)
    return histories


def test_get_ephemerals_order_matches_a_java_hash_set_clone(tmp_path: Path) -> None:
    histories = _ephemeral_histories(random.Random(12))
    lines = []
    mine = []
    for commands in histories:
        tree = DataTree()
        tree.create("/e", b"", OPEN, 0, 1, 0, 1)
        counter = 1
        lines.append("E")
        for zxid, (op, path) in enumerate(commands, 2):
            lines.append(op + _hex(path))
            if op == "+":
                counter += 1
                tree.create(path, b"", OPEN, SESSION, zxid, 0, counter)
            elif op == "-":
                tree.delete(path, zxid)
            else:
                mine.append(tree.ephemerals(SESSION))
    out = _run_java(tmp_path, lines)
    assert len(out) == len(mine)
    for order, line in zip(mine, out, strict=True):
        assert order == [bytes.fromhex(h).decode() for h in line.split(",") if h]
