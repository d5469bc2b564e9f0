# SPDX-License-Identifier: LGPL-2.1-or-later
"""KHO FDT blobs: decode what the kernel writes, refuse what it would refuse."""

import struct

import libfdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synth.kho import (
    PAGE_SIZE,
    folio_list_pages,
    kexec_metadata_blob,
    kho_root_fdt,
    kho_test_blob,
    kho_vmalloc_desc,
    luo_blob,
    memblock_blob,
    page_reader,
    vmalloc_chunk_pages,
)

from kho_inspect.errors import CorruptTreeError
from kho_inspect.fdt import (
    KHO_TEST_MAGIC,
    decode_blob,
    decode_kexec_metadata,
    decode_kho_root,
    decode_kho_test,
    decode_kho_vmalloc,
    decode_luo,
    decode_memblock,
    dts_lines,
    fdt_totalsize,
    hexdump,
    parse_fdt,
    prop_u64,
    property_value,
    read_vmalloc,
    read_vmalloc_bytes,
)

MEM_MAP = 0x1_2345_6000
SUBTREES = [("kexec-metadata", 0x7000, 73), ("memblock", 0x8000, 300), ("LUO", 0x9000, 32)]


# --- root FDT ---------------------------------------------------------------


def test_root_v4_decodes_like_the_kernel_reads_it():
    root = decode_kho_root(kho_root_fdt(MEM_MAP, SUBTREES))
    assert (root.compatible, root.version, root.mem_map_phys) == ("kho-v4", 4, MEM_MAP)
    assert not root.problems
    # fdt_add_subnode() inserts before existing subnodes: newest first.
    assert [s.name for s in root.subtrees] == ["LUO", "memblock", "kexec-metadata"]
    meta = root.subtree("kexec-metadata")
    assert (meta.phys, meta.size, meta.data_property) == (0x7000, 73, "preserved-data")


def test_integer_properties_are_native_endian_not_fdt_cells():
    blob = kho_root_fdt(MEM_MAP)
    fdt = libfdt.Fdt(blob)
    big_endian_reading = fdt.getprop(0, "preserved-memory-map").as_uint64()
    assert big_endian_reading != MEM_MAP
    assert decode_kho_root(blob).mem_map_phys == MEM_MAP
    assert decode_kho_root(kho_root_fdt(MEM_MAP, byteorder="big"), "big").mem_map_phys == MEM_MAP


@pytest.mark.parametrize("compatible,version", [("kho-v2", 2), ("kho-v3", 3), ("kho-v17", 17)])
def test_any_kho_version_is_accepted_and_reported(compatible, version):
    root = decode_kho_root(kho_root_fdt(MEM_MAP, SUBTREES, compatible=compatible))
    assert root.version == version


def test_kho_v1_subnodes_carry_fdt_and_no_blob_size():
    blob = kho_root_fdt(MEM_MAP, [("memblock", 0x8000, None)], "kho-v1", data_prop="fdt")
    sub = decode_kho_root(blob).subtree("memblock")
    assert (sub.phys, sub.size, sub.data_property, sub.problems) == (0x8000, None, "fdt", ())


def test_root_problems_are_reported_not_raised():
    root = decode_kho_root(kho_root_fdt(None, SUBTREES))
    assert root.mem_map_phys is None
    assert "no preserved-memory-map" in root.problems[0]
    fdt = libfdt.Fdt(kho_root_fdt(MEM_MAP, SUBTREES))
    fdt.resize(PAGE_SIZE)
    fdt.setprop(0, "preserved-memory-map", b"\1\2\3\4")
    fdt.setprop(fdt.subnode_offset(0, "LUO"), "blob-size", b"\1\2")
    fdt.delprop(fdt.subnode_offset(0, "memblock"), "preserved-data")
    root = decode_kho_root(bytes(fdt.as_bytearray()))
    assert root.problems == (
        "Property preserved-memory-map of FDT node / has 4 bytes, not 8: the blob does not "
        "follow the KHO ABI.",
    )
    assert "has 2 bytes, not 8" in root.subtree("LUO").problems[0]
    assert "neither preserved-data nor fdt" in root.subtree("memblock").problems[0]


def _corrupt(blob: bytes, offset: int, value: bytes) -> bytes:
    return blob[:offset] + value + blob[offset + len(value):]


@pytest.mark.parametrize("make,message", [
    (lambda b: b"\0" * 64, "does not start with an FDT header"),
    (lambda b: b[:20], "does not start with an FDT header"),
    (lambda b: b[:-8], "is truncated"),
    (lambda b: _corrupt(b, 4, struct.pack(">I", 1 << 30)), "claims an FDT total size"),
    (lambda b: _corrupt(b, 8, struct.pack(">I", 0xFFFF)), "is not a valid FDT (libfdt:"),
    (lambda b: kho_root_fdt(MEM_MAP, compatible="luo-v1"), "compatible 'luo-v1', not kho-vN"),
])
def test_broken_root_fdts_raise_one_sentence(make, message):
    with pytest.raises(CorruptTreeError) as e:
        decode_kho_root(make(kho_root_fdt(MEM_MAP, SUBTREES)))
    text = str(e.value)
    assert message in text and text.endswith(".") and text.count(". ") == 0


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_damage_never_escapes_as_anything_but_corrupt_tree(data):
    blob = bytearray(kho_root_fdt(MEM_MAP, SUBTREES))
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    try:
        root = decode_kho_root(bytes(blob))
    except CorruptTreeError:
        return
    assert root.version >= 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9_-]{0,14}", fullmatch=True),
                          st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
                max_size=12, unique_by=lambda t: t[0]),
       st.sampled_from(["little", "big"]))
def test_root_round_trips(subtrees, byteorder):
    root = decode_kho_root(kho_root_fdt(MEM_MAP, subtrees, byteorder=byteorder), byteorder)
    got = {(s.name, s.phys, s.size) for s in root.subtrees}
    assert got == set(subtrees)


# --- generic helpers --------------------------------------------------------


def test_generic_tree_dts_and_property_guesses():
    tree = parse_fdt(kho_root_fdt(MEM_MAP, SUBTREES[:1]))
    assert [n.path for n in tree.walk()] == ["/", "/kexec-metadata"]
    assert prop_u64(tree.child("kexec-metadata"), "blob-size") == 73
    assert dts_lines(tree)[:3] == [
        "/ {",
        '\tcompatible = "kho-v4";',
        "\tpreserved-memory-map = <0x123456000>;  /* native u64 */",
    ]
    assert property_value(b"") is True
    assert property_value(b"a\0bc\0") == ["a", "bc"]
    assert property_value(struct.pack("<I", 7)) == 7
    assert property_value(b"\1\2\3") == {"hex": "010203"}
    assert fdt_totalsize(kho_root_fdt(MEM_MAP)) == len(kho_root_fdt(MEM_MAP))


def test_hexdump_matches_hexdump_dash_c():
    assert hexdump(bytes(range(0x41, 0x53)), base=0x10) == [
        "00000010  41 42 43 44 45 46 47 48  49 4a 4b 4c 4d 4e 4f 50  |ABCDEFGHIJKLMNOP|",
        "00000020  51 52                                             |QR|",
    ]


# --- kexec-metadata ---------------------------------------------------------


def test_kexec_metadata_layout_is_packed_73_bytes():
    blob = kexec_metadata_blob("7.3.4-kho", 2)
    assert len(blob) == 73 and struct.unpack_from("<I", blob, 69)[0] == 2
    meta = decode_kexec_metadata(blob)
    assert (meta.version, meta.previous_release, meta.kexec_count) == (1, "7.3.4-kho", 2)


def test_kexec_metadata_unknown_version_and_short_blobs():
    meta = decode_kexec_metadata(kexec_metadata_blob("x", 1, version=2))
    assert (meta.version, meta.kexec_count) == (2, None)
    assert "version 2 is unknown" in meta.problems[0]
    with pytest.raises(CorruptTreeError, match="too few for its version field"):
        decode_kexec_metadata(b"\1\0")
    with pytest.raises(CorruptTreeError, match="fewer than the 73 of version 1"):
        decode_kexec_metadata(kexec_metadata_blob("x", 1)[:72])


# --- memblock ---------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9]{0,14}", fullmatch=True),
                          st.integers(0, 2**52 - 1).map(lambda x: x << 12),
                          st.integers(1, 2**40).map(lambda x: x << 12)),
                max_size=8, unique_by=lambda t: t[0]))
def test_memblock_round_trips(regions):
    blob = decode_memblock(memblock_blob(regions))
    assert blob.compatible == "memblock-v1"
    assert [(e.name, e.start, e.size) for e in blob.entries] == regions
    assert all(e.compatible == "reserve-mem-v1" and not e.problems for e in blob.entries)


def test_memblock_bad_entries_and_bad_root():
    fdt = libfdt.Fdt(memblock_blob([("foo", 0x4000_0000, 0x10_0000), ("bar", 0, 0x1000)]))
    fdt.resize(PAGE_SIZE)
    fdt.setprop(fdt.subnode_offset(0, "foo"), "start", b"\0" * 4)
    fdt.setprop_str(fdt.subnode_offset(0, "bar"), "compatible", "reserve-mem-v2")
    entries = {e.name: e for e in decode_memblock(bytes(fdt.as_bytearray())).entries}
    assert entries["foo"].start is None and "has 4 bytes, not 8" in entries["foo"].problems[0]
    assert "will not revive it" in entries["bar"].problems[0]
    with pytest.raises(CorruptTreeError, match="not memblock-v1"):
        decode_memblock(memblock_blob([], compatible="memblock-v2"))


# --- LUO --------------------------------------------------------------------


def test_luo_ser():
    luo = decode_luo(luo_blob(3, 0x1000, 0x2000))
    assert (luo.compatible, luo.liveupdate_num, luo.sessions_pa, luo.flbs_pa) == (
        "luo-v5", 3, 0x1000, 0x2000)
    assert "not luo-v5" in decode_luo(luo_blob(1, 2, 3, compatible="luo-v6")).problems[0]
    with pytest.raises(CorruptTreeError, match="fewer than the 32 of struct luo_ser"):
        decode_luo(luo_blob(1, 2, 3)[:31])


# --- kho_vmalloc chains -----------------------------------------------------


def _blocks(n: int, base: int = 0x1_0000_0000, stride: int = PAGE_SIZE):
    return [base + i * stride for i in range(n)]


@pytest.mark.parametrize("nblocks,order", [(1, 0), (510, 0), (511, 0), (512, 0), (1100, 0),
                                           (600, 2)])
def test_vmalloc_chain_round_trips(nblocks, order):
    blocks = _blocks(nblocks, stride=PAGE_SIZE << order)
    chunks = _blocks(4, base=0x5000_0000)
    pages = vmalloc_chunk_pages(blocks, chunks)
    desc = decode_kho_vmalloc(kho_vmalloc_desc(chunks[0], nblocks << order, 0x3, order))
    assert desc.flag_names == ("ALLOC", "HUGE_VMAP")
    area = read_vmalloc(desc, page_reader(pages))
    assert list(area.blocks) == blocks
    # A full chunk is always followed by a new one (kho_preserve_vmalloc()).
    assert len(area.chunks) == nblocks // 511 + 1


def _chain_error(pages, desc) -> str:
    with pytest.raises(CorruptTreeError) as e:
        read_vmalloc(decode_kho_vmalloc(desc), page_reader(pages))
    return str(e.value)


def test_vmalloc_chain_corruption():
    chunks = [0x5000_0000, 0x5000_1000]
    pages = vmalloc_chunk_pages(_blocks(600), chunks)
    loop = dict(pages)
    loop[chunks[1]] = struct.pack("<Q", chunks[0]) + pages[chunks[1]][8:]
    assert "was already visited (the list loops)" in _chain_error(
        loop, kho_vmalloc_desc(chunks[0], 600))
    assert "chunk 0 at 0x50000010 is not page aligned" in _chain_error(
        pages, kho_vmalloc_desc(chunks[0] + 0x10, 600))
    assert "chunk 1 at 0x50001000 cannot be read" in _chain_error(
        {chunks[0]: pages[chunks[0]]}, kho_vmalloc_desc(chunks[0], 600))
    assert "list 600 blocks of 1 pages but total_pages is 601" in _chain_error(
        pages, kho_vmalloc_desc(chunks[0], 601))
    assert "is more than the 1 chunks" in _chain_error(pages, kho_vmalloc_desc(chunks[0], 10))
    assert "has no first chunk" in _chain_error(pages, kho_vmalloc_desc(0, 0))
    unaligned = {chunks[0]: struct.pack("<QQ", 0, 0x1234) + bytes(PAGE_SIZE - 16)}
    assert "unaligned page address 0x1234" in _chain_error(
        unaligned, kho_vmalloc_desc(chunks[0], 1))
    with pytest.raises(CorruptTreeError, match="has 15 bytes, not 16"):
        decode_kho_vmalloc(bytes(15))


def test_vmalloc_bytes_reads_only_what_is_asked():
    blocks = _blocks(3)
    pages = {b: bytes([i + 1]) * PAGE_SIZE for i, b in enumerate(blocks)}
    pages.update(vmalloc_chunk_pages(blocks, [0x5000_0000]))
    area = read_vmalloc(decode_kho_vmalloc(kho_vmalloc_desc(0x5000_0000, 3)),
                        page_reader(pages))
    read = []

    def reader(phys):
        read.append(phys)
        return pages[phys]

    assert read_vmalloc_bytes(area, reader, PAGE_SIZE + 1) == b"\1" * PAGE_SIZE + b"\2"
    assert read == blocks[:2]
    with pytest.raises(CorruptTreeError, match="asked of a preserved vmalloc area of 3 pages"):
        read_vmalloc_bytes(area, reader, 3 * PAGE_SIZE + 1)


# --- test_kho ---------------------------------------------------------------


def _test_kho(nfolios: int):
    folios = [(0x2_0000_0000 + (i << 22), i % 11) for i in range(nfolios)]
    npages = -(-nfolios * 8 // PAGE_SIZE)
    desc, pages = folio_list_pages(folios, _blocks(npages, base=0x6000_0000),
                                   _blocks(2, base=0x7000_0000))
    return folios, kho_test_blob(nfolios, desc, 0xBEEF), pages


def test_kho_test_folio_list_behind_the_vmalloc_chunks():
    folios, blob, pages = _test_kho(1000)
    test = decode_kho_test(blob, page_reader(pages))
    assert (test.magic_ok, test.nr_folios, test.csum, test.problems) == (True, 1000, 0xBEEF, ())
    assert [(f.phys, f.order) for f in test.folios] == folios
    assert test.folios_info.total_pages == 2 and len(test.area.blocks) == 2
    assert test.to_json()["folio_bytes"] == sum(PAGE_SIZE << o for _, o in folios)
    assert decode_kho_test(blob).folios is None


def test_kho_test_problems():
    _, blob, _ = _test_kho(3)
    fdt = libfdt.Fdt(blob)
    fdt.resize(PAGE_SIZE)
    fdt.setprop(0, "magic", struct.pack("<I", 1))
    fdt.setprop(fdt.subnode_offset(0, "data"), "csum", b"\0")
    test = decode_kho_test(bytes(fdt.as_bytearray()))
    assert test.problems[0] == f"magic is 0x1, not {KHO_TEST_MAGIC:#x}: test_kho refuses it."
    assert "csum of FDT node /data has 1 bytes, not 4" in test.problems[1]
    fdt.del_node(fdt.subnode_offset(0, "data"))
    assert "no /data node" in decode_kho_test(bytes(fdt.as_bytearray())).problems[-1]


# --- dispatch ---------------------------------------------------------------


def test_decode_blob_dispatches_by_compatible_then_name():
    _, test_blob, pages = _test_kho(5)
    cases = {
        "kexec-metadata": (kexec_metadata_blob("7.3.4", 1), "kexec-metadata", None),
        "memblock": (memblock_blob([("foo", 0x1000, 0x1000)]), "memblock", "memblock-v1"),
        "LUO": (luo_blob(1, 2, 3), "luo", "luo-v5"),
        "kho_test": (test_blob, "kho-test", "kho-test-v1"),
        "renamed_test": (test_blob, "kho-test", "kho-test-v1"),
        "someone": (memblock_blob([], compatible="their-v1"), "fdt", "their-v1"),
        "blob": (b"\xde\xad\xbe\xef", "raw", None),
    }
    for name, (data, kind, compat) in cases.items():
        blob = decode_blob(name, data, page_reader(pages))
        assert (blob.kind, blob.compatible, blob.error) == (kind, compat, None), name
    assert decode_blob("blob", b"\xde\xad\xbe\xef").to_json()["decoded"] == {
        "hexdump": ["00000000  de ad be ef" + " " * 39 + "|....|"]}
    fdt_json = decode_blob("someone", cases["someone"][0]).to_json()["decoded"]
    assert fdt_json == {"path": "/", "properties": {"compatible": "their-v1"}, "children": []}


def test_decode_blob_falls_back_with_the_error():
    _, test_blob, pages = _test_kho(5)
    blob = decode_blob("kho_test", test_blob, page_reader({}))
    assert blob.kind == "fdt" and blob.compatible == "kho-test-v1"
    assert "kho_vmalloc chunk 0 at 0x70000000 cannot be read" in blob.error
    short = decode_blob("LUO", b"luo-v5\0\0")
    assert (short.kind, short.error) == ("raw", "The LUO blob has 8 bytes, fewer than the 32 of "
                                                "struct luo_ser.")
