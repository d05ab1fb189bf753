"""The one exception type that means "the user asked for something wrong".

The CLI turns it into a single line on stderr and exit code 2, with no traceback; anything else is
a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: an unknown name, an impossible size, a missing or corrupt data dir, ..."""
