"""Where an import spends its time: a stage marked `@timed(label)` tells listeners its seconds.

Nothing listens in a server (a marked call then costs one check); `bench/stages.py` listens, so
that it measures the code as it runs rather than patching functions by name. A whole-import
stage (reading a file, planning an entity) is reported call by call; a per-batch step
(`batch=True`: checking, mapping, writing a batch) is called thousands of times and summed.
Imports nothing of rosterdrop: any layer may mark its stages.
"""

import functools
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
# Told (label, seconds, batch) as each marked call ends, raising or not.
Listener = Callable[[str, float, bool], None]
LISTENERS: list[Listener] = []


def listen(listener: Listener) -> None:
    LISTENERS.append(listener)


def timed(label: str, *, batch: bool = False) -> Callable[[Callable[P, R]], Callable[P, R]]:
    def mark(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            if not LISTENERS:
                return function(*args, **kwargs)
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - began
                for listener in LISTENERS:
                    listener(label, seconds, batch)

        return call

    return mark
