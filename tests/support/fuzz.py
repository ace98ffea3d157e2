"""Hypothesis for the fuzz tests, or stand-ins that skip them when it is not installed.

``hypothesis`` is not in the ``[test]`` extra yet; with these stand-ins a fresh install still
collects every test module: strategies build to an inert placeholder and each ``@given`` test
becomes a skipped test of the same name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ModuleNotFoundError:

    class _Inert:
        """Answers every attribute, call and ``|`` with itself: a strategy nobody draws from."""

        def __getattr__(self, name: str) -> _Inert:
            return self

        def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
            return self

        def __or__(self, other: object) -> _Inert:
            return self

        __ror__ = __or__

    st = _Inert()  # type: ignore[assignment]

    def given(*args: Any, **kwargs: Any) -> Callable[[Callable[..., None]], Callable[[], None]]:  # type: ignore[no-redef]
        def skipped(test: Callable[..., None]) -> Callable[[], None]:
            def stand_in() -> None:
                pytest.skip("hypothesis is not installed")

            stand_in.__name__, stand_in.__doc__ = test.__name__, test.__doc__
            return stand_in

        return skipped

    def settings(*args: Any, **kwargs: Any) -> Callable[[Any], Any]:  # type: ignore[no-redef]
        return lambda test: test


__all__ = ["given", "settings", "st"]
