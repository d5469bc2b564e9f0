# SPDX-License-Identifier: LGPL-2.1-or-later
"""kho-inspect trace without BPF: the program text, the event layout and its decoding,
the symbol decisions, classification and violations, the lost-event account, the JSON
document, and the command line against a stand-in for BCC's Python module (the real
BPF run is tests/lab/test_trace.py)."""

import ctypes
import json
import re
import sys
import types

import pytest
from synth.handover import kernel_n, kernel_n1

from kho_inspect.checks.trace import (
    RULE_CONTIG,
    RULE_PRESERVE,
    classify_event,
    classify_events,
    counts,
    event_findings,
    findings,
    lost_from_counters,
    parse_kprobe_profile,
    ranges_of,
)
from kho_inspect.cli import Session, run
from kho_inspect.errors import EXIT_CANNOT_INSPECT, EXIT_OK, EXIT_VIOLATIONS, InputError
from kho_inspect.model.trace import (
    ProbeStatus,
    TraceEvent,
    TraceLost,
    TraceRun,
    load_trace_document,
    trace_document,
)
from kho_inspect.radix import encode_key
from kho_inspect.ranges import Range, RangeSet
from kho_inspect.tracing import (
    CATALOGUE,
    EVENT,
    EVENT_STRUCT,
    Kallsyms,
    decode_event,
    parse_filter_functions,
    parse_kallsyms,
    plan_probes,
    program_text,
    select_probes,
    symbol_decision,
)

GB = 1 << 30
PROBE = {p.name: p for p in CATALOGUE}


def pack(probe_id, a=(0, 0, 0, 0), ret=0, api=0, pid=42, tid=43, comm=b"sh", ts=1000,
         stack_id=-1):
    return EVENT_STRUCT.pack(ts, *a, ret & (1 << 64) - 1, probe_id, api, pid, tid, 1,
                             stack_id, comm)


# --- the program ---------------------------------------------------------------------


def _usable(*names):
    return [(PROBE[n], PROBE[n].symbols[0] if PROBE[n].symbols else n) for n in names]


def test_event_struct_in_c_matches_the_decoder():
    text = program_text(_usable("kho_radix_add_key"))
    body = re.search(r"struct event_t \{\n(.*?)\n\};", text, re.S).group(1)
    fields = [line.strip().rstrip(";").split() for line in body.splitlines()]
    assert [(t, n.split("[")[0]) for t, n in fields] == [(t, n) for n, t, _ in EVENT]
    assert EVENT_STRUCT.size == 88  # 6 u64, 6 u32, comm[16]: no padding on any ABI


def test_ring_buffer_program_counts_failed_reserves():
    text = program_text(_usable("kho_radix_add_key"), ringbuf=True)
    assert "BPF_RINGBUF_OUTPUT(events, 2048);" in text
    assert re.search(r"ringbuf_reserve\(.*\);\n    if \(!ev\) \{\n        count_lost\(0\);", text)
    assert "perf_submit" not in text


def test_perf_buffer_program_counts_failed_submits():
    text = program_text(_usable("kho_radix_add_key"), ringbuf=False)
    assert "BPF_PERF_OUTPUT(events);" in text and "ringbuf" not in text
    assert "if (events.perf_submit(ctx, ev, sizeof(*ev)) < 0)\n        count_lost(0);" in text


def test_return_probes_stash_their_entry_and_count_a_missing_one():
    text = program_text(_usable("alloc_contig_frozen_range_noprof"), kfunc=False)
    entry = text[text.index("int kp_1("):text.index("int krp_1(")]
    ret = text[text.index("int krp_1("):]
    assert "s.a[3] = PT_REGS_PARM4(ctx);" in entry and "count_lost(2);" in entry
    assert "if (!s) {\n        count_lost(1);" in ret and "PT_REGS_RC(ctx)" in ret
    assert "KRETFUNC_PROBE" not in text


def test_fexit_takes_the_return_value_after_every_parameter():
    text = program_text(_usable("alloc_contig_frozen_range_noprof", "kho_preserve_folio",
                                "kho_radix_del_key"), kfunc=True)
    assert ("KRETFUNC_PROBE(alloc_contig_frozen_range_noprof, u64 a0, u64 a1, u64 a2, u64 a3, "
            "long ret)") in text
    assert "KFUNC_PROBE(kho_preserve_folio, u64 a0)" in text  # marks the API, then fexit
    assert "KRETFUNC_PROBE(kho_preserve_folio, u64 a0, long ret)" in text
    assert "KFUNC_PROBE(kho_radix_del_key, u64 a0, u64 a1)\n{\n    count_hit(3);" in text


def test_api_probes_attribute_nested_keys_outermost_first():
    text = program_text(_usable("kho_preserve_vmalloc", "kho_radix_add_key"), kfunc=False)
    assert "s.set_api = enter_api(k.tid, 1);" in text
    assert "api_of.delete(&tid);" in text
    assert "enter_api(k.tid, 2)" not in text  # the radix tree call is not an API


def test_tracepoint_and_stacks():
    text = program_text(_usable("cma:cma_alloc_finish"), stacks=True)
    assert "TRACEPOINT_PROBE(cma, cma_alloc_finish)" in text
    assert "args->errorno" in text and "emit(args, 1," in text
    assert "BPF_STACK_TRACE(stacks, 4096);" in text and "stacks.get_stackid(ctx, 0)" in text


def test_compiler_clones_get_no_kfunc_variant():
    text = program_text([(PROBE["kho_preserve_pages"], "kho_preserve_pages.isra.0")])
    assert "int kp_1(" in text and "KFUNC_PROBE" not in text


def test_ebpf_needs_neither_root_nor_bcc(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bcc", None)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert run(["trace", "--ebpf"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.count("/* ") >= len(CATALOGUE) and "BPF_RINGBUF_OUTPUT" in out


# --- decoding ---------------------------------------------------------------------------


def test_decode_a_contiguous_allocation():
    probes = [PROBE["alloc_contig_frozen_range_noprof"]]
    e = decode_event(pack(1, (0x140000, 0x180000, 0, 0xcc0), ret=0), 7, probes)
    assert (e.seq, e.kind, e.phys, e.size, e.ok, e.ret) == (7, "contig-alloc", 5 * GB, GB,
                                                            True, 0)
    assert (e.pid, e.tid, e.comm, e.args) == (42, 43, "sh", (0x140000, 0x180000, 0, 0xcc0))


def test_decode_sign_extends_int_returns():
    probes = [PROBE["alloc_contig_frozen_range_noprof"]]
    e = decode_event(pack(1, (0, 1, 0, 0), ret=0xdeadbeef_ffffffea), 0, probes)
    assert (e.ret, e.ok) == (-22, False)


def test_decode_a_radix_key_with_its_api():
    probes = [PROBE["kho_preserve_folio"], PROBE["kho_radix_add_key"]]
    key = encode_key(0x1_2340_0000, 9)
    e = decode_event(pack(2, (0xffff888000000000, key, 0, 0), api=1), 0, probes)
    assert (e.kind, e.phys, e.size, e.api, e.args) == ("preserve", 0x1_2340_0000, 2 << 20,
                                                       "kho_preserve_folio",
                                                       (0xffff888000000000, key))
    api = decode_event(pack(1, (0xffffea0000000000, 0, 0, 0), ret=0, api=1), 1, probes)
    assert (api.kind, api.phys, api.api, api.ok) == ("preserve-api", None, "", True)


def test_decode_cma_tracepoint_failure_has_no_range():
    probes = [PROBE["cma:cma_alloc_finish"]]
    ok = decode_event(pack(1, (0x40000, 0x40000, 0, 0)), 0, probes)
    failed = decode_event(pack(1, ((1 << 64) - 1, 0x40000, (1 << 64) - 12, 0)), 1, probes)
    assert (ok.phys, ok.size, ok.ok) == (GB, GB, True)
    assert (failed.phys, failed.ok) == (None, False)


def test_decode_refuses_bad_records():
    with pytest.raises(ValueError, match="bytes"):
        decode_event(b"\0" * 10, 0, CATALOGUE)
    with pytest.raises(ValueError, match="unknown probe id 99"):
        decode_event(pack(99), 0, CATALOGUE)


# --- symbols ------------------------------------------------------------------------------

KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81100000 T kho_radix_add_key
ffffffff81100100 t kho_preserve_pages.isra.0
ffffffff81100200 T alloc_contig_range_noprof
ffffffff81100300 T memblock_phys_free
ffffffff83000000 T _sinittext
ffffffff83001000 T __memblock_reserve
ffffffff83400000 T _einittext
ffffffffc0000000 t kho_preserve_folio [some_module]
"""


def test_symbol_decisions_say_why():
    k = parse_kallsyms(KALLSYMS)
    traceable = parse_filter_functions("kho_radix_add_key\nalloc_contig_range_noprof\n"
                                       "other_fn [mod]\n")
    plan = plan_probes(CATALOGUE, k, traceable, {"cma:cma_alloc_finish"})
    usable = {p.name: (sym, note) for p, sym, note in plan.usable}
    missing = dict((p.name, why) for p, why in plan.missing)
    assert usable["kho_radix_add_key"] == ("kho_radix_add_key", "")
    assert usable["alloc_contig_frozen_range_noprof"] == ("alloc_contig_range_noprof",
                                                          "older name alloc_contig_range_noprof")
    assert usable["memblock_phys_free"][1].startswith("notrace")
    assert usable["cma:cma_alloc_finish"] == ("cma:cma_alloc_finish", "")
    assert missing["__memblock_reserve"] == "__init: its text was freed after boot"
    assert missing["kho_preserve_pages"].startswith("only the compiler clone kho_preserve_pages")
    assert missing["kho_preserve_folio"].startswith("not in /proc/kallsyms: inlined")  # a module's
    assert "hugetlb_cma_alloc_frozen_folio" in missing


def test_missing_tracepoint():
    assert symbol_decision(PROBE["cma:cma_alloc_finish"], Kallsyms({}), None, set()) == (
        None, "no such tracepoint on this kernel")


def test_select_probes_by_name_or_group():
    assert [p.name for p in select_probes(["contig"])] == [
        "alloc_contig_frozen_range_noprof", "cma:cma_alloc_finish",
        "hugetlb_cma_alloc_frozen_folio"]
    assert select_probes([]) == CATALOGUE
    with pytest.raises(InputError, match="No probe or group 'nope'"):
        select_probes(["nope"])


# --- classification and rules --------------------------------------------------------------

CLASSES = [("original", RangeSet([Range(0xB0000000, 0x10000000)])),
           ("extended", RangeSet([Range(0x100000, 0x40000000)])),
           ("preserved", RangeSet([Range(0x2_0000_0000, 0x100000)]))]


def ev(seq, kind, phys, size, ok=True, probe="kho_radix_add_key", api=""):
    return TraceEvent(seq=seq, ts_ns=seq, probe=probe, kind=kind, phys=phys, size=size, ok=ok,
                      ret=0 if ok else -22, args=(), api=api, comm="python3", pid=7)


def test_classification_reuses_the_boot_log_classes():
    events = classify_events([ev(0, "preserve", 0xB0001000, 4096),
                              ev(1, "preserve", 0xAFFFF000, 0x2000),
                              ev(2, "contig-alloc", 5 * GB, GB),
                              ev(3, "preserve-api", None, 0)], CLASSES)
    assert [e.klass for e in events] == ["original", "partly original", "other", "-"]
    assert classify_event(ev(0, "preserve", 0, 4096), []).klass == "unknown"


def test_violations_are_preservations_and_allocations_in_original_scratch():
    events = classify_events([
        ev(0, "preserve", 0xB0001000, 4096, api="kho_preserve_folio"),
        ev(1, "preserve", 0xB0002000, 4096, ok=False),          # refused: no violation
        ev(2, "contig-alloc", 0xAFF00000, 0x200000, probe="alloc_contig_frozen_range_noprof"),
        ev(3, "preserve", 0x2_0000_0000, 4096),                  # preserved class: fine
        ev(4, "memblock-reserve", 0xB0000000, 4096, ok=None),    # memblock: no rule
    ], CLASSES)
    found = findings(events)
    assert [(f.rule, f.seq) for f in found] == [(RULE_PRESERVE, 0), (RULE_CONTIG, 2)]
    assert "under kho_preserve_folio()" in found[0].message
    assert "[0xb0001000-0xb0001fff]" in found[0].message
    assert event_findings(events[3]) == []


def test_counts_and_ranges():
    events = classify_events([ev(0, "preserve", 0x1000, 0x1000), ev(1, "preserve", 0x2000, 0x1000),
                              ev(2, "preserve", 0x9000, 0x1000, ok=False)], CLASSES)
    c = counts(events)
    assert c["kind"]["preserve"] == 3 and c["class"]["other"] == 3
    assert ranges_of(events, ("preserve",)) == RangeSet([Range(0x1000, 0x2000)])


# --- lost events --------------------------------------------------------------------------


def test_lost_account_takes_every_source():
    profile = parse_kprobe_profile("  p_kho_radix_add_key_bcc_42    100   0\n"
                                   "  r_kho_radix_add_key_bcc_42    100   5\n"
                                   "  r_other_bcc_7                  10   9\n")
    lost = lost_from_counters({"reserve_failed": 3, "return_without_entry": 2,
                               "entry_not_stashed": 1}, perf_lost=4, kprobe_profile=profile,
                              owner="_bcc_42")
    assert lost == TraceLost(reserve_failed=3, return_without_entry=2, entry_not_stashed=1,
                             perf_lost=4, kprobe_missed=5)
    assert lost.total == 15
    assert lost_from_counters({}).total == 0


# --- the document ----------------------------------------------------------------------------


def _run(events=(), findings_=()):
    return TraceRun(release="7.3.4", started=1, milliseconds=2000, buffer="ringbuf",
                    probes=(ProbeStatus("kho_radix_add_key", "kho_radix_add_key", "kho", True,
                                        "fexit", "", 3),
                            ProbeStatus("__memblock_reserve", "__memblock_reserve", "memblock",
                                        False, None, "__init: its text was freed after boot")),
                    events=tuple(events), lost=TraceLost(reserve_failed=1),
                    classes={"original": (Range(0xB0000000, 0x10000000),)},
                    findings=tuple(findings_), command=("sh", "-c", "true"), command_exit=0)


def test_document_round_trip():
    events = classify_events([ev(0, "preserve", 0xB0001000, 4096)], CLASSES)
    run_ = _run(events, findings(events))
    doc = json.loads(json.dumps(trace_document(run_)))
    assert doc["schema"] == "kho-inspect/trace" and doc["version"] == 1
    assert load_trace_document(doc) == run_
    with pytest.raises(InputError, match="is not a kho-inspect/trace document"):
        load_trace_document({"schema": "kho-inspect/snapshot", "version": 1})
    with pytest.raises(InputError, match="damaged"):
        load_trace_document({"schema": "kho-inspect/trace", "version": 1, "trace": {}})


# --- the command line against a stand-in BCC ----------------------------------------------


class FakeTable:
    def __init__(self, bpf, name):
        self.bpf, self.name = bpf, name

    def open_ring_buffer(self, cb, ctx=None):
        self.bpf.callback = cb

    def open_perf_buffer(self, cb, page_cnt=8, lost_cb=None):
        self.bpf.callback, self.bpf.lost_cb = cb, lost_cb

    def Key(self, i):
        return ctypes.c_int(i)

    def sum(self, key):
        values = self.bpf.lost if self.name == "lost" else self.bpf.hits
        return ctypes.c_ulong(values.get(key.value, 0))


class FakeBPF:
    """What kho-inspect uses of bcc.BPF; attaches what ``fail`` does not name and plays
    ``records`` into the buffer on the first poll."""

    instances = []
    records = []
    fail = set()
    lost = {0: 2, 1: 1}

    def __init__(self, text):
        self.text = text
        self.attached = []
        self.callback = None
        self.lost_cb = None
        self.hits = {1: 5}
        self.kfunc_entry_fds, self.kfunc_exit_fds = {}, {}
        self._trace_autoload()
        FakeBPF.instances.append(self)

    @staticmethod
    def ksymname(name):
        return 1

    @staticmethod
    def support_kfunc():
        return True

    def _trace_autoload(self):
        raise AssertionError("kho-inspect must attach probes itself")

    def _attach(self, kind, name):
        if any(f in name for f in self.fail):
            raise Exception(f"Failed to attach BPF program {name}")
        self.attached.append((kind, name))

    def attach_kfunc(self, fn_name):
        self._attach("fentry", fn_name.decode())
        self.kfunc_entry_fds[fn_name] = 1

    def attach_kretfunc(self, fn_name):
        self._attach("fexit", fn_name.decode())
        self.kfunc_exit_fds[fn_name] = 1

    def detach_kfunc(self, fn_name):
        self.kfunc_entry_fds.pop(fn_name, None)

    def detach_kretfunc(self, fn_name):
        self.kfunc_exit_fds.pop(fn_name, None)

    def attach_kprobe(self, event, fn_name):
        self._attach("kprobe", event.decode())

    def attach_kretprobe(self, event, fn_name, maxactive=0):
        self._attach("kretprobe", event.decode())

    def attach_tracepoint(self, tp, fn_name):
        self._attach("tracepoint", tp.decode())

    def detach_kprobe(self, event):
        pass

    detach_kretprobe = detach_kprobe

    def detach_tracepoint(self, tp):
        pass

    def __getitem__(self, name):
        return FakeTable(self, name)

    def ring_buffer_poll(self, timeout=-1):
        while FakeBPF.records:
            raw = FakeBPF.records.pop(0)
            buf = ctypes.create_string_buffer(raw, len(raw))
            self.callback(None, ctypes.addressof(buf), len(raw))

    def ring_buffer_consume(self):
        self.ring_buffer_poll()

    def perf_buffer_poll(self, timeout=-1):
        if self.lost_cb is not None:
            self.lost_cb(4)
            self.lost_cb = None
        self.ring_buffer_poll()

    def cleanup(self):
        pass


@pytest.fixture
def fake_bcc(monkeypatch):
    module = types.ModuleType("bcc")
    module.BPF = FakeBPF
    monkeypatch.setitem(sys.modules, "bcc", module)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("kho_inspect.tracing._read", lambda path: {
        "/proc/kallsyms": "ffffffff81100000 T kho_radix_add_key\n"
                          "ffffffff81100100 T kho_preserve_folio\n"
                          "ffffffff81100200 T alloc_contig_frozen_range_noprof\n"}.get(path))
    monkeypatch.setattr("kho_inspect.tracing._tracefs", lambda: None)
    FakeBPF.instances, FakeBPF.records, FakeBPF.fail = [], [], set()
    return FakeBPF


@pytest.fixture(scope="module")
def n1():
    return kernel_n1(kernel_n())


def test_not_root_is_one_sentence(monkeypatch, capsys):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert run(["trace", "-d", "1"]) == EXIT_CANNOT_INSPECT
    err = capsys.readouterr().err
    assert err.startswith("kho-inspect: error: Tracing needs root") and err.count("\n") == 1


def test_bcc_missing_names_the_distribution_package(monkeypatch, capsys):
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setitem(sys.modules, "bcc", None)  # import bcc raises ImportError
    assert run(["trace", "-d", "1"]) == EXIT_CANNOT_INSPECT
    err = capsys.readouterr().err
    assert "install python3-bpfcc from the distribution" in err and "Traceback" not in err


def test_bpf_not_permitted(fake_bcc, monkeypatch, capsys):
    def refuse(self, text):
        raise Exception("Failed to load BPF program: Operation not permitted")

    monkeypatch.setattr(FakeBPF, "__init__", refuse)
    assert run(["trace", "-d", "0", "--no-classes"]) == EXIT_CANNOT_INSPECT
    assert "does not permit BPF here" in capsys.readouterr().err


def test_a_named_probe_that_is_gone_is_an_error(fake_bcc, capsys):
    assert run(["trace", "--probe", "__memblock_reserve", "--no-classes"]) == \
        EXIT_CANNOT_INSPECT
    err = capsys.readouterr().err
    assert "The probe __memblock_reserve cannot be attached on this kernel: not in " \
           "/proc/kallsyms" in err


def test_trace_a_command_classify_and_flag(fake_bcc, n1, tmp_path, capsys):
    snap_classes = None
    fake_bcc.fail = {"kfunc__vmlinux__alloc_contig", "kretfunc__vmlinux__alloc_contig"}
    # ids follow the plan: alloc_contig (1), kho_preserve_folio (2), kho_radix_add_key (3)
    fake_bcc.records = [
        pack(1, (0x140000, 0x180000, 0, 0), ret=0, comm=b"sh", ts=10**9),
        pack(3, (0, encode_key(0x1000_0000, 0), 0, 0), ret=0, api=2, ts=2 * 10**9),
        pack(2, (0xffffea0000000000, 0, 0, 0), ret=0, api=2, ts=2 * 10**9 + 1),
    ]
    out = tmp_path / "trace.json"
    code = run(["trace", "-o", str(out), "--", sys.executable, "-c", "pass"],
               Session(program_=n1.prog))
    text = capsys.readouterr()
    doc = json.loads(out.read_text())
    trace = load_trace_document(doc)
    assert trace.command[0] == sys.executable and trace.command_exit == 0
    how = {p.name: (p.how, p.reason) for p in trace.probes}
    assert how["kho_radix_add_key"] == ("fexit", "")
    assert how["kho_preserve_folio"] == ("fentry+fexit", "")
    assert how["alloc_contig_frozen_range_noprof"][0] == "kprobe+kretprobe"
    assert "fentry/fexit failed" in how["alloc_contig_frozen_range_noprof"][1]
    assert how["__memblock_reserve"][0] is None
    assert [e.kind for e in trace.events] == ["contig-alloc", "preserve", "preserve-api"]
    assert trace.events[1].api == "kho_preserve_folio"
    assert trace.lost == TraceLost(reserve_failed=2, return_without_entry=1)
    assert trace.classes and all(e.klass != "unknown" for e in trace.events)
    snap_classes = trace.classes
    assert "original" in snap_classes
    assert "Lost events: 3 (reserve failed 2, return without entry 1)." in text.out
    assert f"Details: {out}" in text.out
    assert code == (EXIT_VIOLATIONS if trace.findings else EXIT_OK)


def test_violation_exits_1_and_is_printed_as_it_happens(fake_bcc, tmp_path, capsys):
    snap = tmp_path / "snap.json"
    from kho_inspect.model.snapshot import snapshot_document
    from kho_inspect.snapshot import read_snapshot

    n1 = kernel_n1(kernel_n())
    snap.write_text(json.dumps(snapshot_document(read_snapshot(n1.prog))))
    original = load_original(snap)
    fake_bcc.records = [pack(2, (0, encode_key(original.base, 0), 0, 0), ret=0)]
    code = run(["trace", "-d", "0", "--snapshot", str(snap), "--probe", "kho"])
    captured = capsys.readouterr()
    assert code == EXIT_VIOLATIONS
    assert "VIOLATION trace-preserve-outside-scratch" in captured.err
    assert "Violations (1)" in captured.out


def load_original(path):
    from kho_inspect.snapshot import load_snapshot_file
    from kho_inspect.views.bootlog import allocation_classes

    classes = dict(allocation_classes(load_snapshot_file(str(path))))
    return classes["original"].ranges[0]


def test_perf_buffer_reports_lost_samples(fake_bcc, capsys):
    fake_bcc.records = [pack(2, (0, encode_key(0x5000_0000, 0), 0, 0), ret=0)]
    assert run(["trace", "-d", "0", "--no-classes", "--perf-buffer", "--kprobes", "--json",
                "--probe", "kho"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    trace = load_trace_document(doc)
    assert trace.buffer == "perf" and trace.lost.perf_lost == 4
    assert {p.how for p in trace.attached()} == {"kprobe+kretprobe"}
    assert "BPF_PERF_OUTPUT" in FakeBPF.instances[0].text
    assert trace.events[0].klass == "unknown"


# --- check --trace ---------------------------------------------------------------------------


def _saved_trace(tmp_path, n1, *events, classes=None):
    from kho_inspect.snapshot import read_snapshot

    snap = read_snapshot(n1.prog)
    run_ = TraceRun(release=snap.release, started=0, milliseconds=1000, buffer="ringbuf", probes=(),
                    events=tuple(events), lost=TraceLost(), classes=classes or {})
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(trace_document(run_)))
    return path, snap.scratch.classes.original.ranges[0]


def test_check_trace_fails_a_preservation_in_original_scratch(n1, tmp_path, capsys):
    from kho_inspect.snapshot import read_snapshot

    original = read_snapshot(n1.prog).scratch.classes.original.ranges[0]
    path, _ = _saved_trace(tmp_path, n1,
                           ev(0, "preserve", original.base, 4096, api="kho_preserve_folio"),
                           ev(1, "preserve", original.base, 4096, ok=False),
                           ev(2, "contig-alloc", 1 << 44, GB))
    code = run(["check", "--trace", str(path), "--rule", "trace-preserve-outside-scratch",
                "--rule", "trace-contig-outside-scratch", "--json"], Session(program_=n1.prog))
    results = {r["id"]: r for r in json.loads(capsys.readouterr().out)["rules"]}
    assert code == EXIT_VIOLATIONS
    bad = results["trace-preserve-outside-scratch"]
    assert bad["status"] == "fail" and len(bad["evidence"]) == 1
    assert bad["evidence"][0]["class"] == "original"
    assert bad["evidence"][0]["range"] == {"base": original.base, "size": 4096}
    assert results["trace-contig-outside-scratch"]["status"] == "pass"


def test_check_without_trace_skips_and_a_bad_file_is_one_sentence(n1, tmp_path, capsys):
    assert run(["check", "--rule", "trace-preserve-outside-scratch", "--json"],
               Session(program_=n1.prog)) == EXIT_OK
    result = json.loads(capsys.readouterr().out)["rules"][0]
    assert result["status"] == "skip" and result["reason"].startswith("needs --trace")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert run(["check", "--trace", str(bad)], Session(program_=n1.prog)) == EXIT_CANNOT_INSPECT
    assert "is not a kho-inspect/trace document" in capsys.readouterr().err


def test_sigint_ends_the_trace_and_keeps_every_event(fake_bcc, monkeypatch, capsys):
    """The scenario stops a background trace with SIGINT: the summary still comes, with
    what was buffered (a KeyboardInterrupt inside BCC's ctypes callback would be lost)."""
    import os
    import signal

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup or a background job
    deliver = FakeBPF.ring_buffer_poll

    def poll(self, timeout=-1):
        os.kill(os.getpid(), signal.SIGINT)
        deliver(self)

    monkeypatch.setattr(FakeBPF, "ring_buffer_consume", poll)
    monkeypatch.setattr(FakeBPF, "ring_buffer_poll", poll, raising=True)
    fake_bcc.records = [pack(2, (0, encode_key(0x5000_0000, 0), 0, 0), ret=0)] * 3
    assert run(["trace", "--no-classes", "--probe", "kho", "--json"]) == EXIT_OK
    trace = load_trace_document(json.loads(capsys.readouterr().out))
    assert [e.seq for e in trace.events] == [0, 1, 2]
    assert signal.getsignal(signal.SIGINT) is before  # restored as it was


def test_event_lines():
    from kho_inspect.views.trace import event_line

    null = TraceEvent(seq=0, ts_ns=10**9, probe="hugetlb_cma_alloc_frozen_folio",
                      kind="hugetlb-cma-alloc", phys=None, size=0, ok=False, ret=0, args=(18,),
                      comm="sh", pid=74, klass="-")
    line = event_line(null, 0)
    assert line.split()[:3] == ["1.000", "sh", "74"] and " NULL " in line
    refused = ev(1, "preserve", 0x1000, 4096, ok=False)
    assert " err -22 " in event_line(refused, 0)
    assert "kho_radix_add_key<kho_preserve_folio" in event_line(
        ev(2, "preserve", 0x1000, 4096, api="kho_preserve_folio"), 0)
