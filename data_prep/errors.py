"""Errors raised when an input file or event is unusable, naming the file, dataset and event."""

from __future__ import annotations


class InputValidationError(ValueError):
    """An input HDF5 file, one of its datasets, or one of its events is unusable.

    A ValueError subclass so callers that already guard against bad values catch it; the
    structured attributes let a converter count or report failures without parsing text.

    Attributes:
        uri: The file (path, gs:// URI or display name), or None when unknown.
        dataset: The HDF5 dataset concerned (e.g. "ECAL"), or None for whole-file problems.
        event_index: The event index inside the file, or None when not event-specific.
        reason: A short human-readable description of what is wrong, with the bad value.
    """

    def __init__(
        self,
        uri: str | None,
        reason: str,
        *,
        dataset: str | None = None,
        event_index: int | None = None,
    ) -> None:
        self.uri = uri
        self.dataset = dataset
        self.event_index = None if event_index is None else int(event_index)
        self.reason = reason
        super().__init__(self._format())

    def _format(self) -> str:
        parts = [f"file {self.uri!s}" if self.uri is not None else "file <unknown>"]
        if self.dataset is not None:
            parts.append(f"dataset '{self.dataset}'")
        if self.event_index is not None:
            parts.append(f"event {self.event_index}")
        return ", ".join(parts) + f": {self.reason}"

    def with_hint(self, hint: str) -> "InputValidationError":
        """The same error with what to do about it appended (e.g. the flag that skips bad events).

        The hint is added where the caller knows the options (the converter), not where the
        problem is found.
        """
        error = InputValidationError(self.uri, f"{self.reason}; {hint}", dataset=self.dataset,
                                     event_index=self.event_index)
        error.__cause__ = self
        return error

    def __reduce__(self):
        # Beam and multiprocessing pickle exceptions across processes; the default reduce would
        # call __init__ with the formatted message only and fail on the keyword-only arguments.
        return (
            _rebuild_error,
            (self.uri, self.reason, self.dataset, self.event_index),
        )


def _rebuild_error(
    uri: str | None, reason: str, dataset: str | None, event_index: int | None
) -> InputValidationError:
    return InputValidationError(uri, reason, dataset=dataset, event_index=event_index)


class UsageError(ValueError):
    """The command line is wrong (an unknown flag, a stray argument): say which and what to do.

    A ValueError so every caller that reports bad values reports this too; the CLI turns it into
    one `caloforge <stage>: error: ...` line and exit code 2.
    """
