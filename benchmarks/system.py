"""Machine facts (CPU, cores, memory) and small process utilities.

Everything here is independent of the libraries under test: progress bars
that fall back silently when tqdm is missing, peak RSS, and a context that
keeps native libraries' stderr chatter (faiss prints one k-means warning per
sub-quantizer) off the terminal while remembering what was said.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from typing import Any


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def available_cores() -> int:
    """Cores this process may run on (affinity mask when the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def settle(max_wait: float = 0.25, step: float = 0.004) -> None:
    """Wait (at most `max_wait` s) until no thread of this process is using CPU.

    After a parallel call, OpenMP and OpenBLAS worker threads busy-wait for a
    while; on a machine with few cores they would steal time from the next
    library timed (severalfold on 2 cores), so timed sections start
    only once the process is idle.
    """
    end = time.perf_counter() + max_wait
    while time.perf_counter() < end:
        cpu = time.process_time()
        time.sleep(step)
        if time.process_time() - cpu < 0.25 * step:
            return


def peak_rss_mb() -> float:
    """Process-wide peak resident set size so far, in MiB (getrusage)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


class Progress:
    """A tqdm bar when tqdm is installed and enabled, otherwise a silent no-op."""

    def __init__(self, total: int, desc: str, enabled: bool = True) -> None:
        self._bar: Any = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self._bar = tqdm(
                total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True
            )

    def update(self, n: int = 1, status: str | None = None) -> None:
        if self._bar is not None:
            if status is not None:
                self._bar.set_postfix_str(status, refresh=n == 0)
            if n:
                self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def captured_chatter(notes: set[str]) -> Iterator[None]:
    """Silence Python warnings and native writes to fd 2; add their lines to `notes`.

    Exceptions still propagate; only the text is diverted.  Falls back to
    leaving fd 2 alone where it cannot be duplicated (e.g. some notebooks).
    """
    sys.stderr.flush()
    with (
        warnings.catch_warnings(record=True) as caught,
        tempfile.TemporaryFile() as tmp,
    ):
        warnings.simplefilter("always")
        try:
            saved = os.dup(2)
        except OSError:
            saved = None
        if saved is not None:
            os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", errors="replace")
            notes.update(line.strip() for line in text.splitlines() if line.strip())
            notes.update(f"{w.category.__name__}: {w.message}" for w in caught)
