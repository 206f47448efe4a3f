"""Counts the calls that ``ferrogen.enable`` hands to transformers, per reason, over the drop-in
tests, and fails a test whose calls should all run natively but did not.

``ferrogen.compat.fallback_counts()`` counts every call that falls back, per reason (the
``FallbackWarning`` is only shown once per reason and process, and tests filter warnings). A
test that sends calls to transformers on purpose says so with ``@pytest.mark.falls_back`` (any
reason) or ``@pytest.mark.falls_back("synced_gpus", ...)`` (reasons that start with these). The session's counts are printed at the end of the run.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterator

import pytest

# Modules whose enable()/patched() calls are counted: the drop-in tests and the other tests
# that go through the compat layer.
COUNTED = ("test_dropin", "test_docs", "test_generate_inputs", "test_prefix_allowed")

_session: Counter[str] = Counter()


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "falls_back(*reasons): the test sends enable() calls to transformers on purpose "
        "(for reasons starting with these; none given: any)")


def _allowed(marker: Any, reason: str) -> bool:
    return marker is not None and (not marker.args or any(reason.startswith(a) for a in marker.args))


@pytest.fixture(autouse=True)
def count_fallbacks(request: Any) -> Iterator[Counter[str]]:
    """This test's fallbacks per reason; checked against its ``falls_back`` marker afterwards."""
    seen: Counter[str] = Counter()
    if not request.module.__name__.startswith(COUNTED):
        yield seen
        return
    from ferrogen import compat

    before = Counter(compat.fallback_counts())
    yield seen
    seen.update(Counter(compat.fallback_counts()) - before)
    _session.update(seen)
    marker = request.node.get_closest_marker("falls_back")
    unexpected = {reason: n for reason, n in seen.items() if not _allowed(marker, reason)}
    assert not unexpected, f"calls that should run natively went to transformers: {unexpected}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _session:
        terminalreporter.write_sep("-", "ferrogen.enable fallbacks (calls per reason)")
        for reason, n in _session.most_common():
            terminalreporter.write_line(f"{n:5d}  {reason}")
