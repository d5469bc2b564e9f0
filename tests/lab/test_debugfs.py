# SPDX-License-Identifier: LGPL-2.1-or-later
"""The lab suite's oracle parser (tests/lab/debugfs.py) on debugfs text as 7.3 prints it."""

import pytest

from kho_inspect.errors import InputError

from .debugfs import DebugfsRegion, parse_regions, parse_reserve_mem

RESERVED = """\
   0: 0x0000000000000000..0x0000000000000fff    0 NONE
   1: 0x0000000001000000..0x0000000002ffffff    x RSV_NIT|KHO_SCRATCH
   2: 0x0000000040000000..0x000000007fffffff    1 RSV_HUGETLB

"""


def test_parse_regions():
    assert parse_regions(RESERVED) == [
        DebugfsRegion(0, 0, 0x1000, 0, ()),
        DebugfsRegion(1, 0x1000000, 0x2000000, None, ("RSRV_NOINIT", "KHO_SCRATCH")),
        DebugfsRegion(2, 0x40000000, 0x40000000, 1, ("RSRV_HUGETLB",)),
    ]


def test_parse_regions_rejects_other_text():
    with pytest.raises(InputError, match="line 2 is not a region"):
        parse_regions("   0: 0x0..0xfff    0 NONE\nhello\n")


def test_parse_reserve_mem():
    assert parse_reserve_mem("khoinspect\t\t(16 MiB)\nnoise\n") == [("khoinspect", "16 MiB")]
