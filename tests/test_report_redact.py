# SPDX-License-Identifier: LGPL-2.1-or-later
"""Redaction of kernel virtual addresses in shareable outputs (kho_inspect.redact)."""

import pytest

from kho_inspect.redact import Redactor, is_kernel_address, kernel_va_start


@pytest.mark.parametrize("arch, value, kernel", [
    ("x86_64", 0xFFFF_8880_0345_6000, True),       # direct map (4-level paging)
    ("x86_64", 0xFF11_0000_0000_0000, True),       # direct map (5-level paging)
    ("x86_64", 0xFFFF_FFFF_8100_0000, True),       # kernel text
    ("x86_64", 0x0000_7FFF_FFFF_F000, False),      # user space
    ("x86_64", 0x000F_FFFF_FFFF_F000, False),      # the highest 52-bit physical address
    ("aarch64", 0xFFFF_0000_0800_0000, True),      # 48-bit VA linear map
    ("aarch64", 0xFFF0_0000_0000_0000, True),      # 52-bit VA
    ("aarch64", 0xFF00_0000_0000_0000, False),     # below every arm64 kernel VA
    (None, (1 << 64) - 1, False),                  # ~0: MEMBLOCK_ALLOC_ANYWHERE
])
def test_kernel_address_ranges(arch, value, kernel):
    assert is_kernel_address(value, arch) is kernel
    assert kernel_va_start(arch) <= 0xFFF0_0000_0000_0000


def test_equal_addresses_get_equal_labels_everywhere():
    r = Redactor("x86_64")
    doc = r.json({"fdt": 0xFFFF_8880_0345_6000, "phys": 0x3456000, "flags": [1, True],
                  "text": "kho_out.fdt=ffff888003456000 other=0xffff888000001000"})
    assert doc == {"fdt": "<kva-1>", "phys": 0x3456000, "flags": [1, True],
                   "text": "kho_out.fdt=<kva-1> other=<kva-2>"}
    assert r.text("again 0xFFFF888003456000") == "again <kva-1>"
    assert r.count == 2


def test_physical_and_longer_hex_stay():
    r = Redactor("x86_64")
    text = ("[mem 0x0000000100000000-0x000000017fffffff] build-id "
            "ffff888003456000ffff888003456000aa phys 0x3a5e000")
    assert r.text(text) == text


def test_disabled_redactor_changes_nothing():
    r = Redactor("x86_64", enabled=False)
    obj = {"a": 0xFFFF_8880_0345_6000, "b": "0xffff888003456000"}
    assert r.json(obj) == obj and r.text(obj["b"]) == obj["b"]
