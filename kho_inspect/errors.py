"""
Errors
------

Every failure that the tool can explain is a :class:`KhoInspectError`: its
message is one sentence that says what is wrong and what to do. The CLI prints
it without a traceback (``--debug`` shows one) and exits with the error's
``exit_code``.
"""

__all__ = (
    "EXIT_OK",
    "EXIT_VIOLATIONS",
    "EXIT_CANNOT_INSPECT",
    "EXIT_USAGE",
    "KhoInspectError",
    "TargetError",
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
EXIT_USAGE = 3


class KhoInspectError(Exception):
    """An explained failure: the message says what is wrong and what to do."""

    exit_code = EXIT_CANNOT_INSPECT


class TargetError(KhoInspectError):
    """The target (live kernel, core file, QEMU guest) cannot be opened."""


class DebugInfoError(KhoInspectError):
    """Debug info is missing or does not match the target kernel."""


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


class NotInKernelError(KhoInspectError):
    """Something named on the command line (a memblock flag or type) does not
    exist in the target kernel."""
