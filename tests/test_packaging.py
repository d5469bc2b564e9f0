# SPDX-License-Identifier: LGPL-2.1-or-later
"""The wheel, as users install kho-inspect: built with pip from the packaging
inputs, it must carry every kho_inspect module and what the lab reads at run
time (vm/ as kho_inspect/_vm/), and the lab must find those files from it."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What setup.py/setup.cfg build the wheel from; copied so the build leaves no build/ or
# *.egg-info in the checkout.
INPUTS = ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE",
          "kho_inspect", "vm")
# What the lab reads at run time from vm/, shipped as kho_inspect/_vm/ (see kho_inspect.lab):
# the patch series of every patched lab kernel included.
PATCHES = tuple(sorted(p.relative_to(ROOT / "vm").as_posix()
                       for p in (ROOT / "vm" / "patches").glob("*/*.patch")))
LAB_FILES = ("guest/init", "guest/scenario.py", "lab.config", "rootfs.packages", "ci-deps.sh",
             "guest/init-initramfs", "guest/khoguest.c", "lab-7.2.config", "lab-arm64.config",
             *PATCHES)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        elif path.exists():
            shutil.copy2(path, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                           "--disable-pip-version-check", "-w", str(tmp / "dist"), str(src)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    wheels = list((tmp / "dist").glob("kho_inspect-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def members(wheel: Path) -> Dict[str, zipfile.ZipInfo]:
    with zipfile.ZipFile(wheel) as z:
        return {info.filename: info for info in z.infolist()}


def test_every_module_is_in_the_wheel(members: Dict[str, zipfile.ZipInfo]):
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "kho_inspect").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules and not modules - set(members)


def test_lab_files_ship_as_package_data(wheel: Path, members: Dict[str, zipfile.ZipInfo]):
    with zipfile.ZipFile(wheel) as z:
        for rel in LAB_FILES:
            name = f"kho_inspect/_vm/{rel}"
            assert name in members, name
            assert z.read(name) == (ROOT / "vm" / rel).read_bytes(), name
    assert members["kho_inspect/_vm/guest/init"].external_attr >> 16 & 0o111
    assert len(PATCHES) >= 5, PATCHES


def test_lab_finds_the_patches_in_the_installed_package(wheel: Path, tmp_path: Path):
    """Every patched lab kernel's series is found from the wheel, in order."""
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    code = ("from kho_inspect.lab.kernel import LAB_KERNELS, patch_files\n"
            "for k in LAB_KERNELS.values():\n"
            "    print(k.name, *[p.relative_to(p.parents[2]).as_posix()"
            " for p in patch_files(k.build)])")
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, "
                           f"{str(site)!r})\n{code}"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) if " " in line else (line, "")
                 for line in proc.stdout.splitlines())
    assert lines["7.3"] == ""
    expected = " ".join(p for p in PATCHES if p.startswith("patches/7.3+unpreserved/"))
    assert lines["7.3+unpreserved"] == lines["7.3+unpreserved-broken"] == expected


def test_wheel_metadata(wheel: Path, members: Dict[str, zipfile.ZipInfo]):
    with zipfile.ZipFile(wheel) as z:
        entry_points = next(z.read(n).decode() for n in members
                            if n.endswith(".dist-info/entry_points.txt"))
    assert "kho-inspect = kho_inspect.cli:main" in entry_points
    assert not [n for n in members if n.startswith(("tests/", "vm/", "bench/"))]


def test_lab_finds_its_files_in_the_installed_package(wheel: Path, tmp_path: Path):
    """Unpacked like pip installs it, away from the checkout: vm_dir() is kho_inspect/_vm."""
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    code = "import kho_inspect.lab as lab; print(lab.package_dir()); print(lab.vm_dir())"
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, "
                           f"{str(site)!r}); {code}"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(site / "kho_inspect"), str(site / "kho_inspect" / "_vm")]
