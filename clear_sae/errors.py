"""The one exception type the CLI turns into a one-line message."""


class ClearSaeError(Exception):
    """A problem with the user's input: the message says what is wrong and how to fix it."""
