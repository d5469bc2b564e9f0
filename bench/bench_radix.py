#!/usr/bin/env python3
"""
Radix walk benchmark
--------------------

Builds KHO radix trees for 512 GiB of preserved memory with the independent
encoder (tests/radix_encoder.py), serves their pages through a synthetic drgn
``Program`` (physical memory segments, ``set_linux_kernel_custom``), and
measures in one run:

(a) ``walk_radix_tree`` against a raw read of the same pages (the walk's own
    ``tree_pages``, in visit order, one 4 KiB read each) through the same
    ``prog.read(phys, 4096, True)`` callable (target: at most 3x, and at most
    6x on the fragmented tree, whose cost is its ranges);
(b) ``walk_radix_tree`` against a naive walk through typed drgn ``Object``s
    (``node.table[i]`` entry by entry, ``for_each_set_bit`` on each leaf, one
    decode per key), timed on a bounded prefix of leaves and scaled per leaf
    (target: at least 100x faster).

Raw read and walk are timed alternately, round after round, and each keeps its
best time, so that a change in machine load hits both; the naive prefix keeps
its best of ``--naive-repeat`` runs. The walk's ranges are checked against the
ranges each workload was built from. For scale, the output floor is the time
to build the result's tuples from ready-made ints at C speed (``zip``).

The walk uses the native leaf scanner (``kho_inspect/_radixscan.c``) when it
is built, the pure-Python one when not or with ``KHO_INSPECT_PURE=1``; the
output says which. With ``--breakdown`` it also times, on the workloads with
many ranges, the output alone, the native scanner alone and the walk with the
pure-Python scanner (the numbers behind bench/README.md).

Run as ``python bench/bench_radix.py``; it prints ratios and "target met" or
"target MISSED" and always exits 0. Timings are best-of-N in one process.
"""

import argparse
import contextlib
import itertools
import os
import random
import struct
import sys
import time
from typing import Callable, Dict, Iterator, List, NamedTuple, Tuple

sys.path[:0] = [
    os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir),
    os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"),
]
# The synthetic programs need no drgn plugins (kho-inspect's own would import its CLI).
os.environ.setdefault("DRGN_DISABLE_PLUGINS", "*")

from drgn import (  # noqa: E402
    Architecture,
    Object,
    Platform,
    PlatformFlags,
    Program,
    TypeKind,
    TypeMember,
)
from drgn.helpers.linux.bitops import for_each_set_bit  # noqa: E402
from radix_encoder import RadixTreeEncoder  # noqa: E402

from kho_inspect import radix  # noqa: E402
from kho_inspect.radix import walk_radix_tree  # noqa: E402
from kho_inspect.ranges import Range, RangeSet  # noqa: E402

GiB = 1 << 30
PAGE = 4096
TOTAL = 512 * GiB
NODE_BASE = 0x4000_0000  # tree pages live at 1 GiB
DIRECT_MAP = 0xFFFF_8880_0000_0000  # x86_64 page_offset_base, for the naive Objects
RAM = RangeSet([Range(0, 2 * GiB), Range(4 * GiB, 2048 * GiB)])
VMCOREINFO = (
    b"OSRELEASE=7.3.0\nPAGESIZE=4096\nKERNELOFFSET=0\n"
    b"SYMBOL(swapper_pg_dir)=ffffffff82000000\n"
)
WALK_TARGET = 3.0  # walk / raw read, default
NAIVE_TARGET = 100.0  # naive / walk


Ranges = List[Tuple[int, int, int]]


class Workload(NamedTuple):
    name: str
    description: str
    build: Callable[[RadixTreeEncoder], Ranges]  # returns the expected ranges
    walk_target: float = WALK_TARGET  # walk / raw read


def add(enc: RadixTreeEncoder, ranges: Ranges, phys: int, count: int, order: int) -> None:
    """Preserve ``count`` blocks and note the range (none of them touch)."""
    enc.add_blocks(phys, count, order)
    ranges.append((phys, count << (12 + order), order))


def contiguous(enc: RadixTreeEncoder) -> Ranges:
    ranges: Ranges = []
    add(enc, ranges, 4 * GiB, TOTAL // PAGE, 0)
    return ranges


def fragmented(enc: RadixTreeEncoder) -> Ranges:
    # Runs of 1..1023 pages separated by holes of 1..1023 pages (uniform,
    # mean 2 MiB each), seed 1: what a long-running host's order-0 memfd
    # pages look like, one range per run. About 262k runs over ~1 TiB.
    ranges: Ranges = []
    rnd = random.Random(1)
    pfn, left = (4 * GiB) // PAGE, TOTAL // PAGE
    while left:
        count = min(left, rnd.randint(1, 1023))
        add(enc, ranges, pfn * PAGE, count, 0)
        pfn += count + rnd.randint(1, 1023)
        left -= count
    return ranges


def mixed(enc: RadixTreeEncoder) -> Ranges:
    # 256 GiB of 1 GiB hugetlb pages (order 18), 128 GiB of 2 MiB folios
    # (order 9) in 1 GiB groups with 1 GiB holes, 64 GiB of 64 KiB mTHP folios
    # (order 4) and 64 GiB of 4 KiB pages (order 0), each contiguous.
    # Added in ascending key order, as kho_preserve_* would for sorted input,
    # which is also the walk order of the ranges.
    ranges: Ranges = []
    add(enc, ranges, 1024 * GiB, 256, 18)
    for g in range(128):
        add(enc, ranges, (256 + 2 * g) * GiB, GiB >> 21, 9)
    add(enc, ranges, 128 * GiB, (64 * GiB) >> 16, 4)
    add(enc, ranges, 4 * GiB, (64 * GiB) >> 12, 0)
    return ranges


WORKLOADS = [
    Workload("contiguous", "512 GiB of order-0 pages, one run", contiguous),
    Workload("fragmented", "512 GiB of order-0 pages, runs and holes of 1-1023 pages",
             fragmented, walk_target=6.0),
    Workload("mixed", "256 GiB o18 + 128 GiB o9 (1 GiB groups) + 64 GiB o4 + 64 GiB o0",
             mixed),
]


def make_program(pages: Dict[int, bytes]) -> Program:
    """A synthetic x86_64 kernel whose RAM holds the tree pages.

    The pages are one contiguous block (the encoder's bump allocator), mapped
    physically for the walkers and at the direct map for the naive Objects.
    """
    addrs = sorted(pages)
    assert addrs == list(range(addrs[0], addrs[0] + PAGE * len(addrs), PAGE))
    blob = b"".join(pages[a] for a in addrs)

    def read_fn(address: int, count: int, offset: int, physical: bool) -> bytes:
        return blob[offset:offset + count]

    prog = Program(Platform(Architecture.X86_64,
                            PlatformFlags.IS_64_BIT | PlatformFlags.IS_LITTLE_ENDIAN))
    prog.set_linux_kernel_custom(VMCOREINFO, False)  # before any memory segment
    prog.add_memory_segment(addrs[0], len(blob), read_fn, True)
    prog.add_memory_segment(DIRECT_MAP + addrs[0], len(blob), read_fn, False)
    u64 = prog.int_type("unsigned long long", 8, False)
    ulong = prog.int_type("unsigned long", 8, False)
    types = {
        "kho_radix_node": prog.struct_type(
            "kho_radix_node", PAGE, (TypeMember(prog.array_type(u64, 512), "table", 0),)),
        "kho_radix_leaf": prog.struct_type(
            "kho_radix_leaf", PAGE, (TypeMember(prog.array_type(ulong, 512), "bitmap", 0),)),
    }

    def find_type(prog: Program, kinds, name: str, filename):
        if TypeKind.STRUCT in kinds:
            return types.get(name)
        return None

    prog.register_type_finder("kho-radix-bench", find_type, enable_index=0)
    return prog


class _Stop(Exception):
    pass


def naive_walk(prog: Program, root: int, max_leaves: int) -> Tuple[List[Tuple[int, int, int]], int]:
    """The walk a naive drgn script does (docs/kernel/radix.md#walk-order), on at most
    max_leaves leaves.

    Returns the ranges found and the number of leaves visited.
    """
    node_t = prog.type("struct kho_radix_node")
    leaf_t = prog.type("struct kho_radix_leaf")
    ranges: List[Tuple[int, int, int]] = []
    leaves = 0

    def add_key(key: int) -> None:
        order = 64 - 12 - (key.bit_length() - 1)
        phys = (key << (12 + order)) & (2**64 - 1)
        size = 1 << (12 + order)
        if ranges and ranges[-1][2] == order and ranges[-1][0] + ranges[-1][1] == phys:
            ranges[-1] = (ranges[-1][0], ranges[-1][1] + size, order)
        else:
            ranges.append((phys, size, order))

    def walk(table_phys: int, level: int, prefix: int) -> None:
        nonlocal leaves
        node = Object(prog, node_t, address=DIRECT_MAP + table_phys)
        for i in range(512):
            entry = node.table[i].value_()
            if not entry:
                continue
            key = prefix | (i << ((level - 1) * 9 + 15))
            if level > 1:
                walk(entry, level - 1, key)
                continue
            if leaves == max_leaves:
                raise _Stop
            leaves += 1
            leaf = Object(prog, leaf_t, address=DIRECT_MAP + entry)
            for bit in for_each_set_bit(leaf.bitmap, 32768):
                add_key(key | bit)

    with contextlib.suppress(_Stop):
        walk(root, 5, 0)
    return ranges, leaves


def best_of(fn: Callable[[], object], repeat: int, min_total: float = 0.25) -> float:
    """Best time of at least ``repeat`` runs, more until ``min_total`` seconds passed."""
    return best_of_each([fn], repeat, min_total)[0]


def best_of_each(fns: List[Callable[[], object]], repeat: int,
                 min_total: float = 0.25) -> List[float]:
    """Best time of each callable, timed in turn, round after round.

    At least ``repeat`` rounds, more until ``min_total`` seconds passed (at
    most 1000 rounds): a slow-down of the machine then hits all of them.
    """
    best = [float("inf")] * len(fns)
    total, rounds = 0.0, 0
    while rounds < repeat or (total < min_total and rounds < 1000):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            best[i] = min(best[i], elapsed)
            total += elapsed
        rounds += 1
    return best


def sanity_check() -> None:
    """Naive and fast walks agree on a small tree served by drgn."""
    enc = RadixTreeEncoder(node_base=NODE_BASE)
    for phys, order in [(0x4000_0000, 18), (0x2_4000_0000, 9), (0x1_0000_0000, 0),
                        (0x1_0000_1000, 0), (0x1_2345_6000, 0)]:
        enc.add(phys, order)
    pages = enc.pages()
    prog = make_program(pages)
    fast = walk_radix_tree(lambda p: prog.read(p, PAGE, True), enc.root, ram=RAM)
    naive, _ = naive_walk(prog, enc.root, 1 << 30)
    assert list(fast.ranges) == naive, (fast.ranges, naive)


def verdict(ok: bool) -> str:
    return "target met" if ok else "target MISSED"


def scanner_name() -> str:
    """The leaf scanner the walks use (see kho_inspect.radix)."""
    if radix._native is not None:
        return "native (kho_inspect/_radixscan.c)"
    if radix._NATIVE is not None:
        return "pure Python (KHO_INSPECT_PURE is set)"
    return "pure Python (kho_inspect._radixscan is not built)"


@contextlib.contextmanager
def pure_python() -> Iterator[None]:
    """Walk with the pure-Python scanner, as KHO_INSPECT_PURE=1 does."""
    saved, radix._native = radix._native, None
    try:
        yield
    finally:
        radix._native = saved


def breakdown(pages: Dict[int, bytes], enc: RadixTreeEncoder, ranges: Ranges,
              raw: Callable[[], None], walk: Callable[[], None],
              repeat: int) -> Dict[str, float]:
    """Best times (s) of the parts of the walk of a tree with many ranges.

    * ``tuples``: building the result tuples from ready-made ints (``zip``);
    * ``fresh``: building them with their ints, from the triples packed as
      u64s (``struct.iter_unpack``): the output cost of a decoder that would
      find the runs for free;
    * ``scan``: the native scanner alone on every level-1 table's leaves,
      pages already read, its output dropped: the runs found, their tuples
      built and freed (runs are not joined across tables; absent when it is
      not built);
    * ``pure``: the walk with the pure-Python scanner (``KHO_INSPECT_PURE=1``).
    """
    starts, sizes = [r[0] for r in ranges], [r[1] for r in ranges]
    tables = level1_tables(pages, enc.root)

    def tuples() -> None:
        list(zip(starts, sizes, itertools.repeat(0)))

    packed = b"".join(struct.pack("<QQQ", *r) for r in ranges)

    def fresh() -> None:
        list(struct.iter_unpack("<QQQ", packed))

    def scan() -> None:
        out: Ranges = []
        for prefix, leaves in tables:
            shift = 12 + 53 - prefix.bit_length()  # PAGE_SHIFT + order
            radix._NATIVE.scan_leaves(leaves, PAGE, 512, (prefix << shift) - (1 << 64), -1, out,
                                      shift, shift - 12, False)

    def pure() -> None:
        with pure_python():
            walk()

    names = ["raw", "walk", "tuples", "fresh", "pure"]
    fns = [raw, walk, tuples, fresh, pure]
    if radix._NATIVE is not None:
        names.append("scan")
        fns.append(scan)
    best = dict(zip(names, best_of_each(fns, repeat)))
    best["partial"] = sum(page not in (bytes(PAGE), b"\xff" * PAGE)
                          for _, leaves in tables for _, _, page in leaves)
    return best


def level1_tables(pages: Dict[int, bytes], root: int
                  ) -> List[Tuple[int, List[Tuple[int, int, bytes]]]]:
    """Each level-1 table's key prefix and ``(index, pointer, page)`` leaves,
    in walk order (4 KiB pages: 512 entries, 5 table levels)."""
    out: List[Tuple[int, List[Tuple[int, int, bytes]]]] = []

    def visit(phys: int, level: int, prefix: int) -> None:
        entries = [(i, e) for i, e in enumerate(struct.unpack("<512Q", pages[phys])) if e]
        if level == 1:
            if prefix:  # the mixed-order leaves under prefix 0 take another path
                out.append((prefix, [(i, e, pages[e]) for i, e in entries]))
            return
        for i, entry in entries:
            visit(entry, level - 1, prefix | (i << ((level - 2) * 9 + 24)))

    visit(root, 5, 0)
    return out


def run(workload: Workload, repeat: int, naive_leaves: int,
        naive_repeat: int, with_breakdown: bool = False) -> Dict[str, object]:
    t0 = time.perf_counter()
    enc = RadixTreeEncoder(node_base=NODE_BASE)
    expected = workload.build(enc)
    pages = enc.pages()
    build_s = time.perf_counter() - t0
    prog = make_program(pages)

    def read(phys: int) -> bytes:
        return prog.read(phys, PAGE, True)

    result = walk_radix_tree(read, enc.root, ram=RAM)
    assert list(result.ranges) == expected, f"{workload.name}: the walk got the ranges wrong"
    assert result.total_bytes == TOTAL and sorted(result.tree_pages) == sorted(pages)
    tree_pages = result.tree_pages
    starts, sizes = [r[0] for r in expected], [r[1] for r in expected]

    def raw() -> None:
        for phys in tree_pages:  # the pages the walk reads, in its order
            read(phys)

    def walk() -> None:
        walk_radix_tree(read, enc.root, ram=RAM)

    def output() -> None:
        list(zip(starts, sizes, itertools.repeat(0)))

    raw_s, walk_s = best_of_each([raw, walk], repeat)
    output_s = best_of(output, repeat)
    naive_prefix_s, leaves_done = float("inf"), 0
    for _ in range(naive_repeat):
        t0 = time.perf_counter()
        _, leaves_done = naive_walk(prog, enc.root, naive_leaves)
        naive_prefix_s = min(naive_prefix_s, time.perf_counter() - t0)
    leaves = len(enc.leaves)
    naive_s = naive_prefix_s / leaves_done * leaves
    parts = None
    if with_breakdown and len(expected) > 1000:
        parts = breakdown(pages, enc, expected, raw, walk, repeat)
    return {
        "name": workload.name,
        "description": workload.description,
        "pages": len(tree_pages),
        "leaves": leaves,
        "ranges": len(result.ranges),
        "build_s": build_s,
        "raw_ms": raw_s * 1e3,
        "walk_ms": walk_s * 1e3,
        "output_ms": output_s * 1e3,
        "naive_s": naive_s,
        "naive_prefix": (leaves_done, naive_prefix_s),
        "walk_raw": walk_s / raw_s,
        "walk_target": workload.walk_target,
        "naive_walk": naive_s / walk_s,
        "breakdown": parts,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--repeat", type=int, default=5,
                        help="best of at least N timings, more until 0.25 s (default 5)")
    parser.add_argument("--naive-leaves", type=int, default=32,
                        help="leaves the naive walk visits before scaling (default 32)")
    parser.add_argument("--naive-repeat", type=int, default=3,
                        help="best of N timings of the naive prefix (default 3)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the C-level parts of decoding many ranges")
    args = parser.parse_args()

    sanity_check()
    print("sanity: the naive drgn walk and walk_radix_tree agree on a 5-block tree")
    rows = [run(w, args.repeat, args.naive_leaves, args.naive_repeat, args.breakdown)
            for w in WORKLOADS]
    print("checked: on every workload the walk returns exactly the ranges it was built from\n")

    print("KHO radix walk, 512 GiB preserved, pages served by a synthetic drgn Program")
    print(f"leaf scanner: {scanner_name()}")
    print(f"(raw read and walk: best of >= {args.repeat} alternating rounds; the naive walk "
          f"is timed on the first {args.naive_leaves} leaves in walk order, best of "
          f"{args.naive_repeat}, and scaled per leaf to the whole tree)\n")
    header = (f"{'workload':<11} {'pages':>6} {'leaves':>6} {'ranges':>7} {'raw ms':>8} "
              f"{'walk ms':>8} {'naive s':>9} {'walk/raw':>9} {'naive/walk':>11}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['name']:<11} {r['pages']:>6} {r['leaves']:>6} {r['ranges']:>7} "
              f"{r['raw_ms']:>8.2f} {r['walk_ms']:>8.2f} {r['naive_s']:>9.1f} "
              f"{r['walk_raw']:>8.2f}x {r['naive_walk']:>10.0f}x")
    print()
    for r in rows:
        done, secs = r["naive_prefix"]
        print(f"{r['name']}: {r['description']}; tree built in {r['build_s']:.1f} s; "
              f"naive prefix {done} leaves in {secs:.2f} s")
        print(f"  walk cost: {r['walk_ms'] * 1e3 / r['pages']:.2f} us per tree page, "
              f"{r['walk_ms'] * 1e3 / r['ranges']:.2f} us per range; output floor "
              f"({r['ranges']} tuples built by zip): {r['output_ms']:.2f} ms = "
              f"{r['output_ms'] / r['raw_ms']:.2f}x raw")
        print(f"  (a) walk / raw read   = {r['walk_raw']:.2f}x "
              f"(target <= {r['walk_target']:.0f}x): "
              f"{verdict(r['walk_raw'] <= r['walk_target'])}")
        print(f"  (b) naive / walk      = {r['naive_walk']:.0f}x "
              f"(target >= {NAIVE_TARGET:.0f}x): {verdict(r['naive_walk'] >= NAIVE_TARGET)}")
        if r["breakdown"]:
            print_breakdown(r)
    return 0


def print_breakdown(r: Dict[str, object]) -> None:
    b = r["breakdown"]
    ranges = r["ranges"]
    print(f"  breakdown (best of >= 5 alternating rounds; {b['partial']} partial leaves):")
    rows = [
        ("raw read", b["raw"]),
        (f"{r['walk_target']:.0f}x budget", r["walk_target"] * b["raw"]),
        ("build the result tuples (zip)", b["tuples"]),
        ("... with fresh ints (unpack)", b["fresh"]),
        ("native scanner alone", b.get("scan")),
        ("walk, pure-Python scanner", b["pure"]),
        ("walk_radix_tree", b["walk"]),
    ]
    for name, secs in rows:
        if secs is None:
            print(f"    {name:<30} (not built)")
            continue
        print(f"    {name:<30} {secs * 1e3:8.1f} ms {secs / b['raw']:6.1f}x raw "
              f"{secs * 1e9 / ranges:7.0f} ns/range")


if __name__ == "__main__":
    sys.exit(main())
