"""A one-line progress bar for terminals; on anything else it stays silent."""

from types import TracebackType
from typing import TextIO

BAR_WIDTH = 30


class ProgressBar:
    def __init__(self, total_files: int, total_bytes: int, stream: TextIO) -> None:
        self._total_files = total_files
        self._total_bytes = total_bytes
        self._stream = stream
        self._enabled = total_files > 0 and _is_terminal(stream)
        self._files = 0
        self._bytes = 0

    def __enter__(self) -> "ProgressBar":
        self._render()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._enabled:
            self._stream.write("\n")
            self._stream.flush()

    def advance(self, size: int) -> None:
        self._files += 1
        self._bytes += size
        self._render()

    def _render(self) -> None:
        if not self._enabled:
            return

        done = self._bytes / self._total_bytes if self._total_bytes else self._files / self._total_files
        filled = round(BAR_WIDTH * done)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self._stream.write(f"\r[{bar}] {self._files}/{self._total_files} files {done:4.0%}")
        self._stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
