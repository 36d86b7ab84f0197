"""Shared test helpers."""

import threading
from collections.abc import Callable


def run_in_threads(*targets: Callable[[], None]) -> None:
    """Start the targets together; re-raise the first failure in the calling thread."""
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> None:
        barrier.wait()
        try:
            target()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
