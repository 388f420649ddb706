"""The error a user can fix by changing an input (every user-facing error of ours is a ValueError)."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (at most `limit` characters), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


class InputError(ValueError):
    """A user input that cannot run (empty question, a prompt longer than the window, budgets that do not fit...)."""
