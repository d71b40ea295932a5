"""User-facing errors: one line that says which file, what is wrong and what to do."""


class BgmgenError(Exception):
    """An error the user can act on. The CLI prints `str(err)` on one line, no traceback."""

    exit_code = 1


class InputError(BgmgenError):
    """The input (a video, a folder, an output location) cannot be used. Exit code 2."""

    exit_code = 2


class MissingDependencyError(BgmgenError):
    """A system tool or weight file the stage needs is absent."""

    exit_code = 3


def one_line(text: object) -> str:
    """`text` (an error or a message) folded onto one line, for `bgmgen: error: <one line>`."""
    return " ".join(str(text).split()) or "unknown error"
