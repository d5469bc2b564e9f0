# SPDX-License-Identifier: LGPL-2.1-or-later
"""
KHO FDT blobs
-------------

The ``kho_inspect.fdt`` module decodes the Flattened Device Tree blobs and raw
structures that a kernel hands over through Kexec HandOver. FDTs are read with
pylibfdt (``libfdt``), never with a hand-written parser; the module is pure
(bytes in, plain data out) and never imports drgn.

Every KHO integer property is a **native-endian** value written with
``fdt_property(fdt, name, &val, sizeof(val))``, not an FDT big-endian cell, so
the helpers here take the target's ``byteorder``.

The blobs known to Linux 7.3 (include/linux/kho/abi/):

* the root FDT (``compatible = "kho-v4"``; any ``kho-vN`` is accepted and its
  version reported): ``preserved-memory-map`` (u64 phys of the radix tree
  root) and one subnode per ``kho_add_subtree()`` with ``preserved-data`` (u64
  phys) and ``blob-size`` (u64; since kho-v3, Linux kernel commit
  85e41392820f ("kho: persist blob size in KHO FDT") (in v7.1)). kho-v1
  subnodes carried the sub-FDT address in a property named ``fdt`` instead,
  until Linux kernel commit 3f2ad90060f6 ("kho: adopt radix tree for preserved
  memory tracking") (in v7.1); see docs/kernel/kho.md#abi-versions;
* ``kexec-metadata``: a packed ``struct kho_kexec_metadata``;
* ``memblock``: the ``reserve_mem=`` FDT (``memblock-v1`` with
  ``reserve-mem-v1`` children);
* ``LUO``: a packed ``struct luo_ser``;
* ``kho_test``: lib/test_kho.c's FDT (``kho-test-v1``), whose folio list sits
  in a vmalloc area preserved as a ``struct kho_vmalloc`` chunk chain, read
  through a ``read_page(phys)`` callable.

Any other blob is shown as a generic FDT tree if it is one, else as a hex
dump. Structural damage raises :class:`~kho_inspect.errors.CorruptTreeError`
with one sentence; a bad property inside an otherwise readable blob is
reported in the decoded data's ``problems`` instead, so the rest stays visible.
"""

import re
import string
import struct
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import libfdt

from kho_inspect.errors import CorruptTreeError
from kho_inspect.frozen import frozen
from kho_inspect.radix import ReadPage

__all__ = (
    "KHO_ROOT_COMPATIBLE_RE",
    "FdtNode",
    "parse_fdt",
    "fdt_totalsize",
    "looks_like_fdt",
    "prop_u64",
    "prop_u32",
    "prop_string",
    "prop_strings",
    "property_value",
    "dts_lines",
    "hexdump",
    "KhoSubtree",
    "KhoRoot",
    "decode_kho_root",
    "KexecMetadata",
    "decode_kexec_metadata",
    "ReserveMemEntry",
    "MemblockBlob",
    "decode_memblock",
    "LuoSer",
    "decode_luo",
    "KhoVmalloc",
    "VmallocArea",
    "decode_kho_vmalloc",
    "read_vmalloc",
    "read_vmalloc_bytes",
    "TestFolio",
    "KhoTestBlob",
    "decode_kho_test",
    "DecodedBlob",
    "decode_blob",
    "decode_generic",
)

FDT_MAGIC = 0xD00DFEED
FDT_HEADER_SIZE = 40
# Refuse absurd blobs before copying them: the root FDT is one page and the
# largest 7.3 blob (kho_test) is nr_folios * 8 + PAGE_SIZE.
MAX_BLOB_SIZE = 64 << 20

KHO_ROOT_COMPATIBLE_RE = re.compile(r"kho-v(\d+)\Z")
"""The root node's ``compatible``: ``KHO_FDT_COMPATIBLE``, "kho-v4" in 7.3."""

# include/linux/kho/abi/kexec_handover.h
PROP_MEMORY_MAP = "preserved-memory-map"
PROP_SUB_DATA = "preserved-data"
PROP_SUB_SIZE = "blob-size"
# kho-v1: v6.16 until Linux kernel commit 3f2ad90060f6 ("kho: adopt radix tree
# for preserved memory tracking") (in v7.1).
PROP_SUB_FDT_V1 = "fdt"

# include/linux/kho/abi/kexec_metadata.h
KEXEC_METADATA_NAME = "kexec-metadata"
KEXEC_METADATA_VERSION = 1
_KEXEC_METADATA_V1 = "I65sI"  # u32 version; char previous_release[65]; u32 kexec_count

# include/linux/kho/abi/memblock.h
MEMBLOCK_COMPATIBLE = "memblock-v1"
RESERVE_MEM_COMPATIBLE = "reserve-mem-v1"

# include/linux/kho/abi/luo.h
LUO_NAME = "LUO"
LUO_COMPATIBLE = "luo-v5"
_LUO_SER = "8sQQQ"  # char compatible[8]; u64 liveupdate_num, sessions_pa, flbs_pa

# lib/test_kho.c
KHO_TEST_COMPATIBLE = "kho-test-v1"
KHO_TEST_MAGIC = 0x4B484F21  # "KHO!"
_KHO_VMALLOC = "QIHH"  # u64 first; unsigned int total_pages; u16 flags; u16 order
KHO_VMALLOC_FLAGS = {"ALLOC": 0x1, "HUGE_VMAP": 0x2}

_PRINTABLE = set(string.printable.encode()) - set(b"\x0b\x0c")


def _fmt(byteorder: str, layout: str) -> str:
    return ("<" if byteorder == "little" else ">") + layout


# --- generic FDT ------------------------------------------------------------


@frozen
class FdtNode:
    """One node of a flattened device tree, with raw property bytes."""

    path: str
    name: str
    properties: Mapping[str, bytes]
    children: Tuple["FdtNode", ...] = ()

    def child(self, name: str) -> Optional["FdtNode"]:
        """The direct child called ``name``, or ``None``."""
        return next((c for c in self.children if c.name == name), None)

    def walk(self) -> List["FdtNode"]:
        """This node and all its descendants, depth first."""
        out = [self]
        for c in self.children:
            out.extend(c.walk())
        return out

    def to_json(self, byteorder: str = "little") -> Dict[str, Any]:
        return {
            "path": self.path,
            "properties": {
                k: property_value(v, byteorder) for k, v in self.properties.items()
            },
            "children": [c.to_json(byteorder) for c in self.children],
        }


def looks_like_fdt(data: bytes) -> bool:
    """Whether ``data`` starts with the FDT magic (big-endian 0xd00dfeed)."""
    return len(data) >= 4 and struct.unpack_from(">I", data)[0] == FDT_MAGIC


def fdt_totalsize(header: bytes, what: str = "The blob") -> int:
    """``fdt_totalsize()`` of the FDT header at the start of ``header``.

    :raises CorruptTreeError: no FDT magic, or an impossible size.
    """
    if len(header) < FDT_HEADER_SIZE or not looks_like_fdt(header):
        raise CorruptTreeError(
            f"{what} does not start with an FDT header (magic 0xd00dfeed): it is not an FDT "
            "or the memory was reused."
        )
    size = struct.unpack_from(">I", header, 4)[0]
    if not FDT_HEADER_SIZE <= size <= MAX_BLOB_SIZE:
        raise CorruptTreeError(
            f"{what} claims an FDT total size of {size} bytes, outside "
            f"[{FDT_HEADER_SIZE}, {MAX_BLOB_SIZE}]: the header is corrupt."
        )
    return size


def parse_fdt(data: bytes, what: str = "The blob") -> FdtNode:
    """Check ``data`` with ``fdt_check_full()`` and return its root node.

    Bytes past ``fdt_totalsize()`` are ignored (blobs are read in pages).

    :param what: how to name the blob in error messages.
    :raises CorruptTreeError: ``data`` is not a complete, valid FDT.
    """
    size = fdt_totalsize(data, what)
    if size > len(data):
        raise CorruptTreeError(
            f"{what} is truncated: its FDT header says {size} bytes but only {len(data)} "
            "were read."
        )
    buf = bytearray(data[:size])
    err = libfdt.fdt_check_full(buf, size)
    if err:
        raise CorruptTreeError(
            f"{what} is not a valid FDT (libfdt: {libfdt.fdt_strerror(err)}): it is corrupt "
            "or the memory was reused."
        )
    try:
        return _node(libfdt.Fdt(buf), 0, "/", "")
    except (libfdt.FdtException, SystemError, UnicodeError) as e:
        # pylibfdt decodes names as UTF-8, which fdt_check_full() does not demand.
        raise CorruptTreeError(
            f"{what} has an unreadable node or property name ({e.__class__.__name__}): it is "
            "corrupt or the memory was reused."
        ) from e


def _node(fdt: libfdt.Fdt, offset: int, path: str, name: str) -> FdtNode:
    props: Dict[str, bytes] = {}
    poff = fdt.first_property_offset(offset, libfdt.QUIET_NOTFOUND)
    while poff >= 0:
        prop = fdt.get_property_by_offset(poff)
        props[prop.name] = bytes(prop)
        poff = fdt.next_property_offset(poff, libfdt.QUIET_NOTFOUND)
    children = []
    coff = fdt.first_subnode(offset, libfdt.QUIET_NOTFOUND)
    while coff >= 0:
        cname = fdt.get_name(coff)
        children.append(_node(fdt, coff, path.rstrip("/") + "/" + cname, cname))
        coff = fdt.next_subnode(coff, libfdt.QUIET_NOTFOUND)
    return FdtNode(path, name, props, tuple(children))


def _sized(node: FdtNode, name: str, size: int) -> Optional[bytes]:
    raw = node.properties.get(name)
    if raw is None:
        return None
    if len(raw) != size:
        raise CorruptTreeError(
            f"Property {name} of FDT node {node.path} has {len(raw)} bytes, not {size}: the "
            "blob does not follow the KHO ABI."
        )
    return raw


def prop_u64(node: FdtNode, name: str, byteorder: str = "little") -> Optional[int]:
    """A native-endian u64 property (the KHO convention), ``None`` if absent.

    :raises CorruptTreeError: the property is not 8 bytes long.
    """
    raw = _sized(node, name, 8)
    return None if raw is None else int.from_bytes(raw, byteorder)  # type: ignore[arg-type]


def prop_u32(node: FdtNode, name: str, byteorder: str = "little") -> Optional[int]:
    """A native-endian u32 property (``unsigned int``), ``None`` if absent.

    :raises CorruptTreeError: the property is not 4 bytes long.
    """
    raw = _sized(node, name, 4)
    return None if raw is None else int.from_bytes(raw, byteorder)  # type: ignore[arg-type]


def _strings(raw: bytes) -> Optional[List[str]]:
    if not raw or raw[-1] != 0:
        return None
    parts = raw[:-1].split(b"\0")
    if any(not p or not set(p) <= _PRINTABLE for p in parts):
        return None
    return [p.decode("ascii") for p in parts]


def prop_strings(node: FdtNode, name: str) -> Optional[List[str]]:
    """A string-list property (``"a\\0b\\0"``), ``None`` if absent.

    :raises CorruptTreeError: the property is not NUL-terminated printable text.
    """
    raw = node.properties.get(name)
    if raw is None:
        return None
    parts = _strings(raw)
    if parts is None:
        raise CorruptTreeError(
            f"Property {name} of FDT node {node.path} is not a NUL-terminated string: the "
            "blob is corrupt."
        )
    return parts


def prop_string(node: FdtNode, name: str) -> Optional[str]:
    """The first string of a string property, ``None`` if absent."""
    parts = prop_strings(node, name)
    return None if parts is None else parts[0]


def property_value(raw: bytes, byteorder: str = "little") -> Any:
    """A best-effort JSON value for a property of an unknown blob.

    Printable NUL-terminated text becomes a string (a list for several), 4 and
    8 bytes a native-endian integer, an empty property ``True``, anything else
    ``{"hex": "..."}``.
    """
    if not raw:
        return True
    parts = _strings(raw)
    if parts is not None:
        return parts[0] if len(parts) == 1 else parts
    if len(raw) in (4, 8):
        return int.from_bytes(raw, byteorder)  # type: ignore[arg-type]
    return {"hex": raw.hex()}


def _dts_value(raw: bytes, byteorder: str) -> str:
    value = property_value(raw, byteorder)
    if value is True:
        return ";"
    if isinstance(value, str):
        return f' = "{value}";'
    if isinstance(value, list):
        return " = " + ", ".join(f'"{v}"' for v in value) + ";"
    if isinstance(value, int):
        return f" = <{value:#x}>;  /* native u{len(raw) * 8} */"
    return " = [" + " ".join(f"{b:02x}" for b in raw) + "];"


def dts_lines(node: FdtNode, byteorder: str = "little", indent: str = "") -> List[str]:
    """Render a tree in device-tree source style (integers as native values)."""
    lines = [f"{indent}{node.name or '/'} {{"]
    lines += [f"{indent}\t{k}{_dts_value(v, byteorder)}" for k, v in node.properties.items()]
    for c in node.children:
        lines += dts_lines(c, byteorder, indent + "\t")
    lines.append(f"{indent}}};")
    return lines


def hexdump(data: bytes, base: int = 0) -> List[str]:
    """``hexdump -C`` style lines, 16 bytes each, offsets from ``base``."""
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{base + off:08x}  {hexes[:23]:<23}  {hexes[24:]:<23}  |{text}|")
    return lines


# --- the root FDT -----------------------------------------------------------


@frozen
class KhoSubtree:
    """One subnode of the KHO root FDT (one ``kho_add_subtree()`` call).

    ``phys`` is the blob's physical address, ``size`` its ``blob-size``
    (``None`` before kho-v3, Linux kernel commit 85e41392820f ("kho: persist
    blob size in KHO FDT") (in v7.1), where only FDT blobs existed and their header
    gives the size). ``data_property`` says which property held the address.
    """

    name: str
    phys: Optional[int]
    size: Optional[int]
    data_property: Optional[str]
    problems: Tuple[str, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "phys": self.phys, "size": self.size,
                "property": self.data_property, "problems": list(self.problems)}


@frozen
class KhoRoot:
    """The decoded KHO root FDT.

    ``mem_map_phys`` is ``preserved-memory-map``: the physical address of the
    radix tree root (kho-v2 and later) or of the first ``khoser_mem_chunk``
    (kho-v1).
    """

    compatible: str
    version: int
    mem_map_phys: Optional[int]
    subtrees: Tuple[KhoSubtree, ...]
    tree: FdtNode
    problems: Tuple[str, ...] = ()

    def subtree(self, name: str) -> Optional[KhoSubtree]:
        return next((s for s in self.subtrees if s.name == name), None)

    def to_json(self) -> Dict[str, Any]:
        return {
            "compatible": self.compatible,
            "version": self.version,
            "preserved_memory_map": self.mem_map_phys,
            "subnodes": [s.to_json() for s in self.subtrees],
            "problems": list(self.problems),
        }


def _try(problems: List[str], fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except CorruptTreeError as e:
        problems.append(str(e))
        return None


def _subtree(node: FdtNode, byteorder: str) -> KhoSubtree:
    problems: List[str] = []
    data_prop = next((p for p in (PROP_SUB_DATA, PROP_SUB_FDT_V1) if p in node.properties), None)
    phys = None
    if data_prop is None:
        problems.append(f"Subnode {node.name} has neither {PROP_SUB_DATA} nor "
                        f"{PROP_SUB_FDT_V1}: the kernel ignores it.")
    else:
        phys = _try(problems, lambda: prop_u64(node, data_prop, byteorder))
    size = _try(problems, lambda: prop_u64(node, PROP_SUB_SIZE, byteorder))
    return KhoSubtree(node.name, phys, size, data_prop, tuple(problems))


def decode_kho_root(data: bytes, byteorder: str = "little") -> KhoRoot:
    """Decode the KHO root FDT (``kho_out.fdt`` or the page at ``kho_in.fdt_phys``).

    :raises CorruptTreeError: not a valid FDT, or its root is not ``kho-vN``.
    """
    tree = parse_fdt(data, "The KHO root FDT")
    compat = prop_string(tree, "compatible")
    match = KHO_ROOT_COMPATIBLE_RE.match(compat or "")
    if not match:
        raise CorruptTreeError(
            f"The KHO root FDT has compatible {compat!r}, not kho-vN: it is not a KHO FDT or "
            "the memory was reused."
        )
    problems: List[str] = []
    mem_map = _try(problems, lambda: prop_u64(tree, PROP_MEMORY_MAP, byteorder))
    if mem_map is None and not problems:
        problems.append(f"The root has no {PROP_MEMORY_MAP}: a kernel refuses this FDT.")
    subtrees = tuple(_subtree(c, byteorder) for c in tree.children)
    return KhoRoot(compat, int(match.group(1)), mem_map, subtrees, tree,  # type: ignore[arg-type]
                   tuple(problems))


# --- kexec-metadata ---------------------------------------------------------


@frozen
class KexecMetadata:
    """``struct kho_kexec_metadata`` (packed; kexec_metadata.h).

    ``kexec_count`` is the number of kexec boots since the last cold boot
    *of the kernel that reads it*: the outgoing blob holds
    ``kho_in.kexec_count + 1``. Fields are ``None`` for unknown versions.
    """

    version: int
    previous_release: Optional[str]
    kexec_count: Optional[int]
    problems: Tuple[str, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        return {"version": self.version, "previous_release": self.previous_release,
                "kexec_count": self.kexec_count, "problems": list(self.problems)}


def _cstring(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def decode_kexec_metadata(data: bytes, byteorder: str = "little") -> KexecMetadata:
    """Decode the ``kexec-metadata`` blob as ``kho_in_kexec_metadata()`` does.

    :raises CorruptTreeError: fewer bytes than the version field, or than the
        version-1 struct when the version is 1.
    """
    if len(data) < 4:
        raise CorruptTreeError(
            f"The kexec-metadata blob has {len(data)} bytes, too few for its version field."
        )
    version = struct.unpack_from(_fmt(byteorder, "I"), data)[0]
    if version != KEXEC_METADATA_VERSION:
        return KexecMetadata(version, None, None, (
            f"kexec-metadata version {version} is unknown (kho-inspect knows "
            f"{KEXEC_METADATA_VERSION}); the kernel ignores it too.",))
    need = struct.calcsize(_fmt(byteorder, _KEXEC_METADATA_V1))
    if len(data) < need:
        raise CorruptTreeError(
            f"The kexec-metadata blob has {len(data)} bytes, fewer than the {need} of version "
            f"{version}."
        )
    _, release, count = struct.unpack_from(_fmt(byteorder, _KEXEC_METADATA_V1), data)
    return KexecMetadata(version, _cstring(release), count)


# --- memblock (reserve_mem) -------------------------------------------------


@frozen
class ReserveMemEntry:
    """One ``reserve-mem-v1`` node: a ``reserve_mem=`` region to revive."""

    name: str
    compatible: Optional[str]
    start: Optional[int]
    size: Optional[int]
    problems: Tuple[str, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "compatible": self.compatible, "start": self.start,
                "size": self.size, "problems": list(self.problems)}


@frozen
class MemblockBlob:
    """The ``memblock`` blob: ``memblock-v1`` with one child per region."""

    compatible: str
    entries: Tuple[ReserveMemEntry, ...]

    def to_json(self) -> Dict[str, Any]:
        return {"compatible": self.compatible, "entries": [e.to_json() for e in self.entries]}


def _reserve_mem(node: FdtNode, byteorder: str) -> ReserveMemEntry:
    problems: List[str] = []
    compat = _try(problems, lambda: prop_string(node, "compatible"))
    if compat != RESERVE_MEM_COMPATIBLE and not problems:
        problems.append(f"compatible is {compat!r}, not {RESERVE_MEM_COMPATIBLE}: "
                        "reserve_mem_kho_revive() will not revive it.")
    start = _try(problems, lambda: prop_u64(node, "start", byteorder))
    size = _try(problems, lambda: prop_u64(node, "size", byteorder))
    if None in (start, size) and len(problems) < 2:
        problems.append("start or size is missing: reserve_mem_kho_revive() will not "
                        "revive it.")
    return ReserveMemEntry(node.name, compat, start, size, tuple(problems))


def decode_memblock(data: bytes, byteorder: str = "little") -> MemblockBlob:
    """Decode the ``memblock`` blob (include/linux/kho/abi/memblock.h).

    :raises CorruptTreeError: not a valid FDT or not ``memblock-v1``.
    """
    tree = parse_fdt(data, "The memblock blob")
    compat = prop_string(tree, "compatible")
    if compat != MEMBLOCK_COMPATIBLE:
        raise CorruptTreeError(
            f"The memblock blob has compatible {compat!r}, not {MEMBLOCK_COMPATIBLE}."
        )
    return MemblockBlob(compat, tuple(_reserve_mem(c, byteorder) for c in tree.children))


# --- LUO --------------------------------------------------------------------


@frozen
class LuoSer:
    """``struct luo_ser`` (packed; include/linux/kho/abi/luo.h)."""

    compatible: str
    liveupdate_num: int
    sessions_pa: int
    flbs_pa: int
    problems: Tuple[str, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        return {"compatible": self.compatible, "liveupdate_num": self.liveupdate_num,
                "sessions_pa": self.sessions_pa, "flbs_pa": self.flbs_pa,
                "problems": list(self.problems)}


def decode_luo(data: bytes, byteorder: str = "little") -> LuoSer:
    """Decode the ``LUO`` blob.

    :raises CorruptTreeError: shorter than ``struct luo_ser`` (32 bytes).
    """
    fmt = _fmt(byteorder, _LUO_SER)
    if len(data) < struct.calcsize(fmt):
        raise CorruptTreeError(
            f"The LUO blob has {len(data)} bytes, fewer than the {struct.calcsize(fmt)} of "
            "struct luo_ser."
        )
    compat, num, sessions, flbs = struct.unpack_from(fmt, data)
    name = _cstring(compat)
    problems = () if name == LUO_COMPATIBLE else (
        f"compatible {name!r} is not {LUO_COMPATIBLE}: the fields after it follow the "
        f"{LUO_COMPATIBLE} layout and may be wrong.",)
    return LuoSer(name, num, sessions, flbs, problems)


# --- kho_vmalloc ------------------------------------------------------------


@frozen
class KhoVmalloc:
    """``struct kho_vmalloc`` (16 bytes): the descriptor of a preserved vmalloc area."""

    first: int
    total_pages: int
    flags: int
    order: int

    @property
    def flag_names(self) -> Tuple[str, ...]:
        names = [n for n, v in KHO_VMALLOC_FLAGS.items() if self.flags & v]
        rest = self.flags & ~sum(KHO_VMALLOC_FLAGS.values())
        return tuple(names + ([hex(rest)] if rest else []))

    def to_json(self) -> Dict[str, Any]:
        return {"first": self.first, "total_pages": self.total_pages, "flags": self.flags,
                "flag_names": list(self.flag_names), "order": self.order}


@frozen
class VmallocArea:
    """What a ``kho_vmalloc_chunk`` chain describes.

    ``chunks`` are the chunk pages in list order; ``blocks`` the physical
    addresses of the area's ``1 << order``-page blocks, in area order.
    """

    desc: KhoVmalloc
    chunks: Tuple[int, ...]
    blocks: Tuple[int, ...]

    def to_json(self) -> Dict[str, Any]:
        return {"chunks": list(self.chunks), "blocks": list(self.blocks)}


def decode_kho_vmalloc(data: bytes, byteorder: str = "little") -> KhoVmalloc:
    """Decode a 16-byte ``struct kho_vmalloc``.

    :raises CorruptTreeError: not exactly 16 bytes.
    """
    fmt = _fmt(byteorder, _KHO_VMALLOC)
    if len(data) != struct.calcsize(fmt):
        raise CorruptTreeError(
            f"A struct kho_vmalloc has {len(data)} bytes, not {struct.calcsize(fmt)}."
        )
    return KhoVmalloc(*struct.unpack(fmt, data))


def _chunk_error(index: int, phys: int, problem: str) -> CorruptTreeError:
    return CorruptTreeError(
        f"kho_vmalloc chunk {index} at {phys:#x} {problem}: the chunk list is corrupt or was "
        "freed."
    )


def read_vmalloc(desc: KhoVmalloc, read_page: ReadPage, page_size: int = 4096,
                 byteorder: str = "little") -> VmallocArea:
    """Follow the chunk chain of ``desc`` (``struct kho_vmalloc_chunk`` pages).

    A chunk is one page ``{u64 next; u64 phys[PAGE_SIZE / 8 - 1];}``; its
    ``phys[]`` ends at the first zero (or the end of the page), as in
    ``kho_restore_vmalloc()``. Each chunk page is read once.

    :raises CorruptTreeError: a chunk that is unaligned, revisited or
        unreadable, more blocks than ``total_pages``, or fewer.
    """
    if desc.order >= 32:
        raise CorruptTreeError(f"The kho_vmalloc order {desc.order} is impossible.")
    block_pages = 1 << desc.order
    per_chunk = page_size // 8 - 1
    max_blocks = -(-desc.total_pages // block_pages)
    # kho_preserve_vmalloc() starts a new chunk whenever one fills up, so a
    # full last chunk is followed by an empty one.
    max_chunks = max_blocks // per_chunk + 1
    chunks: List[int] = []
    blocks: List[int] = []
    phys = desc.first
    while phys:
        index = len(chunks)
        if phys % page_size:
            raise _chunk_error(index, phys, "is not page aligned")
        if phys in chunks:
            raise _chunk_error(index, phys, "was already visited (the list loops)")
        if index >= max_chunks:
            raise _chunk_error(index, phys, f"is more than the {max_chunks} chunks that "
                               f"{desc.total_pages} pages need")
        chunks.append(phys)
        words = _read_words(read_page, phys, page_size, byteorder, index)
        entries = words[1:]
        n = entries.index(0) if 0 in entries else per_chunk
        bad = next((b for b in entries[:n] if b % page_size), None)
        if bad is not None:
            raise _chunk_error(index, phys, f"lists the unaligned page address {bad:#x}")
        blocks.extend(entries[:n])
        phys = words[0]
    if not chunks:
        raise CorruptTreeError("The kho_vmalloc descriptor has no first chunk (first is 0).")
    if len(blocks) * block_pages != desc.total_pages:
        raise CorruptTreeError(
            f"The kho_vmalloc chunks list {len(blocks)} blocks of {block_pages} pages but "
            f"total_pages is {desc.total_pages}: the chunk list is corrupt or was freed."
        )
    return VmallocArea(desc, tuple(chunks), tuple(blocks))


def _read_words(read_page: ReadPage, phys: int, page_size: int, byteorder: str,
                index: int) -> Sequence[int]:
    try:
        page = read_page(phys)
    except CorruptTreeError:
        raise
    except Exception as e:  # the reader's own failure (drgn.FaultError, ...)
        raise _chunk_error(index, phys, f"cannot be read ({e})") from e
    if len(page) < page_size:
        raise _chunk_error(index, phys, f"was read short ({len(page)} bytes)")
    return struct.unpack_from(_fmt(byteorder, f"{page_size // 8}Q"), page)


def read_vmalloc_bytes(area: VmallocArea, read_page: ReadPage, nbytes: int,
                       page_size: int = 4096) -> bytes:
    """The first ``nbytes`` of the vmalloc area, reading only the pages needed.

    :raises CorruptTreeError: ``nbytes`` exceeds the area, or a page is unreadable.
    """
    if nbytes > area.desc.total_pages * page_size:
        raise CorruptTreeError(
            f"{nbytes} bytes were asked of a preserved vmalloc area of "
            f"{area.desc.total_pages} pages."
        )
    out = bytearray()
    block_pages = 1 << area.desc.order
    for block in area.blocks:
        for i in range(block_pages):
            if len(out) >= nbytes:
                return bytes(out[:nbytes])
            phys = block + i * page_size
            try:
                out += read_page(phys)[:page_size]
            except Exception as e:
                raise CorruptTreeError(
                    f"The vmalloc page at {phys:#x} cannot be read ({e})."
                ) from e
    return bytes(out[:nbytes])


# --- test_kho ---------------------------------------------------------------


@frozen
class TestFolio:
    """One ``folios_info[]`` entry of test_kho: ``phys | order``."""

    __test__ = False  # not a pytest class

    phys: int
    order: int

    def to_json(self) -> Dict[str, int]:
        return {"phys": self.phys, "order": self.order}


@frozen
class KhoTestBlob:
    """lib/test_kho.c's ``kho_test`` FDT and, when read, its folio list."""

    __test__ = False  # not a pytest class

    magic: Optional[int]
    nr_folios: Optional[int]
    folios_info: Optional[KhoVmalloc]
    csum: Optional[int]
    folios: Optional[Tuple[TestFolio, ...]] = None
    area: Optional[VmallocArea] = None
    problems: Tuple[str, ...] = ()
    page_size: int = 4096

    @property
    def magic_ok(self) -> bool:
        return self.magic == KHO_TEST_MAGIC

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "magic": self.magic,
            "magic_ok": self.magic_ok,
            "nr_folios": self.nr_folios,
            "folios_info": self.folios_info.to_json() if self.folios_info else None,
            "csum": self.csum,
            "folios": None if self.folios is None else [f.to_json() for f in self.folios],
            "problems": list(self.problems),
        }
        if self.area is not None:
            out["vmalloc"] = self.area.to_json()
        if self.folios is not None:
            out["folio_bytes"] = sum(self.page_size << f.order for f in self.folios)
        return out


def decode_kho_test(data: bytes, read_page: Optional[ReadPage] = None,
                    page_size: int = 4096, byteorder: str = "little") -> KhoTestBlob:
    """Decode the ``kho_test`` blob; with ``read_page``, also its folio list.

    The folio list is the preserved vmalloc array ``folios_info`` of
    ``nr_folios`` ``phys_addr_t`` entries, each ``phys | order``
    (``kho_test_preserve_data()``).

    :raises CorruptTreeError: not a valid FDT or not ``kho-test-v1``; with
        ``read_page``, a broken chunk chain.
    """
    tree = parse_fdt(data, "The kho_test blob")
    compat = prop_string(tree, "compatible")
    if compat != KHO_TEST_COMPATIBLE:
        raise CorruptTreeError(
            f"The kho_test blob has compatible {compat!r}, not {KHO_TEST_COMPATIBLE}."
        )
    problems: List[str] = []
    magic = _try(problems, lambda: prop_u32(tree, "magic", byteorder))
    if magic != KHO_TEST_MAGIC:
        shown = "missing" if magic is None else f"{magic:#x}"
        problems.append(f"magic is {shown}, not {KHO_TEST_MAGIC:#x}: test_kho refuses it.")
    node = tree.child("data")
    if node is None:
        problems.append("There is no /data node: test_kho refuses it.")
        return KhoTestBlob(magic, None, None, None, problems=tuple(problems))
    nr = _try(problems, lambda: prop_u32(node, "nr_folios", byteorder))
    csum = _try(problems, lambda: prop_u32(node, "csum", byteorder))
    raw = node.properties.get("folios_info")
    desc = _try(problems, lambda: decode_kho_vmalloc(raw or b"", byteorder))
    blob = KhoTestBlob(magic, nr, desc, csum, problems=tuple(problems))
    if read_page is None or desc is None or nr is None:
        return blob
    area = read_vmalloc(desc, read_page, page_size, byteorder)
    words = read_vmalloc_bytes(area, read_page, nr * 8, page_size)
    entries = struct.unpack(_fmt(byteorder, f"{nr}Q"), words)
    mask = page_size - 1
    folios = tuple(TestFolio(e & ~mask, e & mask) for e in entries)
    return KhoTestBlob(magic, nr, desc, csum, folios, area, tuple(problems), page_size)


# --- dispatch ---------------------------------------------------------------


@frozen
class DecodedBlob:
    """A sub-blob as decoded by :func:`decode_blob`.

    ``kind`` is ``"kexec-metadata"``, ``"memblock"``, ``"luo"``,
    ``"kho-test"``, ``"fdt"`` (an FDT without a known decoder) or ``"raw"``
    (a hex dump). ``value`` is the decoder's dataclass, an :class:`FdtNode`,
    or the bytes. ``error`` is set when a known decoder failed; the blob is then
    shown as its generic form.
    """

    kind: str
    compatible: Optional[str]
    value: Any
    error: Optional[str] = None

    def to_json(self, byteorder: str = "little") -> Dict[str, Any]:
        if self.kind == "raw":
            decoded: Any = {"hexdump": hexdump(self.value)}
        elif self.kind == "fdt":
            decoded = self.value.to_json(byteorder)
        else:
            decoded = self.value.to_json()
        return {"kind": self.kind, "compatible": self.compatible, "decoded": decoded,
                "error": self.error}


_FdtDecoder = Callable[[bytes, Optional[ReadPage], int, str], Any]
_RawDecoder = Callable[[bytes, str], Any]

_FDT_DECODERS: Dict[str, Tuple[str, _FdtDecoder]] = {
    MEMBLOCK_COMPATIBLE: ("memblock", lambda d, r, p, b: decode_memblock(d, b)),
    KHO_TEST_COMPATIBLE: ("kho-test", lambda d, r, p, b: decode_kho_test(d, r, p, b)),
}
_RAW_DECODERS: Dict[str, Tuple[str, _RawDecoder]] = {
    KEXEC_METADATA_NAME: ("kexec-metadata", decode_kexec_metadata),
    LUO_NAME: ("luo", decode_luo),
}


def _compat_of(value: Any) -> Optional[str]:
    return getattr(value, "compatible", None)


def decode_generic(data: bytes) -> Tuple[str, Optional[str], Any]:
    """``(kind, compatible, value)`` of a blob without a known decoder: an
    FDT tree (``"fdt"``) if it is a valid FDT, else its bytes (``"raw"``)."""
    if looks_like_fdt(data):
        try:
            tree = parse_fdt(data)
        except CorruptTreeError:
            return "raw", None, data
        compat = tree.properties.get("compatible")
        return "fdt", (_strings(compat) or [None])[0] if compat else None, tree
    return "raw", None, data


def decode_blob(name: str, data: bytes, read_page: Optional[ReadPage] = None, *,
                page_size: int = 4096, byteorder: str = "little") -> DecodedBlob:
    """Decode one sub-blob by its FDT ``compatible``, else by its node name.

    Never raises for bad content: a known decoder's
    :class:`~kho_inspect.errors.CorruptTreeError` becomes ``error`` and the
    blob falls back to a generic FDT tree or a hex dump.
    """
    kind, compat, value = decode_generic(data)
    try:
        if kind == "fdt" and compat in _FDT_DECODERS:
            known, fdt_decoder = _FDT_DECODERS[compat]
            return DecodedBlob(known, compat, fdt_decoder(data, read_page, page_size, byteorder))
        if kind == "raw" and name in _RAW_DECODERS:
            known, raw_decoder = _RAW_DECODERS[name]
            decoded = raw_decoder(data, byteorder)
            return DecodedBlob(known, _compat_of(decoded), decoded)
    except CorruptTreeError as e:
        return DecodedBlob(kind, compat, value, error=str(e))
    return DecodedBlob(kind, compat, value)
