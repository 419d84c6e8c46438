"""Child order against ground truth from real Java: the DataTree must list a node's children
exactly as a java.util.HashSet<String>(8) (ZooKeeper's DataNode.children) iterates them.

One JVM run answers every scenario of the module: a tiny Java program (JAVA_SOURCE, started
with single-file source launch) reads add/remove/list/reload commands and prints the set's
iteration orders; the same commands drive a DataTree (creates and deletes under /p).
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastzk._core import DataTree, WriteBuffer, java_string_hash

OPEN = [(31, "world", "anyone")]

JAVA_SOURCE = r"""
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.util.*;

public class ChildSets {
    static String name(String hex) {
        byte[] b = new byte[hex.length() / 2];
        for (int i = 0; i < b.length; i++)
            b[i] = (byte) Integer.parseInt(hex.substring(2 * i, 2 * i + 2), 16);
        return new String(b, StandardCharsets.UTF_8);
    }

    static String hex(String s) {
        StringBuilder sb = new StringBuilder();
        for (byte x : s.getBytes(StandardCharsets.UTF_8)) sb.append(String.format("%02x", x));
        return sb.toString();
    }

    public static void main(String[] args) throws IOException {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        PrintWriter out = new PrintWriter(new BufferedWriter(new OutputStreamWriter(System.out)));
        Set<String> set = new HashSet<String>(8);  // as DataNode.addChild creates it
        for (String line; (line = in.readLine()) != null; ) {
            char op = line.charAt(0);
            String arg = line.substring(1);
            if (op == 'N') set = new HashSet<String>(8);
            else if (op == '+') set.add(name(arg));
            else if (op == '-') set.remove(name(arg));
            else if (op == 'R') {  // DataTree.deserialize: a fresh set, filled in listing order
                Set<String> reloaded = new HashSet<String>(8);
                for (String s : set) reloaded.add(s);
                set = reloaded;
            } else if (op == 'H') {
                int h = name(arg).hashCode();
                out.println(h ^ (h >>> 16));
            } else if (op == '?') {
                StringJoiner j = new StringJoiner(",");
                for (String s : new ArrayList<String>(set)) j.add(hex(s));
                out.println(j);
            }
        }
        out.flush();
    }
}
"""


def _hex(name: str) -> str:
    return name.encode("utf-8", "surrogatepass").hex()


class Scenario:
    """Commands for Java and for a DataTree: add, remove, list (checkpoint) and reload, on the
    children of /p, or of / (whose set starts with "zookeeper", as on a fresh server)."""

    def __init__(self, label: str, parent: str = "/p") -> None:
        self.label = label
        self.parent = parent
        self.commands: list[tuple[str, str]] = []
        if parent == "/":
            self.add("zookeeper")

    def add(self, name: str) -> None:
        self.commands.append(("+", name))

    def remove(self, name: str) -> None:
        self.commands.append(("-", name))

    def check(self) -> None:
        self.commands.append(("?", ""))

    def reload(self) -> None:
        self.commands.append(("R", ""))


def _java_orders(tmp_path: Path, scenarios: list[Scenario],
                 hashes: list[str]) -> tuple[list[list[list[str]]], list[int]]:
    java = shutil.which("java")
    if java is None:
        pytest.skip("no java on PATH")
    source = tmp_path / "ChildSets.java"
    source.write_text(JAVA_SOURCE)
    lines = [f"H{_hex(n)}" for n in hashes]
    for scenario in scenarios:
        lines.append("N")
        lines += [f"{op}{_hex(arg) if arg else ''}" for op, arg in scenario.commands]
    done = subprocess.run([java, str(source)], input="\n".join(lines) + "\n", text=True,
                          capture_output=True, timeout=120, check=True)
    out = iter(done.stdout.splitlines())
    java_hashes = [int(next(out)) for _ in hashes]
    orders = []
    for scenario in scenarios:
        mine = []
        for op, _ in scenario.commands:
            if op == "?":
                line = next(out)
                mine.append([bytes.fromhex(h).decode("utf-8") for h in line.split(",")]
                            if line else [])
        orders.append(mine)
    return orders, java_hashes


def _reload(tree: DataTree) -> DataTree:
    """A snapshot of `tree` loaded into a fresh tree (fastzk's restart from a snapshot)."""
    cursor = tree.snapshot_cursor()
    fresh = DataTree()
    acls: dict = {}
    while not cursor.done:
        fresh.load_snapshot_chunk(cursor.next_chunk(97), acls)
    return fresh


def _listing(tree: DataTree, path: str) -> list[str]:
    """The children as a getChildren reply carries them (the cached vector<ustring>)."""
    out = WriteBuffer()
    assert tree.write_children(out, path)
    raw = out.take()
    (count,) = struct.unpack_from(">i", raw)
    names, pos = [], 4
    for _ in range(count):
        (n,) = struct.unpack_from(">i", raw, pos)
        names.append(raw[pos + 4 : pos + 4 + n].decode("utf-8", "surrogatepass"))
        pos += 4 + n
    return names


def _run_tree(scenario: Scenario) -> Iterator[list[str]]:
    tree = DataTree()
    parent = scenario.parent
    prefix = "" if parent == "/" else parent
    if parent != "/":
        tree.create(parent, b"", OPEN, 0, 1, 0, 1)
    zxid = 2
    for op, name in scenario.commands:
        zxid += 1
        if op == "+":
            if f"{prefix}/{name}" != "/zookeeper":  # a fresh tree has it
                tree.create(f"{prefix}/{name}", b"", OPEN, 0, zxid, 0, zxid)
        elif op == "-":
            tree.delete(f"{prefix}/{name}", zxid)
        elif op == "R":
            tree = _reload(tree)
        else:
            names = tree.get_children(parent)
            assert _listing(tree, parent) == names
            assert tree.stat(parent)[9] == len(names)
            yield names


def _colliding(blocks: list[str], k: int) -> list[str]:
    """Every string of k blocks: blocks of equal length and String.hashCode make strings of
    equal hashCode (the "Aa"/"BB" construction), which share one bin and one tree path."""
    names = [""]
    for _ in range(k):
        names = [n + b for n in names for b in blocks]
    return names


def _in_bucket(rng: random.Random, alphabet: str, mask: int, bucket: int,
               count: int) -> list[str]:
    """Random distinct names whose spread hash falls in one bin of a table of mask+1."""
    out: set[str] = set()
    while len(out) < count:
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
        if java_string_hash(name) & mask == bucket:
            out.add(name)
    return sorted(out)


def _churn(label: str, rng: random.Random, pool: list[str], steps: int,
           check_every: int, reload_every: int = 0) -> Scenario:
    """Random adds and removes over a pool of names, listing every `check_every` steps."""
    scenario = Scenario(label)
    live: list[str] = []
    for step in range(1, steps + 1):
        if live and (rng.random() < 0.45 or len(live) == len(pool)):
            scenario.remove(live.pop(rng.randrange(len(live))))
        else:
            name = rng.choice([n for n in pool if n not in live])
            live.append(name)
            scenario.add(name)
        if step % check_every == 0:
            scenario.check()
        if reload_every and step % reload_every == 0:
            scenario.reload()
            scenario.check()
    scenario.check()
    return scenario


# Blocks of two UTF-16 units with equal String.hashCode (31 * u0 + u1):
ASCII_BLOCKS = ["Aa", "BB"]
# U+10FFFF is the surrogate pair DBFF DFFF; the BMP pairs start at U+E000, above every
# surrogate: Java's compareTo (UTF-16 units) sorts U+10FFFF first, code point order last.
UNICODE_BLOCKS = ["\U0010ffff", "\ue000\u63e0", "\ue001\u63c1", "\ue002\u63a2"]


def _scenarios() -> list[Scenario]:
    rng = random.Random(12)
    out = []
    ascii_pool = [f"n{i}" for i in range(300)] + ["one", "two", "three", "zookeeper"]
    for seed in range(6):
        out.append(_churn(f"ascii-{seed}", random.Random(seed), ascii_pool, 600, 25, 200))
    # zk-shell's tree test: `two` before `one`
    s = Scenario("one-two")
    for name in ("one", "two"):
        s.add(name)
    s.check()
    out.append(s)
    # the root: its set starts with "zookeeper"; a reload refills it in listing order
    root = Scenario("root", parent="/")
    for i in range(40):
        root.add(f"r{i}")
    for i in range(30):
        root.remove(f"r{i}")
    root.check()
    root.reload()
    root.check()
    out.append(root)
    # all in one bin with one hash: treeify, tree inserts, tree removes, untreeify, splits
    equal_hash = _colliding(ASCII_BLOCKS, 5)
    for seed in range(4):
        out.append(_churn(f"equal-hash-{seed}", random.Random(100 + seed), equal_hash,
                          400, 5, 150))
    # one bin of a 64-bin table, different hashes (ordered by hash in the tree), with filler
    # names so the table is large enough to treeify rather than grow; resizes split the bin
    bucket = _in_bucket(rng, "abcdefghijklmnopqrstuvwxyz0123456789-_", 63, 17, 40)
    filler = [f"f{i}" for i in range(60)]
    for seed in range(4):
        out.append(_churn(f"one-bin-{seed}", random.Random(200 + seed), bucket + filler,
                          700, 10, 230))
    # a tree bin split by resizes (to 128 and 256 bins): halves kept, re-treeified or
    # untreeified by their sizes
    for seed in range(8):
        r = random.Random(400 + seed)
        s = Scenario(f"split-{seed}")
        fill = [f"g{i}" for i in range(200)]
        in_bin = r.sample(bucket, r.randint(9, 30))
        for name in fill[:30] + in_bin:
            s.add(name)
        s.check()
        for name in r.sample(in_bin, r.randint(0, len(in_bin) // 2)):
            s.remove(name)
        s.check()
        for i, name in enumerate(fill[30:]):
            s.add(name)
            if i % 20 == 0:
                s.check()
        s.check()
        out.append(s)
    # unicode: BMP, supplementary (surrogate pairs), and equal hashes across the two
    unicode_pool = (_colliding(UNICODE_BLOCKS, 3)
                    + ["é", "中文", "\U0001f600", "a\U0001f9e1b", "\ufffd", "\ue000", "Ω≈ç"])
    for seed in range(3):
        out.append(_churn(f"unicode-{seed}", random.Random(300 + seed), unicode_pool, 300,
                          10, 120))
    # 10,000 children: grow, shrink by half, reload smaller, grow again
    big = Scenario("10k")
    names = [f"item-{i:010d}" for i in range(10_000)]
    for name in names:
        big.add(name)
    big.check()
    for name in random.Random(7).sample(names, 5_000):
        big.remove(name)
    big.check()
    big.reload()
    big.check()
    for i in range(10_000, 12_000):
        big.add(f"item-{i:010d}")
    big.check()
    out.append(big)
    # sequential nodes as ZooKeeper names them, under churn (a queue)
    queue = Scenario("queue")
    for i in range(3_000):
        queue.add(f"q-{i:010d}")
        if i >= 100:
            queue.remove(f"q-{i - 100:010d}")
        if i % 500 == 0:
            queue.check()
    queue.check()
    out.append(queue)
    return out


HASHED = (["", "a", "one", "two", "zookeeper", "Aa", "BB", "é", "中文", "\U0001f600",
           "\U0010ffff", "\ue000\u63e0", "x" * 40, "mixed\U0001f600é"])


@pytest.fixture(scope="module")
def ground_truth(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    scenarios = _scenarios()
    orders, hashes = _java_orders(tmp_path_factory.mktemp("java"), scenarios, HASHED)
    return scenarios, orders, hashes


def test_string_hash_matches_java(ground_truth: tuple) -> None:
    _, _, hashes = ground_truth
    assert [java_string_hash(n) for n in HASHED] == hashes


def test_blocks_really_collide() -> None:
    """The colliding scenarios test trees only if their names share one hash."""
    for blocks in (ASCII_BLOCKS, UNICODE_BLOCKS):
        assert len({java_string_hash(n) for n in _colliding(blocks, 3)}) == 1


def test_children_order_matches_java_hashset(ground_truth: tuple) -> None:
    scenarios, orders, _ = ground_truth
    for scenario, expected in zip(scenarios, orders, strict=True):
        got = list(_run_tree(scenario))
        assert len(got) == len(expected)
        for i, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
            assert mine == theirs, f"{scenario.label}: listing {i} differs"


def test_two_before_one(ground_truth: tuple) -> None:
    scenarios, orders, _ = ground_truth
    (one_two,) = [o for s, o in zip(scenarios, orders, strict=True) if s.label == "one-two"]
    assert one_two == [["two", "one"]]
    tree = DataTree()
    tree.create("/p", b"", OPEN, 0, 1, 0, 1)
    tree.create("/p/one", b"", OPEN, 0, 2, 0, 1)
    tree.create("/p/two", b"", OPEN, 0, 3, 0, 2)
    assert tree.get_children("/p") == ["two", "one"]


def test_reload_keeps_the_tree() -> None:
    """Refilling the sets on load (the built-in nodes included) loses and adds nothing."""
    tree = DataTree()
    for i in range(40):
        tree.create(f"/r{i}", b"", OPEN, 0, i + 1, 0, i + 1)
        tree.create(f"/r{i}/c", b"", OPEN, 0, i + 100, 0, 1)
    for i in range(30):
        tree.delete(f"/r{i}/c", 200 + i)
        tree.delete(f"/r{i}", 300 + i)
    again = _reload(tree)
    assert len(again) == len(tree)
    assert again.digest() == tree.digest()
    assert again.get_children("/zookeeper") == tree.get_children("/zookeeper") == [
        "config", "quota"]
    assert again.all_children_number("/") == tree.all_children_number("/") == 23
