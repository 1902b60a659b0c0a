"""Sessions working side by side for one run (`load/parallel_copy.py`,
`compare/parallel_sums.py`): each worker opens its sessions through `Workers.open`, and
the first failure, or an interrupt of the run's thread, cancels every session's
statement so the others stop too; the first error is re-raised in the run's thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence


class Workers:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._sessions: list = []
        self._errors: list[BaseException] = []

    def open(self, make_session: Callable[[], object]):
        """A session for a worker, cancelled with the others on a failure, closed at the end."""
        session = make_session()
        with self.lock:
            self._sessions.append(session)
        return session

    def _cancel_all(self) -> None:
        with self.lock:
            for session in self._sessions:
                if not session.closed:
                    session.cancel()

    def run(self, jobs: Sequence[Callable[[], None]], name: str) -> None:
        def guarded(job: Callable[[], None]) -> None:
            try:
                job()
            except BaseException as exc:  # handed to the run's thread, re-raised there
                with self.lock:
                    self._errors.append(exc)
                self._cancel_all()

        threads = [
            threading.Thread(target=guarded, args=(job,), name=f"{name}-{i}") for i, job in enumerate(jobs)
        ]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        except BaseException:  # Ctrl-C or a stopped run: stop the workers' statements first
            self._cancel_all()
            for thread in threads:
                thread.join()
            raise
        finally:
            for session in self._sessions:
                session.close()
        if self._errors:
            raise self._errors[0]
