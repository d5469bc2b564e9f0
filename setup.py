# SPDX-License-Identifier: LGPL-2.1-or-later
"""
The parts of the package layout setup.cfg cannot express:

* ``vm/`` (the lab's guest scripts, kernel config fragment and root filesystem
  package list) stays the top-level home in the repository and ships in the
  wheel as the package data directory ``kho_inspect/_vm/``, where
  :func:`kho_inspect.lab.vm_dir` finds it;
* ``kho_inspect._radixscan``, the C scanner of radix leaf bitmaps (stable C
  API, no dependencies; see bench/README.md). It is optional: without a C
  compiler the build goes on and kho_inspect.radix uses its pure-Python
  scanner.

Everything else is in setup.cfg.
"""

from setuptools import Extension, find_packages, setup

setup(
    packages=[*find_packages(include=("kho_inspect", "kho_inspect.*")), "kho_inspect._vm"],
    package_dir={"kho_inspect._vm": "vm"},
    ext_modules=[
        Extension(
            "kho_inspect._radixscan",
            sources=["kho_inspect/_radixscan.c"],
            py_limited_api=True,
            optional=True,
        ),
    ],
)
