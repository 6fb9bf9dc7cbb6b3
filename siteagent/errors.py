"""Every error the site agent raises, under one root.

Foreign exceptions (openstacksdk, keystoneauth1, OS errors from sysfs, YAML) are
translated where they enter — a driver, the hardware discovery, the settings loader —
with ``raise X(...) from exc``; they never travel further. The type says whether to
retry: a ``Temporary`` error carries a delay; a ``DriverError`` says so with its
``temporary`` flag (the cloud decides, e.g. a 409 or 503 is worth retrying, a 400 is not);
every other error is permanent until its input (the object's generation, the
configuration) changes. ``retry_delay`` is the one place that reads this.

SiteAgentError
├── Temporary                  (retry_after: seconds) retrying as is may succeed
├── DriverError                (kind, name, cloud_message, temporary, retry_after)
│                              the cloud refused or failed an operation on an object
├── InvalidSpec                (field: dotted path, problem; kind, name) a desired
│                              object's spec is wrong; permanent until a new generation
├── SettingsError              (problems: every "dotted.path: what is wrong")
├── HardwareError              (path) sysfs/procfs is missing, unreadable or malformed
├── DatapathError              (op, detail) netlink/namespace work of the site gateway failed
└── WireError                  the stream to the broker failed
    ├── StreamLost             (also Temporary) closed, timed out or out of order
    └── Refused                (code, reason, permanent, retry_after) the broker refused
"""

from __future__ import annotations


class SiteAgentError(Exception):
    """Root of every error the site agent raises."""


class Temporary(SiteAgentError):
    """Retrying the same operation later may succeed."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DriverError(SiteAgentError):
    """The cloud refused or failed an operation on one object.

    ``cloud_message`` is what the cloud said, kept verbatim for the operator;
    ``temporary`` says whether the same request may succeed later (conflicts, rate
    limits, unavailable services, a dependency not created yet) and ``retry_after`` is
    the earliest sensible retry in seconds when the cloud said so.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        cloud_message: str,
        *,
        temporary: bool,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{kind} {name!r}: {cloud_message}")
        self.kind = kind
        self.name = name
        self.cloud_message = cloud_message
        self.temporary = temporary
        self.retry_after = retry_after


class InvalidSpec(SiteAgentError):
    """A desired object's spec is wrong; ``field`` is its dotted path inside the spec."""

    def __init__(self, field: str, problem: str, *, kind: str = "", name: str = "") -> None:
        where = f"{kind} {name!r}: " if kind else ""
        super().__init__(f"{where}spec.{field}: {problem}")
        self.field = field
        self.problem = problem
        self.kind = kind
        self.name = name


class SettingsError(SiteAgentError):
    """The configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings:\n  " + "\n  ".join(problems))
        self.problems = problems


class HardwareError(SiteAgentError):
    """The host's hardware description (sysfs, procfs) is missing or malformed."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class DatapathError(SiteAgentError):
    """The kernel refused what the site gateway asked (a link, an address, a namespace)."""

    def __init__(self, op: str, detail: str) -> None:
        super().__init__(f"datapath: {op}: {detail}")
        self.op = op
        self.detail = detail


class WireError(SiteAgentError):
    """The stream to the broker failed or the broker refused it."""


class StreamLost(WireError, Temporary):
    """The stream ended, timed out, or broke the protocol; reconnecting may succeed."""


class Refused(WireError):
    """The broker refused the stream with a ``RefusalCode`` (by name) and a reason.

    ``permanent`` refusals (identity, unsupported version, unknown site) are not worth
    retrying as is; the others may carry the broker's ``retry_after`` in seconds.
    """

    def __init__(
        self, code: str, reason: str, *, permanent: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(f"refused ({code}): {reason}")
        self.code = code
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after


def retry_delay(exc: BaseException) -> float | None:
    """The earliest retry in seconds if ``exc`` is worth retrying as is, else ``None``."""
    if isinstance(exc, Temporary):
        return exc.retry_after
    if isinstance(exc, DriverError) and exc.temporary:
        return exc.retry_after if exc.retry_after is not None else 0.0
    return None
