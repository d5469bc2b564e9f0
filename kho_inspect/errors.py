# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Errors
------

Every failure that the tool can explain is a :class:`KhoInspectError`. An
error carries *data* (what was asked for, what exists, which file, what would
work instead) in the words of the Python API, and two renderings of it:

* ``str(err)`` is one neutral sentence, fit for a drgn prompt or a script
  (``... use source='reserved' or source='pages'.``);
* :func:`kho_inspect.cli.errors.cli_message` words the same data with the
  command line's flags (``... use --from reserved or --from pages.``). The CLI
  prints it without a traceback (``--debug`` shows one) and exits with the
  error's ``exit_code``.

So no code below the CLI names a command-line flag.

The contract
============

``KhoInspectError(what="", advice="", *, given=None, name=None,
available=None, alternatives=(), path=None)``; every subclass accepts it.

``what``
    The problem, a clause without advice: ``"The incoming radix tree
    (kho_in.radix_tree) cannot be walked after boot (...)"``.
``advice``
    What to do, a clause in neutral words. Tokens in braces are rendered by
    each side: ``{alternatives}`` ("source='pages' or source='snapshot'" /
    "--from pages or --from snapshot FILE"), ``{available}`` ("a, b, c" or
    "none"), ``{given}`` (the keyword ``given`` as a noun phrase: "the core
    argument" / "--core") and any other ``{keyword}`` likewise ("give it to
    {vmlinux} and the dump to {core}"). Empty advice defaults to ``"use
    {alternatives}"`` when there are alternatives, else to ``"it has
    {available}"`` when ``available`` is known.
``given``
    The keyword argument the refused value came in, in API words:
    ``"source"``, ``"direction"``, ``"names"``, ``"flag"``, ``"types"``,
    ``"core"``, ``"qemu"``, ``"vmlinux"``, ``"snapshot"``.
``name``
    The value that is missing or refused (a flag, a blob, a source).
``available``
    The names that do exist (``None``: not known; ``()``: none).
``alternatives``
    What would work instead, each one of: ``"value"`` (another value of
    ``given``: ``given="source", alternatives=("reserved", "snapshot")``),
    ``"key=value"`` (a value of another keyword: ``"direction=out"``) or
    ``"key"`` (a keyword to set: ``"allow_stale"``, or an input to give:
    ``"core"``, ``"vmlinux"``).
``path``
    The file the error is about.

``str(err)`` is ``"<what>: <advice>."``, or ``what`` alone when there is no
advice, so a one-argument ``SomeError("Full sentence.")`` reads as before.
:meth:`KhoInspectError.data` returns the fields that are set.

Subclasses add fields: :class:`TruncatedDumpError` (``size``, ``expected``)
and :class:`DebugInfoError` (``release``, ``build_id``, ``kernel_build_id``).
:class:`NotInKernelError` is also a :class:`KeyError`.

Example::

    raise IncomingTreeError(
        "The incoming radix tree cannot be walked after boot (its pages were freed)",
        given="source", name="in", alternatives=("reserved", "pages", "snapshot"))

reads ``...: use source='reserved', source='pages' or source='snapshot'.``
and on the command line ``...: use --from reserved, --from pages or --from
snapshot FILE.``
"""

import re
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

__all__ = (
    "EXIT_OK",
    "EXIT_VIOLATIONS",
    "EXIT_CANNOT_INSPECT",
    "EXIT_USAGE",
    "Wording",
    "NEUTRAL",
    "join_or",
    "KhoInspectError",
    "TargetError",
    "TruncatedDumpError",
    "DebugInfoError",
    "StaleMemblockError",
    "NotKhoKernelError",
    "CorruptTreeError",
    "TracingUnavailableError",
    "LabError",
    "InputError",
    "IncomingTreeError",
    "MemoryReadError",
    "NotInKernelError",
)

EXIT_OK = 0
EXIT_VIOLATIONS = 1
EXIT_CANNOT_INSPECT = 2
EXIT_USAGE = EXIT_CANNOT_INSPECT
"""A usage error (unknown option, bad parameter) is bad input too: exit 2."""


def join_or(words: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    if len(words) < 2:
        return "".join(words)
    return f"{', '.join(words[:-1])} or {words[-1]}"


class Wording:
    """How an error's data becomes words; this one is neutral (Python API words).

    The CLI subclasses it to speak in flags.
    """

    # Keywords that take a value, and the placeholder shown for it.
    placeholders: Dict[str, str] = {"core": "PATH", "vmlinux": "PATH", "qemu": "SOCKET",
                                    "snapshot": "FILE"}

    def given(self, key: str) -> str:
        """A noun phrase for the keyword ``key``."""
        return f"the {key} argument"

    def alternative(self, key: str, value: Optional[str]) -> str:
        """Setting ``key`` (to ``value``; ``None``: to a flag or an input)."""
        if value is not None:
            return f"{key}={value!r}"
        return f"{key}={self.placeholders.get(key, 'True')}"


NEUTRAL = Wording()
_TOKEN = re.compile(r"\{(\w+)\}")


class KhoInspectError(Exception):
    """An explained failure: what is wrong, what to do, and the data of both.

    See the module docstring for the meaning of the fields.
    """

    exit_code = EXIT_CANNOT_INSPECT

    def __init__(self, what: str = "", advice: str = "", *, given: Optional[str] = None,
                 name: Optional[str] = None, available: Optional[Iterable[str]] = None,
                 alternatives: Iterable[str] = (), path: Optional[str] = None) -> None:
        super().__init__(what)
        self.what = what
        self.advice = advice
        self.given = given
        self.name = name
        self.available: Optional[Tuple[str, ...]] = (
            None if available is None else tuple(available))
        self.alternatives: Tuple[str, ...] = tuple(alternatives)
        self.path = None if path is None else str(path)

    def __str__(self) -> str:
        return self.render(NEUTRAL)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def alternative_pairs(self) -> Tuple[Tuple[str, Optional[str]], ...]:
        """``alternatives`` as ``(keyword, value or None)`` pairs."""
        pairs = []
        for alt in self.alternatives:
            if "=" in alt:
                key, value = alt.split("=", 1)
                pairs.append((key, value))
            elif self.given is not None:
                pairs.append((self.given, alt))
            else:
                pairs.append((alt, None))
        return tuple(pairs)

    def render(self, wording: Wording) -> str:
        """The sentence, with the data worded by ``wording``."""
        advice = self.advice
        if not advice and self.alternatives:
            advice = "use {alternatives}"
        elif not advice and self.available is not None:
            advice = "it has {available}"
        if not advice:
            return self.what
        tokens = {
            "alternatives": join_or([wording.alternative(k, v)
                                     for k, v in self.alternative_pairs()]),
            "available": ", ".join(self.available or ()) or "none",
        }

        def token(match: "re.Match[str]") -> str:
            key = self.given or "" if match[1] == "given" else match[1]
            return tokens[key] if key in tokens else wording.given(key)

        advice = _TOKEN.sub(token, advice)
        return f"{self.what.rstrip('.')}: {advice.rstrip('.')}."

    def data(self) -> Dict[str, Any]:
        """The fields that are set (``what`` and ``advice`` unrendered), for JSON."""
        fields = {key: value for key, value in vars(self).items() if not key.startswith("_")
                  and (value not in (None, "", ()) or key == "available" and value == ())}
        fields["error"] = type(self).__name__
        return {k: v.hex() if isinstance(v, bytes) else v for k, v in fields.items()}


class TargetError(KhoInspectError):
    """The target (live kernel, core file, QEMU guest) cannot be opened."""


class TruncatedDumpError(TargetError):
    """A dump file is shorter than its own headers say.

    :ivar size: the file's size in bytes.
    :ivar expected: the size its headers describe.
    """

    def __init__(self, what: str = "", advice: str = "", *, size: int = 0, expected: int = 0,
                 **fields: Any) -> None:
        super().__init__(what, advice, **fields)
        self.size = size
        self.expected = expected


class DebugInfoError(KhoInspectError):
    """Debug info is missing or does not match the target kernel.

    :ivar release: the target's kernel release, if known.
    :ivar build_id: the build ID of the vmlinux that was tried.
    :ivar kernel_build_id: the build ID the target kernel reports.
    """

    def __init__(self, what: str = "", advice: str = "", *, release: Optional[str] = None,
                 build_id: Optional[bytes] = None, kernel_build_id: Optional[bytes] = None,
                 **fields: Any) -> None:
        super().__init__(what, advice, **fields)
        self.release = release
        self.build_id = build_id
        self.kernel_build_id = kernel_build_id


class StaleMemblockError(KhoInspectError):
    """memblock was discarded after boot and its arrays cannot be trusted."""


class NotKhoKernelError(KhoInspectError):
    """The target kernel has no KHO support, or KHO is disabled."""


class CorruptTreeError(KhoInspectError):
    """A KHO structure (radix tree, FDT, chunk list) is malformed."""


class TracingUnavailableError(KhoInspectError):
    """BCC/BPF tracing cannot run here (no BCC, no BPF, not root)."""


class LabError(KhoInspectError):
    """The kernel lab could not build or run something."""


class InputError(KhoInspectError):
    """An input file (snapshot, log, blob) is unreadable or malformed."""


class IncomingTreeError(KhoInspectError):
    """The incoming radix tree was asked for; it is not walkable after boot."""


class MemoryReadError(KhoInspectError):
    """Kernel memory that must be read is missing from the target (a fault)."""


class NotInKernelError(KhoInspectError, KeyError):
    """Something asked for by name (a memblock flag or type, an FDT blob) does
    not exist in the target kernel; ``name`` is it, ``available`` what exists.

    It is also a :class:`KeyError`, for callers that catch a missing name so.
    """

    __str__ = KhoInspectError.__str__
