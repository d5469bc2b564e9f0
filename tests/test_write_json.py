# SPDX-License-Identifier: LGPL-2.1-or-later
"""Saved documents are written atomically into regular files, and in place into
anything else: ``-o /dev/stdout`` or a FIFO must never be replaced by a file."""

import json
import os
import threading

import pytest

from kho_inspect.cli.snapshot import write_json
from kho_inspect.errors import InputError


def test_a_regular_file_is_replaced_whole(tmp_path):
    path = tmp_path / "snap.json"
    path.write_text("old, longer than the new content" * 10)
    write_json(str(path), {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["snap.json"]  # no temporary left


def test_a_symlink_stays_a_symlink(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_json(str(link), {"b": 2})
    assert link.is_symlink() and json.loads(real.read_text()) == {"b": 2}


def test_a_fifo_is_written_in_place(tmp_path):
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    write_json(str(fifo), {"c": 3})
    reader.join(10)
    assert json.loads(got[0]) == {"c": 3}
    assert fifo.is_fifo()


def test_an_unwritable_place_is_one_sentence(tmp_path):
    with pytest.raises(InputError, match=r"Cannot write .*/missing/x.json: No such file"):
        write_json(str(tmp_path / "missing" / "x.json"), {})
