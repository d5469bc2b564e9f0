# SPDX-License-Identifier: LGPL-2.1-or-later
"""kho status and kho fdt on synthetic Linux 7.3 kernels."""

import dataclasses
import json

import libfdt
import pytest
from synth.kernel import SynthKernel
from synth.kho import (
    add_kho,
    kexec_metadata_blob,
    kho_kernel,
    kho_test_blob,
    kho_test_pages,
    kho_vmalloc_desc,
    luo_blob,
    memblock_blob,
)

from kho_inspect.cli import Session, run
from kho_inspect.cli.errors import cli_message
from kho_inspect.errors import (
    EXIT_CANNOT_INSPECT,
    EXIT_OK,
    EXIT_USAGE,
    NotInKernelError,
    NotKhoKernelError,
)
from kho_inspect.fdt import KHO_TEST_MAGIC
from kho_inspect.kho_fdt import read_kho_fdt
from kho_inspect.kho_status import kho_status

FOLIOS = [(0x2000_0000 + (i << 22), i % 11) for i in range(700)]
MYSTERY = bytes(range(40))


def _run(prog, *argv):
    return run(list(argv), Session(program_=prog))


def _json(capsys, prog, *argv):
    assert _run(prog, *argv, "--json") == EXIT_OK
    return json.loads(capsys.readouterr().out)


def _error(capsys, prog, *argv) -> str:
    assert _run(prog, *argv) == EXIT_CANNOT_INSPECT
    err = capsys.readouterr().err
    assert err.startswith("kho-inspect: error: ") and err.count("\n") == 1
    return err[len("kho-inspect: error: "):].strip()


@pytest.fixture(scope="module")
def kho_boot():
    """Kernel 3 of a chain: booted through KHO with count 2, LUO on, every 7.3 blob."""
    return kho_kernel(
        kho_boot=True, kexec_count=2, luo=True, liveupdate_num=4,
        out_blobs={"memblock": memblock_blob([("foo", 0x4000_0000, 0x400_0000)]),
                   "kho_test": kho_test_pages(FOLIOS), "mystery": MYSTERY},
        in_blobs={"LUO": luo_blob(4, 0x1000, 0x2000),
                  "memblock": memblock_blob([("foo", 0x4000_0000, 0x400_0000)])})


# --- status -----------------------------------------------------------------


def test_status_cold_boot(capsys):
    prog, layout = kho_kernel()
    st = _json(capsys, prog, "kho", "status")
    assert (st["enabled"], st["kho_boot"], st["kexec_count"], st["previous_release"]) == (
        True, False, 0, None)
    assert (st["next_kexec_count"], st["compatible"], st["compatible_in"]) == (1, "kho-v4", None)
    assert st["luo"] is False and st["preserved_memory_map_out"] == 0x7F0_0000
    assert st["memblock_flags"]["KHO_SCRATCH"] == 0x40
    assert st["memblock_flags"]["RSRV_HUGETLB"] == 0x80
    assert st["symbols"]["kho_out"] == "kho_out" and st["symbols"]["luo"] == "luo_global.enabled"
    assert st["fdt_out"] == 0xFFFF_8880_0000_0000 + layout.out_fdt


def test_status_kho_boot_count_2(capsys, kho_boot):
    prog, layout = kho_boot
    st = _json(capsys, prog, "kho", "status")
    assert (st["kho_boot"], st["kexec_count"], st["previous_release"]) == (True, 2, "7.3.3")
    assert (st["next_kexec_count"], st["compatible_in"]) == (3, "kho-v4")
    assert (st["fdt_in_phys"], st["preserved_memory_map_in"]) == (layout.in_fdt, 0x7E0_0000)
    assert (st["luo"], st["liveupdate_num"]) == (True, 4)
    assert any("no debugfs kho/out/fdt" in n for n in st["notes"])
    assert _run(prog, "kho", "status") == EXIT_OK
    text = capsys.readouterr().out
    assert f"KHO boot (kho_in.fdt_phys = {layout.in_fdt:#x})" in text
    assert "2, from 7.3.3 (the next kernel will be number 3)" in text
    assert "on, incoming live-update number 4" in text
    assert _run(prog, "kho", "status", "--format", "markdown") == EXIT_OK
    md = capsys.readouterr().out
    assert "### KHO status" in md and "| KHO_SCRATCH" in md


def test_status_kho_off(capsys):
    prog, _ = kho_kernel(enabled=False, luo=None)
    st = _json(capsys, prog, "kho", "status")
    assert (st["enabled"], st["compatible"], st["fdt_out"], st["luo"]) == (False, None, None, None)
    assert st["activation"]["state"] == "not requested"  # why: tests/test_diagnosis.py
    assert "This kernel has no LUO (CONFIG_LIVEUPDATE=n)." in st["notes"]
    assert _error(capsys, prog, "kho", "fdt") == (
        "No outgoing root FDT: KHO is off (kho_enable is false) and the command line cannot be "
        "read, so whether it was asked for is unknown: boot with kho=on to use KHO.")


@pytest.mark.parametrize("argv", [["kho", "status"], ["kho", "fdt"], ["kho", "fdt", "--in"]])
def test_kernel_without_kho_exits_2_with_the_sentence(capsys, argv):
    assert _error(capsys, SynthKernel().prog, *argv) == (
        "This kernel has no KHO support (CONFIG_KEXEC_HANDOVER=n): its debug info has no "
        "kho_out variable.")


def test_status_without_incoming_metadata_or_with_a_disagreeing_one():
    prog, _ = kho_kernel(kho_boot=True, kexec_count=2, metadata=False)
    st = kho_status(prog)
    assert st.kexec_count == 0 and st.previous_release is None
    assert "The previous kernel handed over no kexec-metadata blob." in st.notes
    prog, _ = kho_kernel(kho_boot=True, kexec_count=2,
                         in_blobs={"kexec-metadata": kexec_metadata_blob("7.3.2", 5)})
    st = kho_status(prog)
    assert st.kexec_count == 2
    assert any("says count 5 from '7.3.2', but kho_in holds 2 from '7.3.3'" in n
               for n in st.notes)


def test_status_before_kexec_metadata_members_reads_the_blob():
    prog, _ = kho_kernel(kho_boot=True, kexec_count=7, metadata_members=False)
    st = kho_status(prog)
    assert (st.kexec_count, st.previous_release) == (7, "7.3.3")


def test_status_reports_a_broken_root_as_a_note():
    prog, _ = kho_kernel(kho_boot=True, compatible_in="luo-v1")
    st = kho_status(prog)
    assert st.compatible_in is None and st.compatible == "kho-v4"
    assert any(n.startswith(
        "Cannot decode the incoming root FDT: The KHO root FDT has compatible 'luo-v1'")
               for n in st.notes)


# --- fdt --------------------------------------------------------------------


def test_fdt_out_decodes_every_blob(capsys, kho_boot):
    prog, layout = kho_boot
    doc = _json(capsys, prog, "kho", "fdt")
    assert doc["direction"] == "out"
    root = doc["root"]
    assert (root["compatible"], root["version"], root["preserved_memory_map"]) == (
        "kho-v4", 4, 0x7F0_0000)
    assert root["tree"]["properties"]["compatible"] == "kho-v4"
    blobs = doc["blobs"]
    assert set(blobs) == {"kexec-metadata", "LUO", "memblock", "kho_test", "mystery"}
    for name, (phys, size) in layout.out_blobs.items():
        assert (blobs[name]["phys"], blobs[name]["size"], blobs[name]["error"]) == (
            phys, size, None)
    assert blobs["kexec-metadata"]["decoded"]["kexec_count"] == 3
    assert blobs["kexec-metadata"]["decoded"]["previous_release"] == "7.3.4"
    assert blobs["LUO"]["decoded"]["liveupdate_num"] == 5
    assert blobs["memblock"]["decoded"]["entries"][0]["start"] == 0x4000_0000
    test = blobs["kho_test"]["decoded"]
    assert (test["magic"], test["nr_folios"]) == (KHO_TEST_MAGIC, len(FOLIOS))
    assert [(f["phys"], f["order"]) for f in test["folios"]] == FOLIOS
    assert blobs["mystery"]["kind"] == "raw" and len(blobs["mystery"]["decoded"]["hexdump"]) == 3


def test_fdt_in_shows_what_the_previous_kernel_handed_over(capsys, kho_boot):
    prog, layout = kho_boot
    doc = _json(capsys, prog, "kho", "fdt", "--in")
    assert doc["direction"] == "in" and doc["root"]["address"] == layout.in_fdt
    blobs = doc["blobs"]
    assert blobs["kexec-metadata"]["decoded"]["kexec_count"] == 2
    assert "LUO frees its incoming blob" in blobs["LUO"]["notes"][0]


def test_fdt_in_on_a_cold_boot(capsys):
    prog, _ = kho_kernel()
    assert _error(capsys, prog, "kho", "fdt", "--in") == (
        "This kernel was not booted through KHO (kho_in.fdt_phys is 0), so it has no incoming "
        "FDT: use --out for the FDT it will hand over.")


def test_fdt_text_and_markdown(capsys, kho_boot):
    prog, layout = kho_boot
    assert _run(prog, "kho", "fdt") == EXIT_OK
    text = capsys.readouterr().out
    assert f"Root FDT, outgoing (kho_out.fdt = virt {0xFFFF_8880_0000_0000 + layout.out_fdt:#x})" \
        in text
    assert "foo            reserve-mem-v1  0x40000000  0x43ffffff  64 MiB" in text
    assert "700 folios" in text and "... 684 more (--json for all)" in text
    phys = layout.out_blobs["mystery"][0]
    assert f"{phys:08x}  00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f  |................|" \
        in text
    assert _run(prog, "kho", "fdt", "--blob", "mystery", "--format", "markdown") == EXIT_OK
    md = capsys.readouterr().out
    assert md.startswith("### Blob mystery (raw, phys") and "\n```\n" in md


def test_fdt_blob_selects_and_raw_adds_bytes(capsys, kho_boot):
    prog, layout = kho_boot
    doc = _json(capsys, prog, "kho", "fdt", "--blob", "LUO", "--raw")
    assert list(doc["blobs"]) == ["LUO"]
    assert doc["blobs"]["LUO"]["bytes"] == luo_blob(5, 0, 0).hex()
    assert _run(prog, "kho", "fdt", "--blob", "kexec-metadata", "--raw") == EXIT_OK
    out = capsys.readouterr().out
    assert "Blob kexec-metadata" in out and "|....7.3.4" in out and "Root FDT" not in out
    assert _run(prog, "kho", "fdt", "--blob", "nope") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "has no subnode 'nope' (it has: mystery, kho_test, memblock, LUO, kexec-metadata)" \
        in err


def test_fdt_reports_broken_blobs_and_keeps_going(capsys):
    broken_chain = kho_test_blob(1, kho_vmalloc_desc(0x7FFF_F000_0000, 1), 0)
    prog, _ = kho_kernel(out_blobs={"kho_test": broken_chain, "LUO": b"luo-v5\0\0"},
                         compatible="kho-v5")
    doc = _json(capsys, prog, "kho", "fdt")
    assert doc["root"]["version"] == 5
    test = doc["blobs"]["kho_test"]
    assert (test["kind"], test["compatible"]) == ("fdt", "kho-test-v1")
    assert test["error"].startswith("kho_vmalloc chunk 0 at 0x7ffff0000000 cannot be read")
    assert doc["blobs"]["LUO"]["kind"] == "raw"
    assert "fewer than the 32 of struct luo_ser" in doc["blobs"]["LUO"]["error"]
    assert doc["blobs"]["kexec-metadata"]["error"] is None
    assert _run(prog, "kho", "fdt") == EXIT_OK
    assert "error: kho_vmalloc chunk 0" in capsys.readouterr().out


def test_fdt_unreadable_blob_and_corrupt_root(capsys):
    kernel = SynthKernel()
    layout = add_kho(kernel)
    # Point the metadata subnode outside RAM, as a corrupt FDT would.
    root = libfdt.Fdt(kernel.prog.read(layout.out_fdt, 4096, True))
    node = root.subnode_offset(0, "kexec-metadata")
    root.setprop(node, "preserved-data", (1 << 45).to_bytes(8, "little"))
    kernel.write_phys(layout.out_fdt, bytes(root.as_bytearray()))
    doc = _json(capsys, kernel.prog, "kho", "fdt")
    assert doc["blobs"]["kexec-metadata"]["error"].startswith(
        "KHO blob kexec-metadata at physical address 0x200000000000 cannot be read")
    kernel.write_phys(layout.out_fdt + 8, b"\xff\xff")
    assert "is not a valid FDT (libfdt:" in _error(capsys, kernel.prog, "kho", "fdt")


# --- errors carry data, worded for the caller ---------------------------------


def test_missing_blob_names_itself_and_the_blobs_there_are(kho_boot):
    prog, _ = kho_boot
    with pytest.raises(NotInKernelError) as info:
        read_kho_fdt(prog, "out", ["nope"])
    err = info.value
    assert isinstance(err, KeyError)
    assert (err.given, err.name) == ("names", "nope")
    assert err.available == ("mystery", "kho_test", "memblock", "LUO", "kexec-metadata")
    assert str(err) == ("The outgoing root FDT has no subnode 'nope': it has mystery, kho_test, "
                        "memblock, LUO, kexec-metadata.")


def test_walker_errors_name_no_flag_but_the_cli_does():
    prog, _ = kho_kernel()
    with pytest.raises(NotKhoKernelError) as info:
        read_kho_fdt(prog, "in")
    assert "--" not in str(info.value)
    assert str(info.value).endswith(": use direction='out' for the FDT it will hand over.")
    assert cli_message(info.value).endswith(": use --out for the FDT it will hand over.")


def test_status_is_built_in_one_step(kho_boot):
    st = kho_status(kho_boot[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.kexec_count = 0
    assert isinstance(st.notes, tuple)
