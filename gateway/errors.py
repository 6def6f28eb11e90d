class GatewayError(Exception):
    """Base class of the errors this package raises on purpose."""


class ConfigError(GatewayError):
    """An environment variable is missing or invalid."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class UsageError(GatewayError):
    """A command-line argument is invalid."""


class MalformedKey(GatewayError):
    """A media key from a URL path cannot name an object."""


class BackendUnavailable(GatewayError):
    """PostgreSQL or S3 did not respond in time."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"{backend} unavailable: {reason}")
        self.backend = backend
        self.reason = reason
