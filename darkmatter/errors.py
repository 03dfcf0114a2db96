"""The one exception type for a user's mistake (missing step, bad flag, unreachable hub)."""


class DarkMatterError(Exception):
    """A problem the user can fix; the message names the fix.

    Each script's ``main`` catches it once, prints the message on one line to
    stderr and exits with code 2. Any other exception is a bug.
    """
