"""Errors raised for bad user input.

Every user-facing failure (a malformed file, a wrong shape, a missing key) raises one
:class:`InputError` whose message names the file, key or shape at fault. The CLI turns it into
one line on stderr and exit code 2; library users can catch it.
"""


class MriPriorError(Exception):
    """Base class of all mriprior errors."""


class InputError(MriPriorError, ValueError):
    """Bad user input: a malformed file, a wrong shape, an unsupported option."""
