# SPDX-License-Identifier: LGPL-2.1-or-later
"""Two synthetic kernels of one KHO handover, as drgn programs, for the
``snapshot`` and ``check`` commands end to end.

Kernel N (``7.3.4-n0``) cold booted with ``kho=on``; kernel N+1
(``7.3.4-n1``) was kexec'd from it through KHO. Both run on one 8 GiB
machine with two nodes, node 0 ``[0, 4 GiB)`` and node 1 ``[4, 8 GiB)``::

    kho_scratch[0] lowmem [1 GiB, +64 MiB)     kho_scratch[1] global [3 GiB, +256 MiB)
    kho_scratch[2] node 0 [2 GiB, +128 MiB)    kho_scratch[3] node 1 [5 GiB, +128 MiB)

N preserves a page at 256 MiB, a 2 MiB block at 4 GiB + 16 MiB, the
``reserve_mem`` region 'foo' (64 MiB at 4 GiB + 128 MiB) and a 64 KiB block
at 6 GiB; its radix tree is at 7 GiB. So the 1 GiB blocks 0, 4, 6 and 7 are
busy and N+1's extended scratch is [1, 4) and [5, 6) GiB minus the areas.
N+1's image and the scratch array it received lie in the lowmem area, its
boot log has one allocation in the scratch-only window, and it preserves
'foo' again and a page at 6 GiB + 1 MiB (radix tree at 7 GiB + 1 MiB).

Every rule that can run passes on this pair; each test breaks one thing.
``Kernel(...)`` options change what is built: memblock discarded after boot
(``generation="discarded"``), a reservation missing, KHO off with the freed
array of a failed ``kho_reserve_scratch()``.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from drgn import Program
from synth.kernel import SynthKernel
from synth.kho import add_kho, memblock_blob
from synth.memblock import GENERATIONS, RawRegion, add_memblock
from synth.mm import MmSpec, add_mm, memory_regions, place_radix_tree
from synth.printk import add_boot, add_printk

from kho_inspect.model.memblock import Region
from kho_inspect.ranges import Range, RangeSet

__all__ = ["GIB", "MIB", "AREAS", "N_BLOCKS", "N1_BLOCKS", "FOO", "Kernel", "kernel_n",
           "kernel_n1", "disabled_kernel", "N1_LOG"]

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
NODES = [(0, 4 * GIB), (4 * GIB, 8 * GIB)]
AREAS = [(GIB, 64 * MIB), (3 * GIB, 256 * MIB), (2 * GIB, 128 * MIB), (5 * GIB, 128 * MIB)]
FOO = ("foo", 4 * GIB + 128 * MIB, 64 * MIB)
N_BLOCKS = [(256 * MIB, 0), (4 * GIB + 16 * MIB, 9), (FOO[1], 14), (6 * GIB, 4)]
N1_BLOCKS = [(FOO[1], 14), (6 * GIB + MIB, 0)]
N_TREE, N1_TREE = 7 * GIB, 7 * GIB + MIB
EXTENDED = [(GIB, 4 * GIB), (5 * GIB, 6 * GIB)]
SCRATCH_PHYS = GIB + 32 * MIB
COMMAND_LINE = "console=ttyS0 kho=on reserve_mem=64M:4K:foo memblock=debug"
START_KERNEL_MAP = 0xFFFF_FFFF_8000_0000

N1_LOG = (
    "Linux version 7.3.4-n1 (synth) #1 SMP",
    f"Command line: {COMMAND_LINE}",
    "KHO: found kexec handover data.",
    "memblock_alloc_try_nid: 4096 bytes align=0x1000 nid=-1 from=0x0000000000000000 "
    "max_addr=0x0000000000000000 alloc_node_data+0x5c/0x1a0",
    "__memblock_reserve: [0x00000000c0000000-0x00000000c0000fff] nid=-1 flags=20 "
    "memblock_alloc_range_nid+0x104/0x1b0",
    "SLUB: HWalign=64, Order=0-3, MinObjects=0, CPUs=2, Nodes=2",
    "liveupdate: Retrieved live update data, liveupdate number: 1",
)
N_LOG = ("Linux version 7.3.4-n0 (synth) #1 SMP", f"Command line: {COMMAND_LINE}")


def _raw(regions: Sequence[Region], generation: str) -> List[RawRegion]:
    gen = GENERATIONS[generation]
    return [RawRegion(r.base, r.size, gen.flag(*r.flags) if r.flags else 0,
                      0 if r.nid is None else r.nid) for r in regions]


def _blocks(blocks: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    return [(phys, phys + (4 * KIB << order)) for phys, order in blocks]


@dataclass
class Kernel:
    """One synthetic kernel of the handover and what went into it."""

    prog: Program
    radix_root: int
    reserved: List[Region] = field(default_factory=list)
    extra: Dict[str, object] = field(default_factory=dict)


def _image(kernel: SynthKernel, phys: int, size: int) -> None:
    # __pa_symbol() on x86_64: virt - __START_KERNEL_map + phys_base.
    base = 0xFFFF_FFFF_8100_0000
    kernel.add_symbol("_text", base)
    # x86 setup_arch() reserves [_text, __end_of_kernel_reserve); a real vmlinux may also
    # have an absolute _end that KASLR does not move, so give a wrong one here.
    kernel.add_symbol("__end_of_kernel_reserve", base + size)
    kernel.add_symbol("_end", START_KERNEL_MAP + 0x2000)
    # phys_base is defined in assembly (head_64.S): a symbol with no type in the DWARF.
    address = kernel.add_data((phys - (base - START_KERNEL_MAP)).to_bytes(8, "little",
                                                                           signed=True))
    kernel.add_symbol("phys_base", address, 8)


def _base(release: str, generation: str, flagged: Dict[str, List[Tuple[int, int]]],
          reserved: List[Region], areas: Sequence[Tuple[int, int]]) -> SynthKernel:
    kernel = SynthKernel(ram_size=8 * GIB, release=release)
    add_mm(kernel, MmSpec(NODES, list(areas)))
    add_memblock(kernel, generation, memory=_raw(memory_regions(NODES, flagged), generation),
                 reserved=_raw(reserved, generation), reserve_mem=[FOO])
    return kernel


def kernel_n(generation: str = "7.3") -> Kernel:
    """Kernel N, cold booted, about to kexec."""
    reserved = sorted([Region(16 * MIB, 32 * MIB, (), 0)]  # its image: memblock_reserve()
                      + [Region(a, s, ("RSRV_KERN",), 0 if a < 4 * GIB else 1)
                         for a, s in AREAS], key=lambda r: r.base)
    kernel = _base("7.3.4-n0", generation, {}, reserved, AREAS)
    encoder = place_radix_tree(kernel, N_BLOCKS, N_TREE)
    add_kho(kernel, radix_root=encoder.root, release="7.3.4-n0",
            out_blobs={"memblock": memblock_blob([FOO])})
    add_printk(kernel, N_LOG)
    add_boot(kernel, COMMAND_LINE)
    _image(kernel, 16 * MIB, 32 * MIB)
    return Kernel(kernel.prog, encoder.root, reserved)


def kernel_n1(n: Kernel, generation: str = "7.3", drop: Optional[int] = None,
              log: Sequence[str] = N1_LOG) -> Kernel:
    """Kernel N+1, booted through KHO from ``n``.

    :param drop: leave this block of N (an index of :data:`N_BLOCKS`)
        unreserved, as if ``kho_mem_retrieve()`` had missed it.
    """
    flagged = {"KHO_SCRATCH": [(a, a + s) for a, s in AREAS] + EXTENDED}
    kept = [b for i, b in enumerate(_blocks(N_BLOCKS)) if i != drop]
    noinit = RangeSet(Range.from_bounds(s, e) for s, e in kept)
    reserved = sorted([Region(r.base, r.size, ("RSRV_NOINIT",), 0 if r.base < 4 * GIB else 1)
                       for r in noinit]
                      + [Region(GIB + 4 * MIB, 16 * MIB, (), 0)], key=lambda r: r.base)
    kernel = _base("7.3.4-n1", generation, flagged, reserved, AREAS)
    encoder = place_radix_tree(kernel, N1_BLOCKS, N1_TREE)
    add_kho(kernel, kho_boot=True, kexec_count=1, previous_release="7.3.4-n0",
            release="7.3.4-n1", radix_root=encoder.root, in_radix_root=n.radix_root,
            scratch_phys=SCRATCH_PHYS, luo=True, liveupdate_num=1,
            in_blobs={"memblock": memblock_blob([FOO])},
            out_blobs={"memblock": memblock_blob([FOO])})
    add_printk(kernel, log)
    add_boot(kernel, COMMAND_LINE)
    _image(kernel, GIB + 4 * MIB, 16 * MIB)
    return Kernel(kernel.prog, encoder.root, reserved)


FAILED_LOG = (
    "Linux version 7.3.4-n0 (synth) #1 SMP",
    "Command line: console=ttyS0 kho=on hugetlb_cma=2G",
    "KHO: Failed to reserve global scratch buffer",
    "KHO: Failed to reserve scratch area, disabling kexec handover",
    "liveupdate: Disabling liveupdate because KHO is disabled",
)


def disabled_kernel(generation: str = "discarded") -> Kernel:
    """A cold boot with kho=on where kho_reserve_scratch() failed: KHO off,
    kho_scratch[] still pointing at the freed array (lowmem entry only)."""
    freed = [(GIB, 212 * MIB), (0, 0), (0, 0), (0, 0)]
    kernel = _base("7.3.4-n0", generation, {}, [Region(16 * MIB, 32 * MIB, (), 0)], freed)
    layout = add_kho(kernel, enabled=False, luo=False)
    kernel.write_variable("kho_out", bytes(8), layout.types["kho_out"].member(
        "radix_tree").bit_offset // 8)  # kho_init() never ran: no tree
    add_printk(kernel, FAILED_LOG)
    add_boot(kernel, "console=ttyS0 kho=on hugetlb_cma=2G")
    _image(kernel, 16 * MIB, 32 * MIB)
    return Kernel(kernel.prog, 0)
