# SPDX-License-Identifier: LGPL-2.1-or-later
"""
FDT view
--------

Sections of ``kho-inspect kho fdt``: the root FDT (where it is, its ABI
version, ``preserved-memory-map``), its sub-blobs, and one section per blob
in its decoded form (a table for the blobs kho-inspect knows, device-tree
source for other FDTs, a hex dump for anything else).
"""

from collections import Counter
from typing import Any, Callable, Dict, List, Sequence, Tuple

from kho_inspect.fdt import KexecMetadata, KhoTestBlob, LuoSer, MemblockBlob, dts_lines, hexdump
from kho_inspect.model.kho import DIRECTION_NAMES, BlobReport, KhoFdtReport
from kho_inspect.render import Section, hex_or_none, human_size

__all__ = ("sections",)

_FOLIOS_SHOWN = 16
_HEX_LINES_SHOWN = 64


def _hex(data: bytes, base: int, full: bool) -> Tuple[List[str], List[str]]:
    # (block, notes): the hex dump, cut to _HEX_LINES_SHOWN lines unless full.
    lines = hexdump(data, base)
    if full or len(lines) <= _HEX_LINES_SHOWN:
        return lines, []
    more = f"... {len(lines) - _HEX_LINES_SHOWN} more lines (--raw or --json for all)"
    return lines[:_HEX_LINES_SHOWN], [more]


def _root(report: KhoFdtReport) -> Section:
    where = ("kho_in.fdt_phys" if report.direction == "in" else "kho_out.fdt")
    kind = "phys" if report.physical else "virt"
    rows: List[Sequence[Any]] = [
        ("compatible", f"{report.root.compatible} (ABI version {report.root.version})"),
        ("preserved-memory-map", hex_or_none(report.root.mem_map_phys)),
        ("size", f"{len(report.data)} bytes"),
    ]
    direction = DIRECTION_NAMES[report.direction]
    return Section(f"Root FDT, {direction} ({where} = {kind} {report.address:#x})",
                   ("property", "value"), rows, list(report.root.problems))


def _subnodes(report: KhoFdtReport) -> Section:
    rows = []
    for sub in report.root.subtrees:
        blob = report.blobs.get(sub.name)
        rows.append((sub.name, hex_or_none(sub.phys),
                     "-" if sub.size is None else str(sub.size),
                     (blob.kind if blob else None) or "-",
                     (blob.compatible if blob else None) or "-",
                     "not read" if blob is None else ("error" if blob.problem else "ok")))
    notes = [p for s in report.root.subtrees for p in s.problems]
    return Section("Sub-blobs", ("name", "phys", "size", "kind", "compatible", "status"),
                   rows, notes)


_Body = Tuple[Sequence[str], List[Sequence[Any]], List[str], List[str]]
"""A blob's section body: table headers, rows, notes and preformatted lines."""


def _kv(pairs: Sequence[Tuple[str, Any]], notes: Sequence[str]) -> _Body:
    rows: List[Sequence[Any]] = [(k, "-" if v is None else str(v)) for k, v in pairs]
    return ("field", "value"), rows, list(notes), []


def _metadata(value: KexecMetadata) -> _Body:
    return _kv([("version", value.version), ("previous_release", value.previous_release),
                ("kexec_count", value.kexec_count)], value.problems)


def _memblock(value: MemblockBlob) -> _Body:
    rows: List[Sequence[Any]] = [
        (e.name, e.compatible or "-", hex_or_none(e.start),
         "-" if e.start is None or e.size is None else f"{e.start + e.size - 1:#x}",
         "-" if e.size is None else human_size(e.size))
        for e in value.entries
    ]
    notes = [f"{e.name}: {p}" for e in value.entries for p in e.problems]
    return ("reserve_mem", "compatible", "start", "end", "size"), rows, notes, []


def _luo(value: LuoSer) -> _Body:
    return _kv([("compatible", value.compatible), ("liveupdate_num", value.liveupdate_num),
                ("sessions_pa", f"{value.sessions_pa:#x}"), ("flbs_pa", f"{value.flbs_pa:#x}")],
               value.problems)


def _kho_test(value: KhoTestBlob) -> _Body:
    info = value.folios_info
    headers, rows, notes, block = _kv([
        ("magic", "-" if value.magic is None else
         f"{value.magic:#x} ({'ok' if value.magic_ok else 'WRONG'})"),
        ("nr_folios", value.nr_folios),
        ("folios_info", None if info is None else
         f"first {info.first:#x}, {info.total_pages} pages, order {info.order}, "
         f"flags {'|'.join(info.flag_names) or '0'}"),
        ("csum", None if value.csum is None else f"{value.csum:#x}"),
    ], value.problems)
    if value.folios is not None:
        by_order = Counter(f.order for f in value.folios)
        total = sum(value.page_size << o for o in (f.order for f in value.folios))
        notes.append(f"{len(value.folios)} folios, {human_size(total)}: "
                     + ", ".join(f"order {o}: {n}" for o, n in sorted(by_order.items())))
        block = [f"{f.phys:#x} order {f.order}" for f in value.folios[:_FOLIOS_SHOWN]]
        if len(value.folios) > _FOLIOS_SHOWN:
            notes.append(f"... {len(value.folios) - _FOLIOS_SHOWN} more (--json for all)")
    return headers, rows, notes, block


_RENDERERS: Dict[str, Callable[[Any], _Body]] = {
    "kexec-metadata": _metadata,
    "memblock": _memblock,
    "luo": _luo,
    "kho-test": _kho_test,
}


def _body(blob: BlobReport, report: KhoFdtReport, raw: bool) -> _Body:
    decoded = blob.decoded
    if raw or (decoded is not None and decoded.kind == "raw"):
        if blob.data is None:
            return (), [], [], []
        block, notes = _hex(blob.data, blob.phys or 0, raw)
        return (), [], notes, block
    if decoded is None:
        return (), [], [], []
    if decoded.kind == "fdt":
        return (), [], [], dts_lines(decoded.value, report.byteorder)
    return _RENDERERS[decoded.kind](decoded.value)


def _blob(blob: BlobReport, report: KhoFdtReport, raw: bool) -> Section:
    compat = f", {blob.compatible}" if blob.compatible else ""
    title = f"Blob {blob.name} ({blob.kind or 'unread'}{compat}, phys {hex_or_none(blob.phys)})"
    headers, rows, notes, block = _body(blob, report, raw)
    errors = [f"error: {blob.problem}"] if blob.problem else []
    return Section(title, headers, rows, errors + notes + list(blob.notes), list(block))


def sections(report: KhoFdtReport, raw: bool = False, only_blobs: bool = False) -> List[Section]:
    """The text/Markdown view of an FDT report."""
    out = [] if only_blobs else [_root(report), _subnodes(report)]
    if raw and not only_blobs:
        out.append(Section("Root FDT bytes", block=hexdump(report.data, 0)))
    out += [_blob(b, report, raw) for b in report.blobs.values()]
    return out
