"""The error a user can fix by changing an input (every user-facing error of ours is a ValueError)."""


class InputError(ValueError):
    """A user input that cannot run (empty question, a prompt longer than the window, budgets that do not fit...)."""
