# SPDX-License-Identifier: LGPL-2.1-or-later
"""The generic synthetic kernel: a drgn Program that looks like a Linux kernel.

:class:`SynthKernel` builds an ``IS_LINUX_KERNEL`` program with
``set_linux_kernel_custom()`` (x86_64 by default, or a big-endian s390x) and
gives the builders in this package (:mod:`synth.memblock`, :mod:`synth.kho`,
:mod:`synth.mm`) what a kernel image and its RAM provide:

* sparse RAM, readable physically and through the direct map
  (``DIRECT_MAP + phys``): :meth:`SynthKernel.write_phys`, and a bump
  allocator for it, :meth:`SynthKernel.alloc_phys`;
* global variables in the kernel's ``.data`` (:data:`KERNEL_DATA`) or its
  init section (:data:`INIT_DATA`, between the symbols ``__init_begin`` and
  ``__init_end``), :meth:`SynthKernel.add_variable`; the init section can be
  freed the way ``free_initmem()`` does, :meth:`SynthKernel.free_init`;
* named types, :meth:`SynthKernel.add_type` and :meth:`SynthKernel.define`;
* functions with code (:meth:`SynthKernel.add_function`) and linker symbols
  (:meth:`SynthKernel.add_symbol`);
* a log of every read of RAM (:attr:`SynthKernel.reads`), to check that a
  walker reads in bulk.

:func:`pack` lays out a struct's members by name with the offsets of its type.
"""

from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from drgn import (
    Architecture,
    FaultError,
    FindObjectFlags,
    Object,
    Platform,
    PlatformFlags,
    Program,
    Symbol,
    SymbolBinding,
    SymbolKind,
    Type,
    TypeKind,
    offsetof,
    sizeof,
)

__all__ = [
    "PAGE_SIZE",
    "X86_64",
    "S390X",
    "PLATFORMS",
    "DIRECT_MAP",
    "KERNEL_DATA",
    "INIT_DATA",
    "SWAPPER_PG_DIR",
    "POISON_FREE_INITMEM",
    "vmcoreinfo",
    "SynthKernel",
    "pack",
]

PAGE_SIZE = 4096

X86_64 = Platform(Architecture.X86_64, PlatformFlags.IS_64_BIT | PlatformFlags.IS_LITTLE_ENDIAN)
S390X = Platform(Architecture.S390X, PlatformFlags.IS_64_BIT)
PLATFORMS = {"x86_64": X86_64, "s390x": S390X}

DIRECT_MAP = 0xFFFF_8880_0000_0000
"""x86_64 ``page_offset_base`` without KASLR: virtual = DIRECT_MAP + physical."""
KERNEL_DATA = 0xFFFF_FFFF_8300_0000
"""Where SynthKernel places global variables (kernel .data/.bss)."""
INIT_DATA = 0xFFFF_FFFF_8400_0000
"""Where SynthKernel places ``__initdata`` variables: ``[__init_begin, __init_end)``."""
SWAPPER_PG_DIR = 0xFFFF_FFFF_82E3_C000
_SEGMENT_SIZE = 1 << 20

POISON_FREE_INITMEM = 0xCC
"""What ``free_initmem()`` fills freed init memory with (include/linux/poison.h)."""


def vmcoreinfo(release: str = "7.3.4") -> bytes:
    """The VMCOREINFO note drgn needs for ``set_linux_kernel_custom()``."""
    return (f"OSRELEASE={release}\nPAGESIZE={PAGE_SIZE}\nKERNELOFFSET=0\n"
            f"SYMBOL(swapper_pg_dir)={SWAPPER_PG_DIR:x}\n").encode()


def read_sparse(pages: Dict[int, bytearray], offset: int, count: int) -> bytes:
    """``count`` bytes at ``offset`` of a page-sparse store (missing pages read as zero)."""
    out = bytearray()
    while count:
        page, off = divmod(offset, PAGE_SIZE)
        n = min(count, PAGE_SIZE - off)
        data = pages.get(page)
        out += data[off:off + n] if data is not None else bytes(n)
        offset, count = offset + n, count - n
    return bytes(out)


class SynthKernel:
    """A minimal synthetic kernel: sparse RAM, a direct map, types, globals.

    :param platform: ``"x86_64"`` or ``"s390x"`` (big endian).
    """

    def __init__(self, ram_size: int = 1 << 30, release: str = "7.3.4",
                 alloc_base: int = 0x100_0000, platform: str = "x86_64") -> None:
        self.prog = Program(PLATFORMS[platform])
        self.prog.set_linux_kernel_custom(vmcoreinfo(release), False)
        self.byteorder = "little" if platform == "x86_64" else "big"
        self.ram_size = ram_size
        self.pages: Dict[int, bytearray] = {}
        self.sections = {"data": bytearray(), "init": bytearray()}
        self.init_freed: Optional[str] = None
        self.types: Dict[Tuple[TypeKind, str], Type] = {}
        self.variables: Dict[str, Tuple[Type, int]] = {}
        self.functions: Dict[str, int] = {}
        self.symbols: Dict[str, Symbol] = {}
        self.reads: List[Tuple[int, int]] = []
        self._next_phys = alloc_base
        self.prog.add_memory_segment(0, ram_size, self._read_ram, True)
        self.prog.add_memory_segment(DIRECT_MAP, ram_size, self._read_ram, False)
        self.prog.add_memory_segment(KERNEL_DATA, _SEGMENT_SIZE, self._read_data, False)
        self.prog.add_memory_segment(INIT_DATA, _SEGMENT_SIZE, self._read_init, False)
        self.prog.register_type_finder("synth", self._find_type, enable_index=0)
        self.prog.register_object_finder("synth", self._find_object, enable_index=0)
        self.prog.register_symbol_finder("synth", self._find_symbols, enable_index=0)
        self.add_symbol("__init_begin", INIT_DATA)
        self.add_symbol("__init_end", INIT_DATA + _SEGMENT_SIZE)

    # --- drgn callbacks ---------------------------------------------------

    def _read_ram(self, address: int, count: int, offset: int, physical: bool) -> bytes:
        self.reads.append((offset, count))
        return read_sparse(self.pages, offset, count)

    def _read_data(self, address: int, count: int, offset: int, physical: bool) -> bytes:
        return bytes(self.sections["data"][offset:offset + count]).ljust(count, b"\0")

    def _read_init(self, address: int, count: int, offset: int, physical: bool) -> bytes:
        if self.init_freed == "unmap":
            raise FaultError("init memory was freed and unmapped", address)
        if self.init_freed == "poison":
            return bytes([POISON_FREE_INITMEM]) * count
        return bytes(self.sections["init"][offset:offset + count]).ljust(count, b"\0")

    def _find_type(self, prog: Program, kinds: Any, name: str, filename: Optional[str]):
        return next((self.types[(k, name)] for k in kinds if (k, name) in self.types), None)

    def _find_object(self, prog: Program, name: str, flags: FindObjectFlags,
                     filename: Optional[str]) -> Optional[Object]:
        if flags & FindObjectFlags.VARIABLE and name in self.variables:
            t, address = self.variables[name]
            return Object(prog, t, address=address)
        if flags & FindObjectFlags.FUNCTION and name in self.functions:
            return Object(prog, prog.function_type(prog.void_type(), ()),
                          address=self.functions[name])
        return None

    def _find_symbols(self, prog: Program, name: Optional[str], address: Optional[int],
                      one: bool) -> List[Symbol]:
        return [s for s in self.symbols.values()
                if (name is None or s.name == name)
                and (address is None or s.address <= address < s.address + max(s.size, 1))]

    # --- building -----------------------------------------------------------

    def write_phys(self, phys: int, data: bytes) -> None:
        if phys + len(data) > self.ram_size:
            raise ValueError(f"{phys:#x}+{len(data):#x} is outside RAM")
        while data:
            page, off = divmod(phys, PAGE_SIZE)
            n = min(len(data), PAGE_SIZE - off)
            buf = self.pages.setdefault(page, bytearray(PAGE_SIZE))
            buf[off:off + n] = data[:n]
            phys, data = phys + n, data[n:]

    def alloc_phys(self, size: int) -> int:
        phys = self._next_phys
        self._next_phys += -(-max(size, 1) // PAGE_SIZE) * PAGE_SIZE
        return phys

    def add_type(self, t: Type) -> None:
        tagged = t.kind in (TypeKind.STRUCT, TypeKind.UNION, TypeKind.ENUM)
        self.types[(t.kind, t.tag if tagged else t.name)] = t

    def define(self, t: Type) -> Type:
        """The program's type of ``t``'s name if it has one already, else ``t``
        (registered). Builders share types this way: the first definition wins,
        so a kernel generation's ``enum memblock_flags`` is not replaced by a
        later builder's default. Anonymous types are returned as they are."""
        if t.kind == TypeKind.TYPEDEF:
            name = t.name
        elif t.kind in (TypeKind.STRUCT, TypeKind.UNION, TypeKind.ENUM) and t.tag:
            name = f"{t.kind.name.lower()} {t.tag}"
        else:
            return t
        try:
            return self.prog.type(name)
        except LookupError:
            self.add_type(t)
            return t

    def add_data(self, raw: bytes, section: str = "data") -> int:
        """Place anonymous bytes (a string literal, say) in a section; their address."""
        buf = self.sections[section]
        address = (KERNEL_DATA if section == "data" else INIT_DATA) + len(buf)
        buf += raw.ljust(-(-len(raw) // 64) * 64, b"\0")
        if len(buf) > _SEGMENT_SIZE:
            raise ValueError(f"the synthetic {section} section is full")
        return address

    def add_variable(self, name: str, t: Type, data: Optional[bytes] = None,
                     section: str = "data") -> int:
        """A global ``t name`` in ``.data`` or (``section="init"``) ``__initdata``."""
        address = self.add_data(data if data is not None else bytes(sizeof(t)), section)
        self.variables[name] = (t, address)
        return address

    def has_variable(self, name: str) -> bool:
        return name in self.variables

    def write_variable(self, name: str, data: bytes, offset: int = 0) -> None:
        """Overwrite bytes of a global placed by :meth:`add_variable`."""
        address = self.variables[name][1]
        section, base = ("data", KERNEL_DATA) if address < INIT_DATA else ("init", INIT_DATA)
        start = address - base + offset
        self.sections[section][start:start + len(data)] = data

    def add_function(self, name: str, address: int) -> None:
        """A function with code at ``address`` (``prog.function(name)``)."""
        self.functions[name] = address
        self.add_symbol(name, address, 16, SymbolKind.FUNC)

    def add_symbol(self, name: str, address: int, size: int = 0,
                   kind: SymbolKind = SymbolKind.OBJECT) -> None:
        self.symbols[name] = Symbol(name, address, size, SymbolBinding.GLOBAL, kind)

    def free_init(self, how: str = "poison") -> None:
        """What ``free_initmem()`` does to ``[__init_begin, __init_end)``:
        ``"poison"`` fills it with 0xcc, ``"unmap"`` makes reads fault (x86_64
        with PTI unmaps the kernel-image alias of freed init pages)."""
        if how not in ("poison", "unmap"):
            raise ValueError(how)
        self.init_freed = how


def _member_type(t: Type, path: str) -> Type:
    for part in path.split("."):
        while t.kind == TypeKind.TYPEDEF:
            t = t.type
        t = t.member(part).type
    return t


def pack(t: Type, values: Mapping[str, Union[int, bytes]], byteorder: str = "little") -> bytes:
    """The bytes of a ``t`` whose members (dotted paths) have ``values``; the rest is 0.

    Integers are written with the member's size; negative ones in two's complement.
    """
    buf = bytearray(sizeof(t))
    for path, value in values.items():
        off = offsetof(t, path)
        raw = value if isinstance(value, bytes) else value.to_bytes(
            sizeof(_member_type(t, path)), byteorder, signed=value < 0)  # type: ignore[arg-type]
        buf[off:off + len(raw)] = raw
    return bytes(buf)
