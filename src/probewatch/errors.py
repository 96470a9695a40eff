"""One error type for everything a user can fix: a message and what to do about it."""


class ProbewatchError(Exception):
    """A problem with the user's input or environment, with a hint that says how to fix it.

    The CLI prints these as one clear message with a non-zero exit, never as a traceback.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"
