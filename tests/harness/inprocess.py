"""The worker built in this process (``streamer.worker.build_worker``) and run on a thread of its own.

What a process cannot give a test: the callbacks (``on_batch``, ``on_log_batch``), the runtime objects and
the metrics registry, in reach while the worker runs. Stopping takes SIGTERM's path (``_on_sigterm``) on the
worker's own loop, without a signal: signals belong to the main thread, which is pytest's.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from streamer.settings import Settings


class InProcessWorker:
    """``build_worker(settings, **options)``, started on a thread; ``stop()`` shuts it down as SIGTERM would."""

    def __init__(self, settings: Settings, **options: Any) -> None:
        from streamer.worker import build_worker

        self.settings = settings
        self.worker = build_worker(settings, **options)
        # In-process there is no deadline that ends the process (it would end pytest): stop() waits instead.
        self.worker.shutdown_timeout_s = None
        self.worker.install_signal_handlers = lambda: None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="in-process-worker", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.worker.loop)
        try:
            self.worker.execute_from_commandline()
        except SystemExit as exc:
            if exc.code not in (0, None):
                self.error = exc
        except BaseException as exc:
            self.error = exc

    def start(self) -> InProcessWorker:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 60.0) -> None:
        """Shut down (finishing the batches in flight and committing) and wait; raises what stopped it early."""
        if self._thread.is_alive() and not self.worker.loop.is_closed():
            self.worker.loop.call_soon_threadsafe(self.worker._on_sigterm)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"in-process worker still running {timeout:.0f} s after stop"
        if self.error is not None:
            raise AssertionError(f"in-process worker failed: {self.error!r}") from self.error
