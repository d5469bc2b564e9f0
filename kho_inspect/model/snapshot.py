# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Snapshot
--------

The ``kho_inspect.model.snapshot`` module holds a :class:`Snapshot`: what one
kernel looks like to the placement rules of ``kho-inspect check``. The same
type describes the running kernel (built live in kernel N+1) and the file
``kho-inspect snapshot`` saved in kernel N right before ``kexec -e``, so the
rules compare two values of one type.

A snapshot holds the release and command line, the KHO status and whether
KHO is active (:class:`~kho_inspect.model.diagnosis.KhoActivation`),
memblock (where the kernel keeps it), the scratch areas and their classes and
migratetypes, the memory this kernel preserves for the next one and the radix
tree's own pages, the incoming evidence of what the previous kernel
preserved, a summary of both root FDTs (sub-blobs, ``kexec-metadata``, the
``memblock`` blob's ``reserve_mem`` entries), gigantic hugetlb pages, the
kernel image and initrd ranges and the ``reserve_mem=`` table.

Every optional section is ``None`` (or empty) only together with a sentence
in :attr:`Snapshot.missing` saying why; a section whose kernel data was found
corrupt has the error in :attr:`Snapshot.corrupt`. A stale object is never
stored: a discarded memblock is ``None``, and a scratch array left behind by
a failed ``kho_reserve_scratch()`` is not :attr:`Snapshot.scratch` (it is
sizing evidence in :attr:`Snapshot.activation`).

Saved snapshots are ``kho-inspect/snapshot`` documents
(:func:`snapshot_document`, :func:`load_snapshot_document`). Nothing here
touches drgn.
"""

from dataclasses import field
from typing import Any, Dict, Mapping, Optional, Tuple

from kho_inspect.errors import InputError
from kho_inspect.fdt import KexecMetadata, MemblockBlob, ReserveMemEntry
from kho_inspect.frozen import frozen
from kho_inspect.model.base import JsonModel, document, from_json, open_document, to_json
from kho_inspect.model.diagnosis import KhoActivation
from kho_inspect.model.hugetlb import HugetlbReport
from kho_inspect.model.kho import KhoFdtReport, KhoStatus
from kho_inspect.model.memblock import FlagTable, MemblockState, ReserveMem
from kho_inspect.model.preserved import PreservedReport
from kho_inspect.model.scratch import SCRATCH_FLAGS, UNPRESERVED_FLAGS, ScratchReport, first_flag
from kho_inspect.ranges import Range, RangeSet

__all__ = (
    "GENERATIONS",
    "SNAPSHOT_SCHEMA",
    "SNAPSHOT_VERSION",
    "BlobSummary",
    "CmaRegion",
    "FdtSummary",
    "Snapshot",
    "fdt_summary",
    "generation_of",
    "load_snapshot_document",
    "snapshot_document",
)

SNAPSHOT_SCHEMA = "kho-inspect/snapshot"
SNAPSHOT_VERSION = 1

GENERATIONS = ("unpreserved-flag", "7.3", "7.2", "no-scratch-flag")
"""How a kernel marks memory for early boot allocations after a KHO boot:

* ``unpreserved-flag``: a separate flag for the memory that holds nothing
  preserved (``KHO_SCRATCH_EXT`` in the v1 series, ``KHO_UNPRESERVED``
  later) beside the scratch flag, which marks only ``kho_scratch[]``;
* ``7.3``: only the scratch flag, on ``kho_scratch[]`` and on the extended
  scratch ``kho_extend_scratch()`` adds; boot-time gigantic pages carry
  ``RSRV_HUGETLB``, which came with the extension;
* ``7.2``: the scratch flag on ``kho_scratch[]`` alone, and no
  ``RSRV_HUGETLB`` (no extended scratch: early allocations of a KHO boot,
  gigantic pages included, must fit in the scratch areas);
* ``no-scratch-flag``: neither (KHO not built, or an unknown spelling).

Only the enumerator names decide (docs/kernel/series.md#detecting-the-generation).
"""


def generation_of(flags: FlagTable) -> str:
    """The :data:`GENERATIONS` entry a kernel's ``enum memblock_flags`` names.

    >>> generation_of(FlagTable({"KHO_SCRATCH": 0x40, "RSRV_HUGETLB": 0x80}))
    '7.3'
    >>> generation_of(FlagTable({"KHO_SCRATCH": 0x40, "KHO_SCRATCH_EXT": 0x80}))
    'unpreserved-flag'
    >>> generation_of(FlagTable({"RSRV_KERN": 0x20, "KHO_SCRATCH": 0x40}))
    '7.2'
    """
    if first_flag(flags, UNPRESERVED_FLAGS):
        return "unpreserved-flag"
    if first_flag(flags, SCRATCH_FLAGS):
        return "7.3" if flags.has("RSRV_HUGETLB") else "7.2"
    return "no-scratch-flag"


@frozen
class BlobSummary(JsonModel):
    """One sub-blob of a root FDT: where it is and what it is."""

    name: str
    phys: Optional[int] = None
    size: Optional[int] = None
    compatible: Optional[str] = None
    kind: Optional[str] = None
    error: Optional[str] = None

    @property
    def range(self) -> Optional[Range]:
        if self.phys is None or self.size is None:
            return None
        return Range(self.phys, self.size)


@frozen
class FdtSummary(JsonModel):
    """What the rules need of a root FDT (not its bytes).

    :param direction: ``"out"`` (``kho_out.fdt``) or ``"in"`` (``kho_in.fdt_phys``).
    :param address: the root FDT's address (virtual for ``out``).
    :param compatible: the root's ``compatible`` (``"kho-v4"``).
    :param mem_map_phys: ``preserved-memory-map``: the radix root's physical address.
    :param kexec_metadata: the decoded ``kexec-metadata`` blob, if present.
    :param reserve_mem: the ``reserve-mem-v1`` entries of the ``memblock`` blob.
    """

    direction: str
    address: Optional[int] = None
    compatible: Optional[str] = None
    mem_map_phys: Optional[int] = None
    blobs: Tuple[BlobSummary, ...] = ()
    kexec_metadata: Optional[KexecMetadata] = None
    reserve_mem: Tuple[ReserveMemEntry, ...] = ()
    problems: Tuple[str, ...] = ()

    def blob(self, name: str) -> Optional[BlobSummary]:
        return next((b for b in self.blobs if b.name == name), None)


def fdt_summary(report: KhoFdtReport) -> FdtSummary:
    """Summarise a root FDT report read by ``read_kho_fdt()`` (pure)."""
    metadata: Optional[KexecMetadata] = None
    reserve: Tuple[ReserveMemEntry, ...] = ()
    problems = list(report.root.problems)
    blobs = []
    for name, blob in report.blobs.items():
        value = blob.decoded.value if blob.decoded is not None else None
        if isinstance(value, KexecMetadata):
            metadata = value
        elif isinstance(value, MemblockBlob):
            reserve = value.entries
        if blob.problem:
            problems.append(f"blob {name}: {blob.problem}")
        blobs.append(BlobSummary(name, blob.phys, blob.size, blob.compatible, blob.kind,
                                 blob.problem))
    return FdtSummary(
        direction=report.direction,
        address=report.address,
        compatible=report.root.compatible,
        mem_map_phys=report.root.mem_map_phys,
        blobs=tuple(blobs),
        kexec_metadata=metadata,
        reserve_mem=reserve,
        problems=tuple(problems),
    )


@frozen
class CmaRegion(JsonModel):
    """One range of a CMA area of ``cma_areas[]`` (mm/cma.c).

    :param name: the area's name as the kernel gives it (``"reserved"`` for
        ``cma=``, ``"hugetlb0"`` for ``hugetlb_cma=`` on node 0).
    """

    name: str
    base: int
    size: int
    node: Optional[int] = None

    @property
    def range(self) -> Range:
        return Range(self.base, self.size)


@frozen
class Snapshot(JsonModel):
    """Everything the placement rules judge one kernel by.

    :param release: ``UTS_RELEASE``.
    :param command_line: ``saved_command_line``.
    :param arch: ``"x86_64"``, ``"aarch64"``, ...
    :param memblock_flags: ``enum memblock_flags`` by name (from debug info,
        even when memblock itself was discarded).
    :param memory_nodes: ``node_states[N_MEMORY]`` ascending.
    :param numa: whether ``struct memblock_region`` has ``nid``.
    :param scratch_alignment: ``PAGE_SIZE << MAX_PAGE_ORDER``, the scratch
        areas' alignment (``SCRATCH_ALIGNMENT_BYTES``).
    :param low_address_limit: ``ARCH_LOW_ADDRESS_LIMIT``.
    :param kho_scratch_only: ``kho_scratch_only`` (false after boot).
    :param status: ``kho status``; ``None`` when KHO is not built.
    :param activation: whether KHO is active, and why not.
    :param memblock: memblock when the kernel keeps it, never stale.
    :param scratch: the scratch report, only when KHO is active.
    :param preserved_out: what this kernel preserves for the next one (the
        outgoing radix tree, with its own pages).
    :param preserved_in: on a KHO boot, what the previous kernel preserved as
        this one sees it (noinit reservations or pages with the KHO magic).
    :param fdt_out: the outgoing root FDT.
    :param fdt_in: the incoming root FDT (KHO boot).
    :param hugetlb: gigantic hugetlb pages and hugetlb CMA areas.
    :param image: the physical range of the running kernel (``_text`` to ``_end``).
    :param initrd: the physical range of the initrd, if it is still known.
    :param reserve_mem: ``reserved_mem_table[:reserved_mem_count]``.
    :param cma_areas: every range of every CMA area (``cma_areas[:cma_area_count]``);
        their pageblocks are ``MIGRATE_CMA`` wherever they lie.
    :param taken_from: ``"live"``, ``"vmcore"`` or ``"qemu"``.
    :param missing: section name -> why it is ``None`` or empty.
    :param corrupt: section name -> the error that found its kernel data corrupt.
    """

    release: Optional[str] = None
    command_line: Optional[str] = None
    arch: Optional[str] = None
    page_shift: int = 12
    memblock_flags: FlagTable = field(default_factory=lambda: FlagTable({}))
    memory_nodes: Tuple[int, ...] = ()
    numa: Optional[bool] = None
    scratch_alignment: Optional[int] = None
    low_address_limit: Optional[int] = None
    kho_scratch_only: Optional[bool] = None
    status: Optional[KhoStatus] = None
    activation: Optional[KhoActivation] = None
    memblock: Optional[MemblockState] = None
    scratch: Optional[ScratchReport] = None
    preserved_out: Optional[PreservedReport] = None
    preserved_in: Optional[PreservedReport] = None
    fdt_out: Optional[FdtSummary] = None
    fdt_in: Optional[FdtSummary] = None
    hugetlb: Optional[HugetlbReport] = None
    image: Optional[Range] = None
    initrd: Optional[Range] = None
    reserve_mem: Tuple[ReserveMem, ...] = ()
    cma_areas: Tuple[CmaRegion, ...] = ()
    taken_from: Optional[str] = None
    missing: Mapping[str, str] = field(default_factory=dict)
    corrupt: Mapping[str, str] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()

    @property
    def kho_boot(self) -> Optional[bool]:
        """Whether the kernel was booted through KHO (``None``: unknown)."""
        return None if self.status is None else self.status.kho_boot

    @property
    def generation(self) -> str:
        return generation_of(self.memblock_flags)

    @property
    def scratch_flag(self) -> Optional[str]:
        return first_flag(self.memblock_flags, SCRATCH_FLAGS)

    @property
    def unpreserved_flag(self) -> Optional[str]:
        return first_flag(self.memblock_flags, UNPRESERVED_FLAGS)

    @property
    def original(self) -> RangeSet:
        """The ``kho_scratch[]`` ranges (empty without a scratch report)."""
        return self.scratch.classes.original if self.scratch is not None else RangeSet()

    def why_missing(self, section: str) -> str:
        """Why ``section`` is ``None`` or empty, in one sentence."""
        if section in self.corrupt:
            return self.corrupt[section]
        return self.missing.get(section, f"the snapshot has no {section}")


def snapshot_document(snapshot: Snapshot) -> Dict[str, Any]:
    """The JSON document ``kho-inspect snapshot`` saves."""
    return document(SNAPSHOT_SCHEMA, SNAPSHOT_VERSION, {"snapshot": to_json(snapshot)})


def load_snapshot_document(obj: Any, what: str = "the snapshot") -> Snapshot:
    """Read back a :func:`snapshot_document`.

    :param what: how to name the file in an error ("the snapshot FILE").
    :raises InputError: another schema, a newer version, or a broken body.
    """
    body = open_document(obj, SNAPSHOT_SCHEMA, SNAPSHOT_VERSION, what)
    try:
        return from_json(Snapshot, body["snapshot"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(f"{what} is a damaged {SNAPSHOT_SCHEMA} document ({e}).") from e
