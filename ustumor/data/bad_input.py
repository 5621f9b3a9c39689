"""One policy for bad source data: stop with a clear error, or skip and count."""
import logging
from collections import Counter

logger = logging.getLogger(__name__)

POLICIES = ("error", "skip")


class BadInputError(ValueError):
    """A source file or row cannot be used. The message names it and says why."""


class BadInputPolicy:
    """Raise on bad input, or record it and go on, as ``DATASETS.ON_BAD_ITEM`` says.

    Skips are counted by reason and reported once in :meth:`summarize`, so nothing
    is dropped silently.
    """

    def __init__(self, policy="error", source=""):
        if policy not in POLICIES:
            raise ValueError(f"ON_BAD_ITEM must be one of {POLICIES}, got {policy!r}")
        self.policy = policy
        self.source = source
        self.skipped = []  # (reason, message)

    def handle(self, reason, message):
        """Raise :class:`BadInputError`, or remember the skip and return."""
        if self.policy == "error":
            raise BadInputError(message)
        self.skipped.append((reason, message))

    def summarize(self):
        """Log one warning with skip counts by reason; returns the counts."""
        counts = Counter(reason for reason, _ in self.skipped)
        if counts:
            examples = "\n  ".join(message for _, message in self.skipped[:5])
            logger.warning(
                "%s: skipped %d bad item(s) (%s). First ones:\n  %s",
                self.source or "dataset",
                len(self.skipped),
                ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items())),
                examples,
            )
        return dict(counts)
