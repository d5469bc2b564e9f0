# SPDX-License-Identifier: LGPL-2.1-or-later
"""The lab library reports through logging and never prints; the CLI's handler
prints what ``lab build`` and ``lab run`` show; the library never imports the CLI."""

import ast
import logging
from pathlib import Path
from typing import Iterator, List

import pytest

import kho_inspect.lab
from kho_inspect.cli import lab as cli_lab
from kho_inspect.lab import kernel
from kho_inspect.lab.kernel import Kernel, _Progress
from kho_inspect.lab.run import RunOptions, _follow_serial, _Run

LAB = Path(kho_inspect.lab.__file__).parent


def _lab_modules() -> List[Path]:
    return sorted(LAB.glob("*.py"))


def _imports(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):  # function-local imports included
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize("path", _lab_modules(), ids=lambda p: p.name)
def test_lab_module_neither_prints_nor_imports_the_cli(path: Path):
    tree = ast.parse(path.read_text())
    imports = list(_imports(tree))
    assert not [m for m in imports if m == "click" or m.startswith("click.")], path
    assert not [m for m in imports if m.startswith("kho_inspect.cli")], path
    prints = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call)
              and isinstance(n.func, ast.Name) and n.func.id == "print"]
    assert not prints, f"{path.name}: print() on lines {prints}"


@pytest.fixture
def handler() -> Iterator[None]:
    cli_lab.attach_log_handler()
    yield
    logger = logging.getLogger(cli_lab.LAB_LOGGER)
    for h in [h for h in logger.handlers if isinstance(h, cli_lab.LabLogHandler)]:
        logger.removeHandler(h)
    logger.setLevel(logging.NOTSET)
    logging.getLogger(cli_lab.PROGRESS_LOGGER).setLevel(logging.NOTSET)


def _steps(progress: _Progress, count: int) -> None:
    for i in range(count):
        progress.line(f"  CC      mm/file{i}.o\n")
    progress.done()


@pytest.fixture(autouse=True)
def every_step_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every build step after the first is due for a DEBUG status-line record."""
    monkeypatch.setattr(kernel, "PROGRESS_TICK", 0.0)


def test_build_progress_records(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="kho_inspect.lab")
    _steps(_Progress(expected=4), 3)
    messages = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    # one INFO progress record (then every 30 s), no DEBUG ticks when DEBUG is off
    assert messages[0] == ("kho_inspect.lab.kernel.progress", logging.INFO,
                           "kernel build  25% 1/~4 0:00  CC mm/file0.o")
    assert messages[1][0] == "kho_inspect.lab.kernel"
    assert messages[1][2].startswith("kernel build finished in 0:00 (3 steps)")
    assert len(messages) == 2


def test_cli_prints_lab_and_guest_lines(handler: None, tmp_path: Path,
                                        capsys: pytest.CaptureFixture):
    serial = tmp_path / "serial.log"
    serial.write_text("[    1.0] random kernel line\nKHO-LAB: n0: stage start (uptime 1 s)\n"
                      "[    2.0] WARNING: CPU: 0 PID: 1 at mm/memblock.c\n")
    run = _Run(RunOptions(out=tmp_path), Kernel(tmp_path / "bz", tmp_path / "vm"),
               tmp_path / "sock")
    assert _follow_serial(run, serial, 0) == serial.stat().st_size
    logging.getLogger("kho_inspect.lab.run").info("accelerator %s (%s)", "tcg", "requested")
    _steps(_Progress(expected=4), 2)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "guest: n0: stage start (uptime 1 s)",
        "guest: [    2.0] WARNING: CPU: 0 PID: 1 at mm/memblock.c",
        "lab: accelerator tcg (requested)",
        "lab: kernel build  25% 1/~4 0:00  CC mm/file0.o",
        "lab: kernel build finished in 0:00 (2 steps)",
    ]
    assert list(run.stage_seen) == ["n0"]


def test_cli_status_line_on_a_terminal(handler: None, capsys: pytest.CaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cli_lab, "_stderr_is_tty", lambda: True)
    cli_lab.attach_log_handler()  # a terminal: DEBUG ticks become the live status line
    _steps(_Progress(expected=4), 2)
    err = capsys.readouterr().err
    width = cli_lab.LabLogHandler.WIDTH
    first = "lab: kernel build  25% 1/~4 0:00  CC mm/file0.o".ljust(width)
    second = "lab: kernel build  50% 2/~4 0:00  CC mm/file1.o".ljust(width)
    assert err == f"\r{first}\r{second}\nlab: kernel build finished in 0:00 (2 steps)\n"
