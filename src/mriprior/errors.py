"""Errors raised for bad user input.

Every user-facing failure (a malformed file, a wrong shape, a missing key) raises one
:class:`InputError` whose message names the file, key or shape at fault. The CLI turns it into
one line on stderr and exit code 2; library users can catch it.
"""


class MriPriorError(Exception):
    """Base class of all mriprior errors."""


class InputError(MriPriorError, ValueError):
    """Bad user input: a malformed file, a wrong shape, an unsupported option."""


def check_int(name: str, value, minimum: int) -> int:
    """``value`` as an int when it is an integer (numpy integers too, not bool) >= ``minimum``;
    InputError naming ``name`` otherwise."""
    if isinstance(value, bool) or not hasattr(value, "__index__") or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
