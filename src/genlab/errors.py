"""Errors a user can act on. The CLI prints their message as one line and exits with code 2."""


class GenlabError(Exception):
    """Base class: anything raised as a GenlabError is the user's to fix, not a bug."""


class ConfigError(GenlabError):
    """A bad option, preset, config file or `--set key=value` override."""


class DataError(GenlabError):
    """A dataset that is unknown, missing, corrupt or of the wrong shape."""


class CheckpointError(GenlabError):
    """A run directory that is missing, foreign or holds a corrupt checkpoint."""


class TrainingError(GenlabError):
    """Training cannot go on (for example a NaN or inf loss)."""
