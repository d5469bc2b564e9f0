# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Kernel log
----------

The ``kho_inspect.printk`` module reads a target's kernel log (the printk
ring buffer) through drgn, from any target: the running kernel, a vmcore or a
QEMU guest. The text is formatted like ``dmesg(1)`` (``[seconds] message``),
the format :func:`kho_inspect.bootlog.parse_bootlog` and the KHO diagnosis
read.
"""

import drgn

from kho_inspect.errors import MemoryReadError

__all__ = ("read_kernel_log",)


_CACHE_KEY = "kho_inspect.printk.log"


def read_kernel_log(prog: drgn.Program) -> str:
    """The kernel log of ``prog`` as ``dmesg`` prints it.

    Decoding the ring buffer record by record is slow (half a minute for a
    ``memblock=debug`` log in a TCG guest), and ``snapshot``, ``check``,
    ``bootlog`` and ``hugetlb`` may each want it: the text is kept in
    ``prog.cache``, so one program reads it once. A live kernel's log keeps
    growing, but only the boot-time lines matter here.

    :raises MemoryReadError: the printk ring buffer cannot be read.
    """
    cached = prog.cache.get(_CACHE_KEY)
    if cached is not None:
        return cached
    # Imported here: drgn.helpers.linux imports every helper module (and drgn's
    # CLI), which costs a third of drgn's whole load of a vmcore; most commands
    # never read the log (bench/bench_check.py).
    from drgn.helpers.linux.printk import get_dmesg

    try:
        text = get_dmesg(prog).decode("utf-8", errors="replace")
    except (drgn.FaultError, LookupError) as e:
        raise MemoryReadError(f"The kernel log (printk ring buffer) cannot be read: {e}") from e
    prog.cache[_CACHE_KEY] = text
    return text
