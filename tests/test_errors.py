# SPDX-License-Identifier: LGPL-2.1-or-later
"""Errors carry data; ``str()`` words it for a drgn prompt, the CLI with its flags."""

import pytest

from kho_inspect.cli.errors import cli_message
from kho_inspect.errors import (
    CorruptTreeError,
    DebugInfoError,
    IncomingTreeError,
    KhoInspectError,
    NotInKernelError,
    NotKhoKernelError,
    StaleMemblockError,
    TargetError,
    TruncatedDumpError,
)


def both(error: KhoInspectError):
    return str(error), cli_message(error)


def test_one_argument_errors_read_as_before():
    error = CorruptTreeError("The radix tree has a loop at 0x1000.")
    assert both(error) == ("The radix tree has a loop at 0x1000.",) * 2
    assert error.args == ("The radix tree has a loop at 0x1000.",)


def test_alternative_sources():
    error = IncomingTreeError("The incoming radix tree cannot be walked after boot",
                              given="source", name="in", alternatives=("snapshot", "reserved"))
    assert both(error) == (
        "The incoming radix tree cannot be walked after boot: use source='snapshot' or "
        "source='reserved'.",
        "The incoming radix tree cannot be walked after boot: use --from snapshot FILE or "
        "--from reserved.")
    assert error.data() == {
        "error": "IncomingTreeError", "what": error.what, "given": "source", "name": "in",
        "alternatives": ("snapshot", "reserved")}


def test_keyword_alternatives_and_advice_with_the_list_inside():
    stale = StaleMemblockError("memblock cannot be trusted (it was discarded)",
                               "inspect a vmcore taken during boot, or pass {alternatives}",
                               alternatives=("allow_stale",))
    assert both(stale) == (
        "memblock cannot be trusted (it was discarded): inspect a vmcore taken during boot, or "
        "pass allow_stale=True.",
        "memblock cannot be trusted (it was discarded): inspect a vmcore taken during boot, or "
        "pass --allow-stale.")
    no_in = NotKhoKernelError("This kernel was not booted through KHO", given="direction",
                              name="in", alternatives=("out",))
    assert both(no_in)[1] == "This kernel was not booted through KHO: use --out."
    other = NotInKernelError("This kernel has no physmem", alternatives=("types=memory",
                                                                         "types=all"))
    assert both(other) == ("This kernel has no physmem: use types='memory' or types='all'.",
                           "This kernel has no physmem: use --type memory or --type all.")


def test_missing_name_lists_what_exists_and_is_a_key_error():
    error = NotInKernelError("The outgoing root FDT has no subnode 'foo'", given="names",
                             name="foo", available=("kexec-metadata", "memblock"))
    assert both(error) == ("The outgoing root FDT has no subnode 'foo': it has kexec-metadata, "
                           "memblock.",) * 2
    with pytest.raises(KeyError):
        raise error
    nothing = NotInKernelError("The FDT has no subnode 'foo'", name="foo", available=())
    assert str(nothing) == "The FDT has no subnode 'foo': it has none."


def test_keywords_named_in_advice():
    error = TargetError("vmlinux is an ELF executable, not a kernel dump",
                        "give it to {vmlinux} and the dump to {given}", given="core")
    assert both(error) == (
        "vmlinux is an ELF executable, not a kernel dump: give it to the vmlinux argument and "
        "the dump to the core argument.",
        "vmlinux is an ELF executable, not a kernel dump: give it to --vmlinux and the dump to "
        "--core.")


def test_subclass_fields():
    truncated = TruncatedDumpError("vmcore is truncated: 1 of 2 bytes", size=1, expected=2,
                                   path="vmcore", given="core")
    assert isinstance(truncated, TargetError)
    assert (truncated.size, truncated.expected, truncated.path) == (1, 2, "vmcore")
    mismatch = DebugInfoError("vmlinux does not match", build_id=b"\xab", kernel_build_id=b"\xcd")
    assert mismatch.data()["build_id"] == "ab" and mismatch.data()["kernel_build_id"] == "cd"

