# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Tracing
-------

The ``kho_inspect.tracing`` module watches a running kernel with BPF (BCC)
for the runtime events that matter across a KHO handover: contiguous and
gigantic allocations, KHO preservations, and the memblock calls that survive
boot. Boot-time memblock and gigantic allocations happen before any BPF
program can exist; :mod:`kho_inspect.bootlog` rebuilds those from the
kernel's ``memblock=debug`` log instead (docs/kernel/memblock.md).

The probe catalogue (:data:`CATALOGUE`) names each kernel function or
tracepoint with its real parameter count (an ``fexit`` program finds the
return value after the last parameter). Which probes exist is decided on the
running kernel, by trying: a symbol missing from ``/proc/kallsyms`` was
inlined or not built; one between ``_sinittext`` and ``_einittext`` is
``__init`` text, freed after boot; one missing from
``available_filter_functions`` is ``notrace`` (no ``fentry``); the rest are
attached with ``fentry``/``fexit`` when BCC supports them
(``BPF.support_kfunc()``) *and* the attach works, else with
``kprobe``/``kretprobe``.

Events travel through a BPF ring buffer (a perf buffer with ``lost_cb`` on
kernels without one). BCC's ring buffer tells Python nothing about drops, so
the program counts them itself in a per-CPU array: failed reserves, return
probes that found no stashed entry, entries that could not be stashed
(:data:`~kho_inspect.model.trace.LOST_KINDS`).

The program text (:func:`program_text`), the event layout
(:data:`EVENT`), decoding (:func:`decode_event`) and the symbol decisions
(:func:`symbol_decision`) are pure; only :class:`Tracer` imports BCC, and
only when it starts.
"""

import contextlib
import os
import struct
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from kho_inspect.errors import InputError, TracingUnavailableError
from kho_inspect.frozen import frozen
from kho_inspect.model.trace import ProbeStatus, TraceEvent, TraceRun, load_trace_document
from kho_inspect.radix import decode_key
from kho_inspect.ranges import Range

__all__ = (
    "Probe",
    "CATALOGUE",
    "EVENT",
    "LOST_INDEX",
    "Kallsyms",
    "parse_kallsyms",
    "parse_filter_functions",
    "symbol_decision",
    "select_probes",
    "Plan",
    "plan_probes",
    "program_text",
    "decode_event",
    "Tracer",
    "BCC_MISSING",
    "load_trace_file",
)

BCC_MISSING = ("BCC is not installed for this Python: install python3-bpfcc from the "
               "distribution (it is not on PyPI)")


@frozen
class Probe:
    """One entry of the catalogue.

    :param name: catalogue name: the kernel function, or ``category:event``.
    :param group: ``contig``, ``kho`` or ``memblock``.
    :param kind: the :attr:`~kho_inspect.model.trace.TraceEvent.kind` of its events.
    :param symbols: kernel symbols to try, in order (older names after newer).
    :param arity: how many parameters the function really has.
    :param ret: ``int``, ``ptr``, ``void`` (a return probe is needed) or
        ``""`` (the event is taken at entry).
    :param api: a ``kho_preserve_*``/``kho_unpreserve_*`` wrapper: the keys
        added or deleted inside it are attributed to it.
    :param fields: for a tracepoint, the fields read into the event's arguments.
    """

    name: str
    group: str
    kind: str
    symbols: Tuple[str, ...] = ()
    arity: int = 0
    ret: str = ""
    api: bool = False
    fields: Tuple[str, ...] = ()

    @property
    def tracepoint(self) -> bool:
        return bool(self.fields)

    @property
    def returns(self) -> bool:
        return self.ret != ""


CATALOGUE: Tuple[Probe, ...] = (
    # mm/page_alloc.c: every runtime contiguous range, gigantic folios included (PFNs
    # [start, end), alloc_flags & ACR_FLAGS_CMA for CMA callers); see docs/kernel/hugetlb.md.
    Probe("alloc_contig_frozen_range_noprof", "contig", "contig-alloc",
          ("alloc_contig_frozen_range_noprof", "alloc_contig_range_noprof"), 4, "int"),
    # mm/cma.c: the PFN a CMA allocation got (hugetlb_cma= areas included).
    Probe("cma:cma_alloc_finish", "contig", "cma-alloc", fields=("pfn", "count", "errorno")),
    # mm/hugetlb_cma.c: a gigantic folio from a hugetlb_cma= area (order, gfp, nid).
    Probe("hugetlb_cma_alloc_frozen_folio", "contig", "hugetlb-cma-alloc",
          ("hugetlb_cma_alloc_frozen_folio", "hugetlb_cma_alloc_folio"), 4, "ptr"),
    # kernel/liveupdate/kexec_handover.c: the preservation API and the radix tree it
    # ends in (docs/kernel/radix.md: a key is a physical address and an order).
    Probe("kho_preserve_folio", "kho", "preserve-api", ("kho_preserve_folio",), 1, "int",
          api=True),
    Probe("kho_preserve_pages", "kho", "preserve-api", ("kho_preserve_pages",), 2, "int",
          api=True),
    Probe("kho_preserve_vmalloc", "kho", "preserve-api", ("kho_preserve_vmalloc",), 2, "int",
          api=True),
    Probe("kho_alloc_preserve", "kho", "preserve-api", ("kho_alloc_preserve",), 1, "ptr",
          api=True),
    Probe("kho_unpreserve_folio", "kho", "unpreserve-api", ("kho_unpreserve_folio",), 1,
          "void", api=True),
    Probe("kho_unpreserve_pages", "kho", "unpreserve-api", ("kho_unpreserve_pages",), 2,
          "void", api=True),
    Probe("kho_unpreserve_vmalloc", "kho", "unpreserve-api", ("kho_unpreserve_vmalloc",), 1,
          "void", api=True),
    Probe("kho_unpreserve_free", "kho", "unpreserve-api", ("kho_unpreserve_free",), 1,
          "void", api=True),
    Probe("kho_radix_add_key", "kho", "preserve", ("kho_radix_add_key",), 2, "int"),
    Probe("kho_radix_del_key", "kho", "unpreserve", ("kho_radix_del_key",), 2),
    # mm/memblock.c: __init_memblock, kept after boot only with ARCH_KEEP_MEMBLOCK or
    # MEMORY_HOTPLUG (docs/kernel/memblock.md).
    Probe("__memblock_reserve", "memblock", "memblock-reserve", ("__memblock_reserve",), 4),
    Probe("memblock_phys_free", "memblock", "memblock-free", ("memblock_phys_free",), 2),
    Probe("memblock_add_node", "memblock", "memblock-add", ("memblock_add_node",), 4),
    Probe("memblock_remove", "memblock", "memblock-remove", ("memblock_remove",), 2),
)
"""Every probe ``kho-inspect trace`` knows, in report order."""

GROUPS = ("contig", "kho", "memblock")


# --- the event record -----------------------------------------------------------

EVENT: Tuple[Tuple[str, str, str], ...] = (
    ("ts_ns", "u64", "Q"), ("a0", "u64", "Q"), ("a1", "u64", "Q"), ("a2", "u64", "Q"),
    ("a3", "u64", "Q"), ("ret", "u64", "Q"), ("probe", "u32", "I"), ("api", "u32", "I"),
    ("pid", "u32", "I"), ("tid", "u32", "I"), ("cpu", "u32", "I"), ("stack_id", "s32", "i"),
    ("comm", "char", "16s"),
)
"""``struct event_t``: (field, C type, struct format); the C struct and the Python
decoder are both generated from this, so they cannot drift apart."""

EVENT_STRUCT = struct.Struct("<" + "".join(f for _, _, f in EVENT))

LOST_INDEX = {"reserve_failed": 0, "return_without_entry": 1, "entry_not_stashed": 2}
"""Slots of the program's per-CPU ``lost`` array."""


def _c_struct() -> str:
    lines = []
    for name, ctype, _ in EVENT:
        lines.append(f"    {ctype} {name}[16];" if ctype == "char" else f"    {ctype} {name};")
    return "struct event_t {\n" + "\n".join(lines) + "\n};"


# --- symbols ----------------------------------------------------------------------


@frozen
class Kallsyms:
    """What ``/proc/kallsyms`` says about the names that matter.

    :param addresses: ``{name: address}`` of built-in (non-module) symbols;
        addresses are 0 when the reader may not see them.
    :param init_text: ``(_sinittext, _einittext)`` when known.
    """

    addresses: Mapping[str, int]
    init_text: Optional[Tuple[int, int]] = None

    def clones(self, name: str) -> List[str]:
        """Compiler clones of ``name`` (``name.isra.0``, ``name.constprop.0``, ...)."""
        return sorted(n for n in self.addresses if n.startswith(name + "."))


def parse_kallsyms(text: str, wanted: Optional[Set[str]] = None) -> Kallsyms:
    """Parse ``/proc/kallsyms`` (``ADDR TYPE NAME [MODULE]`` lines).

    :param wanted: keep only these names and their ``.clone`` variants (the
        file has ~150k lines).

    >>> k = parse_kallsyms("ffffffff81000000 T _stext\\n"
    ...                    "ffffffff83000000 T _sinittext\\n"
    ...                    "ffffffff83100000 T memblock_alloc_try_nid\\n"
    ...                    "ffffffff83200000 T _einittext\\n"
    ...                    "ffffffff81200000 t foo.isra.0\\n")
    >>> k.init_text == (0xffffffff83000000, 0xffffffff83200000), k.clones("foo")
    (True, ['foo.isra.0'])
    """
    addresses: Dict[str, int] = {}
    bases = {n.split(".")[0] for n in wanted} if wanted else None
    init = [None, None]
    for line in text.splitlines():
        words = line.split()
        if len(words) != 3:  # module symbols carry a 4th word
            continue
        addr, name = int(words[0], 16), words[2]
        if name == "_sinittext":
            init[0] = addr
        elif name == "_einittext":
            init[1] = addr
        if bases is None or name.split(".")[0] in bases:
            addresses[name] = addr
    init_text = (init[0], init[1]) if init[0] and init[1] else None
    return Kallsyms(addresses, init_text)


def parse_filter_functions(text: str) -> Set[str]:
    """Names in ``available_filter_functions`` (``name`` or ``name [module]`` lines)."""
    return {line.split()[0] for line in text.splitlines() if line.strip()}


def symbol_decision(probe: Probe, kallsyms: Kallsyms, traceable: Optional[Set[str]],
                    tracepoints: Optional[Set[str]] = None) -> Tuple[Optional[str], str]:
    """The symbol to attach ``probe`` to, or ``None`` and why not (one clause).

    :param traceable: ``available_filter_functions`` (``None``: unreadable).
    :param tracepoints: the ``category:event`` names that exist (``None``: unknown).

    >>> k = Kallsyms({"a": 0x1000, "b.isra.0": 0x2000, "c": 0x5000}, (0x4000, 0x6000))
    >>> symbol_decision(Probe("a", "kho", "x", ("a",)), k, {"a"})
    ('a', '')
    >>> symbol_decision(Probe("b", "kho", "x", ("b",)), k, None)[1]
    'only the compiler clone b.isra.0 exists (its arguments may differ)'
    >>> symbol_decision(Probe("c", "kho", "x", ("c",)), k, None)[1]
    '__init: its text was freed after boot'
    """
    if probe.tracepoint:
        if tracepoints is not None and probe.name not in tracepoints:
            return None, "no such tracepoint on this kernel"
        return probe.name, ""
    reasons = []
    for sym in probe.symbols:
        if sym not in kallsyms.addresses:
            clones = kallsyms.clones(sym)
            reasons.append(f"only the compiler clone {clones[0]} exists (its arguments may "
                           "differ)" if clones else "")
            continue
        addr = kallsyms.addresses[sym]
        if kallsyms.init_text and addr and kallsyms.init_text[0] <= addr < kallsyms.init_text[1]:
            return None, "__init: its text was freed after boot"
        if traceable is not None and sym not in traceable:
            return sym, "notrace (not in available_filter_functions): fentry cannot attach"
        return sym, "" if sym == probe.name else f"older name {sym}"
    reason = next((r for r in reasons if r), "")
    return None, reason or ("not in /proc/kallsyms: inlined into its callers, or not built "
                            "into this kernel")


def select_probes(names: Sequence[str]) -> Tuple[Probe, ...]:
    """The catalogue entries named (a probe name or a group), or all of them.

    :raises InputError: a name that is neither.
    """
    if not names:
        return CATALOGUE
    out: List[Probe] = []
    for name in names:
        found = [p for p in CATALOGUE if name in (p.name, p.group)]
        if not found:
            known = ", ".join([*GROUPS, *(p.name for p in CATALOGUE)])
            raise InputError(f"No probe or group {name!r}", available=known.split(", "))
        out += [p for p in found if p not in out]
    return tuple(out)


@frozen
class Plan:
    """The probes that exist here (with their symbols) and the reasons for the rest."""

    usable: Tuple[Tuple[Probe, str, str], ...]
    missing: Tuple[Tuple[Probe, str], ...]


def plan_probes(probes: Sequence[Probe], kallsyms: Kallsyms, traceable: Optional[Set[str]],
                tracepoints: Optional[Set[str]]) -> Plan:
    """Split ``probes`` into ``(probe, symbol, note)`` to attach and ``(probe, reason)``."""
    usable, missing = [], []
    for p in probes:
        sym, why = symbol_decision(p, kallsyms, traceable, tracepoints)
        if sym is None:
            missing.append((p, why))
        else:
            usable.append((p, sym, why))
    return Plan(tuple(usable), tuple(missing))


# --- the program --------------------------------------------------------------------

_PROLOGUE = """\
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>

{struct}

struct stash_key_t {{
    u32 tid;
    u32 probe;
}};

struct stash_t {{
    u64 a[4];
    u32 set_api;
    u32 pad;
}};

{buffer}
BPF_PERCPU_ARRAY(lost, u64, {nlost});
BPF_PERCPU_ARRAY(hits, u64, {nprobes});
BPF_HASH(stash, struct stash_key_t, struct stash_t, 10240);
BPF_HASH(api_of, u32, u32, 10240);
{stacks}
static __always_inline void count_lost(int slot)
{{
    u64 *v = lost.lookup(&slot);
    if (v)
        (*v)++;
}}

static __always_inline void count_hit(int probe)
{{
    u64 *v = hits.lookup(&probe);
    if (v)
        (*v)++;
}}

static __always_inline int emit(void *ctx, u32 probe, u64 a0, u64 a1, u64 a2, u64 a3, u64 ret)
{{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
{reserve}
    ev->ts_ns = bpf_ktime_get_ns();
    ev->a0 = a0;
    ev->a1 = a1;
    ev->a2 = a2;
    ev->a3 = a3;
    ev->ret = ret;
    ev->probe = probe;
    u32 *cur = api_of.lookup(&tid);
    ev->api = cur ? *cur : 0;
    ev->pid = id >> 32;
    ev->tid = tid;
    ev->cpu = bpf_get_smp_processor_id();
    ev->stack_id = {stack_id};
    bpf_get_current_comm(&ev->comm, sizeof(ev->comm));
{submit}
    return 0;
}}

/* Mark the thread as inside a kho_(un)preserve_* call, unless an outer one is. */
static __always_inline u32 enter_api(u32 tid, u32 probe)
{{
    u32 *cur = api_of.lookup(&tid);
    if (cur)
        return 0;
    api_of.update(&tid, &probe);
    return 1;
}}
"""

_RINGBUF = ("BPF_RINGBUF_OUTPUT(events, {pages});",
            "    struct event_t *ev = events.ringbuf_reserve(sizeof(struct event_t));\n"
            "    if (!ev) {{\n        count_lost({slot});\n        return 0;\n    }}",
            "    events.ringbuf_submit(ev, 0);")
_PERF = ("BPF_PERF_OUTPUT(events);",
         "    struct event_t evbuf = {{}};\n    struct event_t *ev = &evbuf;",
         "    if (events.perf_submit(ctx, ev, sizeof(*ev)) < 0)\n        count_lost({slot});")


_NOT_STASHED = LOST_INDEX["entry_not_stashed"]


def _args(n: int, source: Callable[[int], str]) -> List[str]:
    return [source(i) if i < n else "0" for i in range(4)]


def _kprobe_funcs(pid: int, p: Probe) -> str:
    regs = [f"PT_REGS_PARM{i + 1}(ctx)" for i in range(min(p.arity, 4))]
    if not p.returns:
        args = ", ".join(_args(len(regs), lambda i: regs[i]))
        return (f"int kp_{pid}(struct pt_regs *ctx)\n{{\n    count_hit({pid});\n"
                f"    emit(ctx, {pid}, {args}, 0);\n    return 0;\n}}\n")
    stash = "".join(f"    s.a[{i}] = {r};\n" for i, r in enumerate(regs))
    api = (f"    s.set_api = enter_api(k.tid, {pid});\n" if p.api else "")
    clear = ("    if (set_api) {\n        u32 tid = k.tid;\n        api_of.delete(&tid);\n    }\n"
             if p.api else "")
    args = ", ".join(f"s->a[{i}]" for i in range(4))
    return (
        f"int kp_{pid}(struct pt_regs *ctx)\n{{\n"
        f"    struct stash_key_t k = {{.tid = (u32)bpf_get_current_pid_tgid(), .probe = {pid}}};\n"
        f"    struct stash_t s = {{}};\n    count_hit({pid});\n{stash}{api}"
        f"    if (stash.update(&k, &s) != 0)\n        count_lost({_NOT_STASHED});\n"
        f"    return 0;\n}}\n\n"
        f"int krp_{pid}(struct pt_regs *ctx)\n{{\n"
        f"    struct stash_key_t k = {{.tid = (u32)bpf_get_current_pid_tgid(), .probe = {pid}}};\n"
        f"    struct stash_t *s = stash.lookup(&k);\n"
        f"    if (!s) {{\n        count_lost({LOST_INDEX['return_without_entry']});\n"
        f"        return 0;\n    }}\n"
        f"{'    u32 set_api = s->set_api;' + chr(10) if p.api else ''}"
        f"    emit(ctx, {pid}, {args}, PT_REGS_RC(ctx));\n"
        f"    stash.delete(&k);\n{clear}    return 0;\n}}\n")


def _kfunc_funcs(pid: int, p: Probe, sym: str) -> str:
    params = ", ".join(f"u64 a{i}" for i in range(p.arity))
    args = ", ".join(_args(min(p.arity, 4), lambda i: f"a{i}"))
    if not p.returns:
        return (f"KFUNC_PROBE({sym}{', ' + params if params else ''})\n{{\n"
                f"    count_hit({pid});\n    emit(ctx, {pid}, {args}, 0);\n    return 0;\n}}\n")
    ret_param = ", long ret" if p.ret != "void" else ""
    ret = "ret" if p.ret != "void" else "0"
    sep = ", " if params else ""
    if not p.api:
        return (f"KRETFUNC_PROBE({sym}{sep}{params}{ret_param})\n{{\n    count_hit({pid});\n"
                f"    emit(ctx, {pid}, {args}, {ret});\n    return 0;\n}}\n")
    return (
        f"KFUNC_PROBE({sym}{sep}{params})\n{{\n"
        f"    struct stash_key_t k = {{.tid = (u32)bpf_get_current_pid_tgid(), .probe = {pid}}};\n"
        f"    struct stash_t s = {{}};\n    count_hit({pid});\n"
        f"    s.set_api = enter_api(k.tid, {pid});\n"
        f"    if (stash.update(&k, &s) != 0)\n        count_lost({_NOT_STASHED});\n"
        f"    return 0;\n}}\n\n"
        f"KRETFUNC_PROBE({sym}{sep}{params}{ret_param})\n{{\n"
        f"    struct stash_key_t k = {{.tid = (u32)bpf_get_current_pid_tgid(), .probe = {pid}}};\n"
        f"    struct stash_t *s = stash.lookup(&k);\n"
        f"    if (!s) {{\n        count_lost({LOST_INDEX['return_without_entry']});\n"
        f"        return 0;\n    }}\n"
        f"    u32 set_api = s->set_api;\n"
        f"    emit(ctx, {pid}, {args}, {ret});\n"
        f"    stash.delete(&k);\n"
        f"    if (set_api) {{\n        u32 tid = k.tid;\n        api_of.delete(&tid);\n    }}\n"
        f"    return 0;\n}}\n")


def _tracepoint_func(pid: int, p: Probe) -> str:
    category, event = p.name.split(":")
    args = ", ".join(_args(len(p.fields), lambda i: f"(u64)(s64)args->{p.fields[i]}"))
    return (f"TRACEPOINT_PROBE({category}, {event})\n{{\n    count_hit({pid});\n"
            f"    emit(args, {pid}, {args}, 0);\n    return 0;\n}}\n")


def kfunc_name(sym: str, ret: bool) -> str:
    """The function BCC's ``KFUNC_PROBE``/``KRETFUNC_PROBE`` defines for ``sym``."""
    return f"{'kretfunc' if ret else 'kfunc'}__vmlinux__{sym}"


def _is_identifier(sym: str) -> bool:
    return sym.isidentifier()


def program_text(usable: Sequence[Tuple[Probe, str]], ringbuf: bool = True, kfunc: bool = True,
                 stacks: bool = False, ring_pages: int = 2048) -> str:
    """The BPF C program for ``(probe, symbol)`` pairs (probe ids are 1-based positions).

    Each function probe gets a kprobe pair (``kp_ID``/``krp_ID``) and, with
    ``kfunc``, an ``fentry``/``fexit`` variant; :class:`Tracer` attaches one of them.
    """
    buffer, reserve, submit = _RINGBUF if ringbuf else _PERF
    slot = LOST_INDEX["reserve_failed"]
    parts = [_PROLOGUE.format(
        struct=_c_struct(), buffer=buffer.format(pages=ring_pages), nlost=len(LOST_INDEX),
        nprobes=len(usable) + 1,
        stacks="BPF_STACK_TRACE(stacks, 4096);\n" if stacks else "",
        reserve=reserve.format(slot=slot), submit=submit.format(slot=slot),
        stack_id="stacks.get_stackid(ctx, 0)" if stacks else "-1")]
    for pid, (p, sym) in enumerate(usable, start=1):
        parts.append(f"/* {pid}: {p.name} ({p.kind}) */")
        if p.tracepoint:
            parts.append(_tracepoint_func(pid, p))
            continue
        parts.append(_kprobe_funcs(pid, p))
        if kfunc and _is_identifier(sym):
            parts.append(_kfunc_funcs(pid, p, sym))
    return "\n".join(parts)


# --- decoding -------------------------------------------------------------------------


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _range(p: Probe, a: Sequence[int], page_shift: int) -> Tuple[Optional[int], int]:
    if p.kind == "contig-alloc":
        return a[0] << page_shift, max(a[1] - a[0], 0) << page_shift
    if p.kind == "cma-alloc":
        return (None, 0) if a[0] == (1 << 64) - 1 else (a[0] << page_shift, a[1] << page_shift)
    if p.kind in ("preserve", "unpreserve"):
        if not a[1]:
            return None, 0
        phys, order = decode_key(a[1], page_shift)
        return phys, 1 << (page_shift + order)
    if p.group == "memblock":
        return a[0], a[1]
    return None, 0


def _ok(p: Probe, a: Sequence[int], ret: Optional[int]) -> Optional[bool]:
    if p.kind == "cma-alloc":
        return _signed(a[2], 32) == 0 and a[0] != (1 << 64) - 1
    if p.ret == "int":
        return ret == 0
    if p.ret == "ptr":
        return bool(ret)
    return None


def decode_event(raw: bytes, seq: int, probes: Sequence[Probe], page_shift: int = 12,
                 stack: Tuple[str, ...] = (),
                 classify: Optional[Callable[[Range], str]] = None) -> TraceEvent:
    """A :class:`~kho_inspect.model.trace.TraceEvent` from one ``struct event_t``.

    :param probes: the probes in program order (probe id ``i`` is ``probes[i - 1]``).
    :param classify: names the class of the event's range (``unknown`` without it;
        ``-`` for an event without a range).
    :raises ValueError: a record of the wrong size or an unknown probe id.
    """
    if len(raw) < EVENT_STRUCT.size:
        raise ValueError(f"event record of {len(raw)} bytes, expected {EVENT_STRUCT.size}")
    values = dict(zip((n for n, _, _ in EVENT), EVENT_STRUCT.unpack_from(raw)))
    pid = values["probe"]
    if not 1 <= pid <= len(probes):
        raise ValueError(f"event of unknown probe id {pid}")
    p = probes[pid - 1]
    args = tuple(values[f"a{i}"] for i in range(4))
    ret: Optional[int] = None
    if p.ret == "int":
        ret = _signed(values["ret"], 32)
    elif p.ret == "ptr":
        ret = values["ret"]
    phys, size = _range(p, args, page_shift)
    api_id = values["api"]
    api = probes[api_id - 1].name if 1 <= api_id <= len(probes) and api_id != pid else ""
    n = max(p.arity, len(p.fields))
    klass = "-" if phys is None else classify(Range(phys, size)) if classify else "unknown"
    return TraceEvent(
        seq=seq, ts_ns=values["ts_ns"], probe=p.name, kind=p.kind, phys=phys, size=size,
        ok=_ok(p, args, ret), ret=ret, args=args[:n], api=api, pid=values["pid"],
        tid=values["tid"], comm=values["comm"].split(b"\0", 1)[0].decode(errors="replace"),
        cpu=values["cpu"], klass=klass, stack=stack)


# --- the BCC side ------------------------------------------------------------------------

TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _tracefs() -> Optional[str]:
    return next((d for d in TRACEFS if os.path.isdir(os.path.join(d, "events"))), None)


def kernel_facts(probes: Sequence[Probe]) -> Tuple[Kallsyms, Optional[Set[str]], Set[str]]:
    """``/proc/kallsyms``, ``available_filter_functions`` and the tracepoints of
    ``probes`` on the running kernel (``None`` for what cannot be read)."""
    wanted = {s for p in probes for s in p.symbols} | {"bpf_ringbuf_reserve"}
    kallsyms = parse_kallsyms(_read("/proc/kallsyms") or "", wanted)
    tfs = _tracefs()
    traceable = None
    tracepoints: Set[str] = set()  # no tracefs: no tracepoint can attach
    if tfs is not None:
        text = _read(os.path.join(tfs, "available_filter_functions"))
        traceable = parse_filter_functions(text) if text is not None else None
        tracepoints = {p.name for p in probes if p.tracepoint and os.path.isdir(
            os.path.join(tfs, "events", *p.name.split(":")))}
    return kallsyms, traceable, tracepoints


class Tracer:
    """Compile, attach, poll and account for one trace (needs root and BCC).

    :param on_event: called with each decoded event.
    :param classify: names the class of each event's range.
    """

    def __init__(self, plan: Plan, on_event: Callable[[TraceEvent], None], stacks: bool = False,
                 kfunc: Optional[bool] = None, ringbuf: Optional[bool] = None,
                 classify: Optional[Callable[[Range], str]] = None,
                 buffer_pages: int = 2048) -> None:
        self.plan = plan
        self.buffer_pages = buffer_pages
        self.on_event = on_event
        self.classify = classify
        self.stacks = stacks
        self.want_kfunc = kfunc
        self.want_ringbuf = ringbuf
        self.probes = tuple(p for p, _, _ in plan.usable)
        self.status: Dict[str, ProbeStatus] = {}
        self.seq = 0
        self.perf_lost = 0
        self.decode_errors = 0
        self.bpf: Any = None
        self.ringbuf = True
        self.kfunc = False
        self.page_shift = _page_shift()

    # -- setup --

    @staticmethod
    def import_bcc() -> Any:
        if os.geteuid() != 0:
            raise TracingUnavailableError(
                "Tracing needs root (BPF programs, kprobes and /proc/kallsyms addresses)",
                "run it as root")
        try:
            import bcc  # noqa: F401  (from the distribution: python3-bpfcc)
        except ImportError as e:
            raise TracingUnavailableError(f"{BCC_MISSING} ({e})") from e
        return bcc

    def start(self) -> None:
        bcc = self.import_bcc()
        BPF = bcc.BPF

        class _BPF(BPF):  # type: ignore[misc, valid-type]
            def _trace_autoload(self) -> None:  # attach one by one, with fallbacks
                pass

        kallsyms_ringbuf = BPF.ksymname("bpf_ringbuf_reserve") != -1
        self.ringbuf = kallsyms_ringbuf if self.want_ringbuf is None else self.want_ringbuf
        self.kfunc = bool(BPF.support_kfunc()) if self.want_kfunc is None else self.want_kfunc
        text = program_text([(p, s) for p, s, _ in self.plan.usable], self.ringbuf, self.kfunc,
                            self.stacks, self.buffer_pages)
        try:
            self.bpf = _BPF(text=text)
        except Exception as e:  # BCC raises bare Exceptions
            raise TracingUnavailableError(_bpf_failure(str(e))) from e
        for pid, (p, sym, note) in enumerate(self.plan.usable, start=1):
            self.status[p.name] = self._attach(pid, p, sym, note)
        if self.ringbuf:
            self.bpf["events"].open_ring_buffer(self._callback)
        else:
            self.bpf["events"].open_perf_buffer(self._callback, page_cnt=self.buffer_pages,
                                                lost_cb=self._lost)

    def _attach(self, pid: int, p: Probe, sym: str, note: str) -> ProbeStatus:
        b = self.bpf
        if p.tracepoint:
            try:
                b.attach_tracepoint(tp=p.name.encode(),
                                    fn_name=("tracepoint__" + p.name.replace(":", "__")).encode())
                return ProbeStatus(p.name, sym, p.group, True, "tracepoint", note)
            except Exception as e:
                return ProbeStatus(p.name, sym, p.group, False, None, f"attach failed: {e}")
        notes = [note] if note else []
        if self.kfunc and _is_identifier(sym) and "notrace" not in note:
            try:
                how = self._attach_kfunc(p, sym)
                return ProbeStatus(p.name, sym, p.group, True, how, "; ".join(notes))
            except Exception as e:
                notes.append(f"fentry/fexit failed ({_first_line(e)}), kprobe used")
        try:
            b.attach_kprobe(event=sym.encode(), fn_name=f"kp_{pid}".encode())
            how = "kprobe"
            if p.returns:
                b.attach_kretprobe(event=sym.encode(), fn_name=f"krp_{pid}".encode(),
                                   maxactive=64)
                how = "kprobe+kretprobe"
            return ProbeStatus(p.name, sym, p.group, True, how, "; ".join(notes))
        except Exception as e:
            _detach_kprobe(b, sym)
            notes.append(f"kprobe failed: {_first_line(e)}")
            return ProbeStatus(p.name, sym, p.group, False, None, "; ".join(notes))

    def _attach_kfunc(self, p: Probe, sym: str) -> str:
        b = self.bpf
        if not p.returns:
            b.attach_kfunc(fn_name=kfunc_name(sym, False).encode())
            return "fentry"
        if p.api:
            b.attach_kfunc(fn_name=kfunc_name(sym, False).encode())
            try:
                b.attach_kretfunc(fn_name=kfunc_name(sym, True).encode())
            except Exception:
                b.detach_kfunc(fn_name=kfunc_name(sym, False).encode())
                raise
            return "fentry+fexit"
        b.attach_kretfunc(fn_name=kfunc_name(sym, True).encode())
        return "fexit"

    # -- running --

    def _callback(self, ctx: Any, data: Any, size: int) -> None:
        import ctypes

        raw = ctypes.string_at(data, size)
        try:
            stack: Tuple[str, ...] = ()
            if self.stacks:
                stack = self._stack(EVENT_STRUCT.unpack_from(raw)[11])
            event = decode_event(raw, self.seq, self.probes, self.page_shift, stack,
                                 self.classify)
        except ValueError:
            self.decode_errors += 1
            return
        self.seq += 1
        self.on_event(event)

    def _stack(self, stack_id: int) -> Tuple[str, ...]:
        if stack_id < 0:
            return ()
        b = self.bpf
        return tuple(b.ksym(a, show_offset=True).decode(errors="replace")
                     for a in b["stacks"].walk(stack_id))

    def _lost(self, lost: int) -> None:
        self.perf_lost += lost

    def poll(self, timeout_ms: int = 100) -> None:
        if self.ringbuf:
            self.bpf.ring_buffer_poll(timeout_ms)
        else:
            self.bpf.perf_buffer_poll(timeout_ms)

    def drain(self) -> None:
        """Take what is still buffered once the probes are detached."""
        if self.ringbuf:
            self.bpf.ring_buffer_consume()
        else:
            self.bpf.perf_buffer_poll(0)

    def detach(self) -> None:
        """Detach every probe (the maps stay readable)."""
        b = self.bpf
        for name in list(getattr(b, "kfunc_entry_fds", {})):
            b.detach_kfunc(fn_name=name)
        for name in list(getattr(b, "kfunc_exit_fds", {})):
            b.detach_kretfunc(fn_name=name)
        for p, sym, _ in self.plan.usable:
            if p.tracepoint:
                with contextlib.suppress(Exception):
                    b.detach_tracepoint(tp=p.name.encode())
            else:
                _detach_kprobe(b, sym)

    def counters(self) -> Tuple[Dict[str, int], Dict[str, int]]:
        """``(lost by kind, hits by probe name)`` summed over CPUs."""
        lost_t, hits_t = self.bpf["lost"], self.bpf["hits"]
        lost = {k: int(lost_t.sum(lost_t.Key(i)).value) for k, i in LOST_INDEX.items()}
        hits = {p.name: int(hits_t.sum(hits_t.Key(i)).value)
                for i, p in enumerate(self.probes, start=1)}
        return lost, hits

    @staticmethod
    def kprobe_profile() -> str:
        tfs = _tracefs()
        return (_read(os.path.join(tfs, "kprobe_profile")) or "") if tfs else ""

    def close(self) -> None:
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None


def _detach_kprobe(b: Any, sym: str) -> None:
    for detach in (b.detach_kretprobe, b.detach_kprobe):
        with contextlib.suppress(Exception):
            detach(event=sym.encode())


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _bpf_failure(message: str) -> str:
    """One sentence for a BPF program that would not compile or load."""
    low = message.lower()
    if "operation not permitted" in low or "permission denied" in low:
        return ("The kernel does not permit BPF here (lockdown, a seccomp filter or "
                "kernel.unprivileged_bpf_disabled): " + _first_line(Exception(message)))
    if "kernel headers" in low or "kconfig.h" in low:
        return ("BCC cannot find kernel headers for this kernel: install "
                "linux-headers-$(uname -r) or boot a kernel with CONFIG_IKHEADERS")
    return "BCC could not build the BPF program: " + _first_line(Exception(message))


def _page_shift() -> int:
    return (os.sysconf("SC_PAGE_SIZE") - 1).bit_length()


def owner_suffix() -> str:
    """How BCC suffixes this process's kprobe events (``_bcc_<pid>``)."""
    return f"_bcc_{os.getpid()}"


def probe_statuses(plan: Plan, attached: Mapping[str, ProbeStatus], hits: Mapping[str, int],
                   order: Iterable[Probe]) -> Tuple[ProbeStatus, ...]:
    """One :class:`ProbeStatus` per probe of ``order``: attached ones with their BPF hit
    counts, missing ones with their reason."""
    missing = {p.name: why for p, why in plan.missing}
    symbols = {p.name: s for p, s, _ in plan.usable}
    out = []
    for p in order:
        if p.name in attached:
            st = attached[p.name]
            out.append(ProbeStatus(st.name, st.symbol, st.group, st.attached, st.how,
                                   st.reason, hits.get(p.name, 0)))
        elif p.name in missing:
            out.append(ProbeStatus(p.name, p.symbols[0] if p.symbols else p.name, p.group,
                                   False, None, missing[p.name]))
        else:
            out.append(ProbeStatus(p.name, symbols.get(p.name, p.name), p.group, False, None,
                                   "not attached"))
    return tuple(out)


def load_trace_file(path: str) -> TraceRun:
    """Read a trace saved by ``kho-inspect trace -o FILE``.

    :raises InputError: the file cannot be read, is not JSON or not a trace.
    """
    import json

    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except OSError as e:
        raise InputError(f"Cannot read the trace {path}: {e.strerror}", path=path) from e
    except ValueError as e:
        raise InputError(f"The trace {path} is not JSON ({e})", path=path) from e
    return load_trace_document(obj, f"the trace {path}")
