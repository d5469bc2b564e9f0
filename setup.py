# SPDX-License-Identifier: LGPL-2.1-or-later
"""
The one part of the package layout setup.cfg cannot express: ``vm/`` (the
lab's guest scripts, kernel config fragment and root filesystem package list)
stays the top-level home in the repository and ships in the wheel as the
package data directory ``kho_inspect/_vm/``, where
:func:`kho_inspect.lab.vm_dir` finds it. Everything else is in setup.cfg.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=("kho_inspect", "kho_inspect.*")), "kho_inspect._vm"],
    package_dir={"kho_inspect._vm": "vm"},
)
