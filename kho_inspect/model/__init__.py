# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Model
-----

The ``kho_inspect.model`` package holds the plain data that walkers produce
and checks, views and reports consume: frozen dataclasses, one module per
concept, no drgn. Every type serialises to JSON and back without loss
(:mod:`kho_inspect.model.base`), so a snapshot saved in kernel N can be checked
or rendered in kernel N+1 or on another machine.

Modules: :mod:`~kho_inspect.model.memblock` (regions, flag tables,
``reserve_mem``), :mod:`~kho_inspect.model.scratch` (scratch areas, classes
and their cost), :mod:`~kho_inspect.model.preserved` (preserved memory),
:mod:`~kho_inspect.model.kho` (KHO status, root FDT and blobs),
:mod:`~kho_inspect.model.pageblock` (pageblock migratetypes), and further one
module per concept (hugetlb, snapshots, check findings). The names most
callers need are re-exported here.
"""

from kho_inspect.model.base import JsonModel, document, from_json, open_document, to_json
from kho_inspect.model.kho import BlobReport, KhoFdtReport, KhoStatus
from kho_inspect.model.memblock import (
    MEMBLOCK_TYPES,
    FlagTable,
    MemblockState,
    MemblockType,
    Region,
    ReserveMem,
)
from kho_inspect.model.pageblock import PageblockLayout, PageblockRun
from kho_inspect.model.preserved import PreservedReport, PreservedRow
from kho_inspect.model.scratch import (
    CmaCounters,
    CmaUsage,
    NodeUse,
    ScratchArea,
    ScratchClasses,
    ScratchReport,
)

__all__ = (
    "JsonModel",
    "document",
    "from_json",
    "open_document",
    "to_json",
    "MEMBLOCK_TYPES",
    "FlagTable",
    "MemblockState",
    "MemblockType",
    "Region",
    "ReserveMem",
    "BlobReport",
    "KhoFdtReport",
    "KhoStatus",
    "PageblockLayout",
    "PageblockRun",
    "PreservedReport",
    "PreservedRow",
    "CmaCounters",
    "CmaUsage",
    "NodeUse",
    "ScratchArea",
    "ScratchClasses",
    "ScratchReport",
)
