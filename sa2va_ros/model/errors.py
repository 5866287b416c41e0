"""Exceptions raised by the model core.

Every error says what is wrong and what the caller can do about it, because the
people reading them are robot operators looking at a log, not model authors.
"""

from __future__ import annotations


class Sa2VAError(Exception):
    """Base class of every error the model core raises on purpose."""


class CheckpointError(Sa2VAError):
    """A checkpoint is missing, incomplete, corrupt or of a format we do not support."""


class UnsupportedModelError(CheckpointError):
    """The checkpoint is readable but its architecture is not one we can run natively."""


class InputError(Sa2VAError, ValueError):
    """An image, mask, prompt or other argument is malformed (shape, dtype, empty...)."""
