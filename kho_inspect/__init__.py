# SPDX-License-Identifier: LGPL-2.1-or-later
"""
kho-inspect
-----------

The ``kho_inspect`` package inspects physical memory across a Kexec HandOver
(KHO): memblock arrays, KHO scratch areas, the preserved-memory radix tree,
KHO FDT blobs and hugetlb gigantic pages, read with drgn from a live kernel,
a vmcore or a QEMU guest.
"""

__version__ = "0.1.0"

__all__ = ("__version__",)
