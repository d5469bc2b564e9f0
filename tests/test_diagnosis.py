# SPDX-License-Identifier: LGPL-2.1-or-later
"""Why KHO is off: the pure decision from plain facts, then the drgn reader and
the commands on synthetic kernels (issue 8, item 4).

The central case is the one a new user met: an 8 GiB guest booted with
``kho=on hugetlb_cma=2G``; the 2 GiB CMA area is an ``RSRV_KERN``
reservation, so the default 200% scale asked for more than 4 GiB of global
scratch, which no free range held; ``kho_reserve_scratch()`` freed the lowmem
area it had got and turned KHO off, leaving ``kho_scratch[]`` pointing at
the freed array.
"""

import json
from dataclasses import replace

import pytest
from synth.kernel import SynthKernel
from synth.kho import add_kho
from synth.mm import FLAGS_73, MmSpec, add_mm
from synth.mm import memblock_state as make_state
from synth.printk import add_boot, add_printk

from kho_inspect import scratch as scratch_module
from kho_inspect.activation import (
    ActivationInputs,
    cma_name,
    decide,
    inactive_error,
    kernel_param,
    kho_param,
    log_lines,
)
from kho_inspect.cli import Session, run
from kho_inspect.diagnosis import diagnose, read_cma_areas
from kho_inspect.errors import EXIT_CANNOT_INSPECT, EXIT_OK
from kho_inspect.model import Region
from kho_inspect.model.snapshot import CmaRegion
from kho_inspect.ranges import Range, RangeSet

MIB, GIB = 1 << 20, 1 << 30
ALIGN = 4 * MIB

FAILED = ("KHO: Failed to reserve global scratch buffer",
          "KHO: Failed to reserve scratch area, disabling kexec handover",
          "liveupdate: Disabling liveupdate because KHO is disabled")
BOOT_LOG = ("Linux version 7.3.4 (gcc) #1 SMP",
            "Command line: console=ttyS0 kho=on hugetlb_cma=2G") + FAILED
# x86 RAM of an 8 GiB guest: below the PCI hole, then above 4 GiB.
RAM = RangeSet([Range.from_bounds(MIB, 3 * GIB), Range.from_bounds(4 * GIB, 9 * GIB)])
CMA = CmaRegion("hugetlb0", 7 * GIB, 2 * GIB, 0)
LOWMEM = (0x5000_0000, 212 * MIB)


def guest(**changes) -> ActivationInputs:
    """The guest of the issue, memblock discarded (x86 default)."""
    facts = ActivationInputs(
        kho_built=True, kho_enable=False, fdt_out=0, kho_boot=False,
        command_line="console=ttyS0 kho=on hugetlb_cma=2G", enable_default=False, kdump=False,
        log=BOOT_LOG, log_from_boot=True, luo=False,
        array=(LOWMEM, (0, 0), (0, 0)), memory_nodes=(0,), cma=(CMA,), ram=RAM,
        alignment=ALIGN, memblock_note="memblock was discarded after boot")
    return replace(facts, **changes)


# --- the command line and the log -------------------------------------------------


@pytest.mark.parametrize("line, expected", [
    ("kho=on", (True, "kho=on")), ("kho=1", (True, "kho=1")), ("kho=y", (True, "kho=y")),
    ("kho=off", (False, "kho=off")), ("kho=0", (False, "kho=0")), ("kho=no", (False, "kho=no")),
    ("kho=on kho=off", (False, "kho=off")),  # the last early_param wins
    ("kho=maybe", (None, None)),  # kstrtobool() refuses it, kho_enable keeps its default
    ("console=ttyS0", (None, None)), ("-- kho=on", (None, None)),  # after --: init's
    ('kho="on"', (True, "kho=on")),
])
def test_kho_param_follows_kstrtobool_and_early_param(line, expected):
    assert kho_param(line) == expected


def test_kernel_param_takes_the_last_value():
    assert kernel_param("kho_scratch=1G,2G,3G kho_scratch=50%", "kho_scratch") == "50%"
    assert kernel_param(None, "kho") is None


def test_log_lines_drop_timestamps_and_levels():
    text = "[    0.123456] KHO: scratch scale is 100%\n<4>[    1.000000] hello\nplain"
    assert log_lines(text) == ("KHO: scratch scale is 100%", "hello", "plain")


# --- states ------------------------------------------------------------------------------


def test_not_built():
    act = decide(ActivationInputs(kho_built=False))
    assert act.state == "not built" and "CONFIG_KEXEC_HANDOVER=n" in act.reason
    assert act.sizing is None and act.requested_by is None


@pytest.mark.parametrize("changes, reason", [
    ({"command_line": "console=ttyS0", "log": ()},
     "the command line has no kho=on and CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT is off"),
    ({"command_line": "console=ttyS0", "enable_default": None, "log": ()},
     "the command line has no kho=on (the kernel config"),
    ({"command_line": "kho=off", "enable_default": True, "log": ()},
     "KHO was turned off on the command line (kho=off)"),
    ({"command_line": None, "log": ()}, "the command line cannot be read"),
])
def test_not_requested(changes, reason):
    act = decide(guest(array=(), **changes))
    assert act.state == "not requested" and reason in act.reason
    assert act.requested_by is None and act.sizing is None


def test_active_cold_boot_sizing_comes_from_the_array():
    areas = (LOWMEM, (6 * GIB, 512 * MIB), (5 * GIB, 256 * MIB))
    act = decide(guest(kho_enable=True, fdt_out=0xFFFF_8880_0100_0000, array=areas, log=(),
                       luo=True))
    assert act.state == "active" and act.active
    assert act.reason.startswith("KHO is active (kho=on on the command line; cold booted)")
    assert act.requested_by == "kho=on on the command line" and act.luo is True
    needs = {n.area: (n.needed, n.reserved, n.addr) for n in act.sizing.needs}
    assert needs == {"array": (48, True, None), "lowmem": (212 * MIB, True, LOWMEM[0]),
                     "global": (512 * MIB, True, 6 * GIB), "node 0": (256 * MIB, True, 5 * GIB)}
    assert act.sizing.mode == "scale" and act.sizing.scale == 200


def test_an_active_kernel_does_not_count_its_own_areas():
    areas = (LOWMEM, (6 * GIB, 512 * MIB), (5 * GIB, 256 * MIB))
    memory = [Region(MIB, 3 * GIB - MIB, (), 0), Region(4 * GIB, 5 * GIB, (), 0)]
    reserved = sorted([Region(a, s, ("RSRV_KERN",), 0) for a, s in areas]
                      + [Region(7 * GIB, 2 * GIB, ("RSRV_KERN",), 0)], key=lambda r: r.base)
    act = decide(guest(kho_enable=True, fdt_out=0x1000, array=areas, log=(), ram=None,
                       memblock=make_state(memory, reserved, flags=FLAGS_73)))
    assert act.state == "active" and act.sizing.kern_reserved == 2 * GIB
    assert [(d.name, d.size, d.counted) for d in act.sizing.drivers] == [
        ("hugetlb_cma node 0", 2 * GIB, True)]


def test_active_kho_boot_has_no_sizing_and_default_config_is_the_requester():
    act = decide(guest(kho_enable=True, fdt_out=0x1000, kho_boot=True, command_line="quiet",
                       enable_default=True, log=("KHO: found kexec handover data.",)))
    assert act.state == "active" and "booted through KHO" in act.reason
    assert act.requested_by == "CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT"
    assert act.sizing is None and act.log == ("KHO: found kexec handover data.",)


def test_the_guest_of_the_issue_without_memblock():
    act = decide(guest())
    assert act.state == "disabled" and act.requested
    assert act.requested_by == "kho=on on the command line"
    assert act.log == FAILED  # the kernel's own lines, without timestamps
    assert act.reason == (
        "KHO disabled itself: kho_reserve_scratch() could not reserve the global scratch area "
        "(its size is not logged, but the CMA and reserve_mem= areas alone made it at least "
        "4096 MiB; the largest free range was 3072 MiB at most).")
    sizing = act.sizing
    needs = {n.area: n for n in sizing.needs}
    assert (needs["lowmem"].needed, needs["lowmem"].reserved) == (212 * MIB, True)
    assert needs["lowmem"].addr == LOWMEM[0]
    assert (needs["global"].needed, needs["global"].reserved) == (None, False)
    assert needs["global"].available == 3 * GIB
    assert needs["node 0"].reserved is None  # never tried
    assert [(d.name, d.size, d.counted, d.base, d.node) for d in sizing.drivers] == [
        ("hugetlb_cma node 0", 2 * GIB, True, 7 * GIB, 0)]
    assert sizing.memory == RAM.total and sizing.kern_reserved is None
    assert "kho_scratch[]" in sizing.source and "an upper bound" in sizing.source
    assert "memblock is not kept after boot" in sizing.source


def test_the_guest_with_memblock_kept_rebuilds_the_kernel_arithmetic():
    memory = [Region(MIB, 3 * GIB - MIB, (), 0), Region(4 * GIB, 5 * GIB, (), 0)]
    reserved = [
        Region(0x100_0000, 40 * MIB, (), 0),  # the kernel image: memblock_reserve(), not KERN
        Region(0x3000_0000, 100 * MIB, ("RSRV_KERN",), 0),  # below 4 GiB
        Region(5 * GIB, GIB, ("RSRV_KERN", "RSRV_HUGETLB"), 0),  # a boot-time 1 GiB page
        Region(7 * GIB, 2 * GIB, ("RSRV_KERN",), 0),  # hugetlb_cma=2G
        Region(9 * GIB - 8 * MIB, 8 * MIB, ("RSRV_KERN",), 0),
    ]
    state = make_state(memory, reserved, flags=FLAGS_73)
    act = decide(guest(memblock=state, ram=None))
    needs = {n.area: n for n in act.sizing.needs}
    # lowmem = 200% of 100 MiB; global = 200% of (100 + 2048 + 8) MiB - lowmem, 4 MiB aligned.
    assert needs["global"].needed == 2 * (2048 + 8) * MIB
    # Free: [868 MiB, 3 GiB) is the largest; above 4 GiB only [4, 5) and [6, 7) GiB.
    assert needs["global"].available == (3072 - 768 - 100) * MIB
    assert "4112 MiB global scratch area (the largest free range was 2204 MiB)" in act.reason
    assert needs["lowmem"].needed == 212 * MIB  # the array's entry wins over the estimate
    assert needs["node 0"].needed == _up(2 * (100 + 2048 + 8) * MIB)
    assert act.sizing.kern_reserved == (100 + 1024 + 2048 + 8) * MIB
    assert act.sizing.hugetlb_reserved == GIB
    drivers = {d.name: (d.size, d.counted) for d in act.sizing.drivers}
    assert drivers == {"hugetlb_cma node 0": (2 * GIB, True),
                       "RSRV_KERN (rest)": (108 * MIB, True),
                       "RSRV_HUGETLB (hugetlb boot pages)": (GIB, False)}


def _up(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


# The 7.2 lab kernel inlines kho_reserve_scratch() into kho_memory_init(): its
# memblock=debug lines name that caller (n0 of a 7.2 lab run).
@pytest.mark.parametrize("caller", ["kho_reserve_scratch+0x{:x}/0x310",
                                    "kho_memory_init+0x{:x}/0x4b0"])
def test_memblock_debug_lines_give_the_exact_sizes(caller):
    log = BOOT_LOG + (
        "memblock_alloc_try_nid: 48 bytes align=0x1000 nid=-1 from=0x0000000000000000 "
        "max_addr=0x0000000000000000 " + caller.format(0x5c),
        "memblock_phys_alloc_range: 222298112 bytes align=0x400000 from=0x0000000000000000 "
        "max_addr=0x00000000ffffffff " + caller.format(0x9a),
        "memblock_phys_alloc_range: 4777312256 bytes align=0x400000 from=0x0000000000000000 "
        "max_addr=0x0000000000000000 " + caller.format(0xe1))
    act = decide(guest(log=log, array=((0, 0), (0, 0), (0, 0))))
    needs = {n.area: n.needed for n in act.sizing.needs}
    assert needs["global"] == 4777312256 and needs["lowmem"] == 222298112
    assert "4556 MiB global scratch area" in act.reason
    assert "the kernel log (memblock=debug)" in act.sizing.source
    assert any(caller.format(0xe1) in line for line in act.log)


def test_explicit_sizes_from_kho_scratch():
    act = decide(guest(command_line="kho=on kho_scratch=256M,8G,128M", array=()))
    assert act.sizing.mode == "explicit"
    assert act.sizing.explicit == (256 * MIB, 8 * GIB, 128 * MIB)
    needs = {n.area: n.needed for n in act.sizing.needs}
    assert needs == {"array": 48, "lowmem": 256 * MIB, "global": 8 * GIB, "node 0": 128 * MIB}
    assert act.sizing.drivers[0].name == "hugetlb_cma node 0"
    assert "8192 MiB global scratch area" in act.reason


def test_scale_from_the_log():
    act = decide(guest(log=("KHO: scratch scale is 50%",) + FAILED))
    assert (act.sizing.mode, act.sizing.scale) == ("scale", 50)
    assert "at least 1024 MiB" in act.reason


def test_failed_array_and_node():
    act = decide(guest(log=("KHO: Failed to reserve scratch array",
                            "KHO: Failed to reserve scratch area, disabling kexec handover"),
                       array=()))
    assert "could not reserve the 48 bytes scratch array" in act.reason
    assert [n.reserved for n in act.sizing.needs] == [False, None, None, None]
    act = decide(guest(log=("KHO: Failed to reserve nid 1 scratch buffer",), memory_nodes=(0, 1),
                       array=(LOWMEM, (6 * GIB, 512 * MIB), (5 * GIB, 256 * MIB), (0, 0))))
    assert [(n.area, n.reserved) for n in act.sizing.needs] == [
        ("array", True), ("lowmem", True), ("global", True), ("node 0", True),
        ("node 1", False)]
    assert "node 1 scratch area" in act.reason


def test_kho_init_failure_has_no_log_line_but_a_full_array():
    areas = (LOWMEM, (6 * GIB, 512 * MIB), (5 * GIB, 256 * MIB))
    act = decide(guest(log=("Linux version 7.3.4",), array=areas))
    assert act.state == "disabled" and "kho_init() failed, which logs no reason" in act.reason
    assert all(n.reserved for n in act.sizing.needs)



def test_a_lost_failure_line_is_read_from_the_array():
    act = decide(guest(log=("early lines lost",), log_from_boot=False))
    assert act.reason.startswith("KHO disabled itself: kho_reserve_scratch() could not reserve "
                                 "the global scratch area")
    assert act.reason.endswith("the log no longer holds the failure line, kho_scratch[] shows "
                               "it: its global entry is empty.")
    assert [n.reserved for n in act.sizing.needs] == [True, True, False, None]


def test_kdump_kernel():
    act = decide(guest(kdump=True, array=(), log=("KHO: disabled in the kdump kernel",)))
    assert act.state == "disabled" and "kdump kernel" in act.reason and act.sizing is None
    assert decide(guest(kdump=None, array=(), log=("KHO: disabled in the kdump kernel",))
                  ).reason == act.reason


def test_disabled_without_evidence():
    assert "cannot be read" in decide(guest(log=None, array=())).reason
    assert "no longer reaches back to boot" in decide(
        guest(log=(), log_from_boot=False, array=())).reason
    assert "neither the kernel log nor kho_scratch[]" in decide(
        guest(log=(), array=())).reason


def test_default_config_inferred_from_the_failure():
    act = decide(guest(command_line="console=ttyS0", enable_default=None))
    assert act.state == "disabled"
    assert act.requested_by == "CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT"


def test_enabled_but_not_initialised_yet():
    act = decide(guest(kho_enable=True, fdt_out=0, array=()))
    assert act.state == "disabled" and "has not run yet" in act.reason


def test_a_reused_freed_array_is_ignored():
    act = decide(guest(array=((0x1234, 0x5678), (0, 0), (0, 0))))
    needs = {n.area: n.needed for n in act.sizing.needs}
    assert needs["lowmem"] is None
    assert "not aligned: the freed array was reused" in act.sizing.source


def test_inactive_error_words_each_state():
    assert str(inactive_error(decide(guest()), "No scratch areas")).startswith(
        "No scratch areas: KHO disabled itself: kho_reserve_scratch() could not reserve")
    quiet = decide(guest(command_line="console=ttyS0", array=(), log=()))
    assert str(inactive_error(quiet, "Nothing is preserved")) == (
        "Nothing is preserved: KHO was not requested: the command line has no kho=on and "
        "CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT is off: boot with kho=on to use KHO.")


# --- the reader and the commands on synthetic kernels ---------------------------------------

NODES = [(0, 3 * GIB), (4 * GIB, 9 * GIB)]


def disabled_kernel(log=BOOT_LOG, command_line="console=ttyS0 kho=on hugetlb_cma=2G"):
    """KHO off after a failed kho_reserve_scratch(): the freed array is still there."""
    kernel = SynthKernel(ram_size=9 * GIB)
    add_mm(kernel, MmSpec([(0, 3 * GIB), (4 * GIB, 9 * GIB)],
                          [LOWMEM, (0, 0), (0, 0), (0, 0)]))
    add_kho(kernel, enabled=False, luo=False)
    add_printk(kernel, log)
    add_boot(kernel, command_line)
    return kernel.prog


def test_diagnose_reads_the_facts_from_the_kernel():
    act = diagnose(disabled_kernel(), memblock_note="memblock was discarded after boot")
    assert act.state == "disabled" and act.log == FAILED and act.luo is False
    needs = {n.area: n for n in act.sizing.needs}
    assert needs["lowmem"].needed == 212 * MIB and needs["global"].reserved is False
    assert needs["global"].available == 5 * GIB  # the synthetic RAM, no CMA area
    assert [n.area for n in act.sizing.needs] == ["array", "lowmem", "global", "node 0",
                                                   "node 1"]


def test_read_cma_areas_without_cma_is_empty():
    assert read_cma_areas(SynthKernel().prog) == ()


def test_cma_names():
    assert cma_name("hugetlb1", 1) == "hugetlb_cma node 1"
    assert cma_name("reserved", None) == "CMA 'reserved'"
    assert cma_name("hugetlbfoo", 0) == "CMA 'hugetlbfoo' (node 0)"


def _run(prog, *argv):
    return run(list(argv), Session(program_=prog))


@pytest.fixture
def discarded(monkeypatch):
    def no_memblock(prog, **kwargs):
        from kho_inspect.errors import StaleMemblockError
        raise StaleMemblockError("memblock cannot be trusted (discarded after boot)")

    for module in ("kho_inspect.diagnosis", "kho_inspect.scratch"):
        monkeypatch.setattr(f"{module}.read_memblock", no_memblock)


def test_kho_scratch_shows_why_instead_of_a_stale_array(capsys, discarded):
    prog = disabled_kernel()
    assert _run(prog, "kho", "scratch") == EXIT_CANNOT_INSPECT
    out, err = capsys.readouterr()
    assert "Scratch areas" not in out and "212 MiB" in out  # the evidence, not a table
    assert "KHO activation" in out and "FAILED" in out and "Kernel log" in out
    assert err.startswith("kho-inspect: error: No scratch areas: KHO disabled itself: "
                          "kho_reserve_scratch() could not reserve the global scratch area")
    assert _run(prog, "kho", "scratch", "--json") == EXIT_CANNOT_INSPECT
    obj = json.loads(capsys.readouterr().out)
    assert obj["activation"]["state"] == "disabled"
    assert obj["activation"]["sizing"]["needs"][2]["reserved"] is False


def test_the_scratch_walker_refuses_the_freed_array(discarded):
    with pytest.raises(Exception, match="describes no scratch: KHO is off"):
        scratch_module.scratch_report(disabled_kernel())


def test_kho_status_shows_state_and_reason(capsys, discarded):
    prog = disabled_kernel()
    assert _run(prog, "kho", "status") == EXIT_OK
    out = capsys.readouterr().out
    assert "KHO activation" in out and "disabled" in out
    assert "could not reserve the global scratch area" in out
    assert "KHO: Failed to reserve global scratch buffer" in out
    assert "none: KHO is off (kho_scratch[:kho_scratch_cnt] is not scratch)" in out
    assert _run(prog, "kho", "status", "--json") == EXIT_OK
    st = json.loads(capsys.readouterr().out)
    assert st["scratch_areas"] is None  # not the freed array's count
    assert st["activation"]["state"] == "disabled"
    assert st["activation"]["requested_by"] == "kho=on on the command line"
    assert not any("boot with kho=on" in n for n in st["notes"])


@pytest.mark.parametrize("argv, what", [(("kho", "fdt"), "No outgoing root FDT"),
                                        (("kho", "preserved"), "Nothing is preserved")])
def test_fdt_and_preserved_say_disabled_not_boot_with_kho_on(capsys, discarded, argv, what):
    assert _run(disabled_kernel(), *argv) == EXIT_CANNOT_INSPECT
    err = capsys.readouterr().err
    assert f"{what}: KHO disabled itself" in err and "boot with kho=on" not in err
    quiet = disabled_kernel(log=("Linux version 7.3.4",), command_line="console=ttyS0")
    assert _run(quiet, *argv) == EXIT_CANNOT_INSPECT
    err = capsys.readouterr().err
    assert f"{what}: KHO was not requested" in err and err.rstrip().endswith(
        "boot with kho=on to use KHO.")
