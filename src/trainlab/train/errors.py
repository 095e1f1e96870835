"""The error of a run that cannot start or continue."""


class TrainingError(ValueError):
    """A run that cannot start or continue; the message names the cause and the fix."""
