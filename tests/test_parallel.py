"""The thread helpers that keep both cores busy without losing errors or results."""

from __future__ import annotations

import pytest

from cas.parallel import bounded_map, overlapped_map


def test_overlapped_map_returns_everything_and_raises_errors() -> None:
    assert sorted(overlapped_map(lambda x: x * 2, range(5), range(5, 9))) == [
        0, 2, 4, 6, 8, 10, 12, 14, 16,
    ]  # fmt: skip

    def boom(x: int) -> int:
        if x == 3:
            raise ValueError("heavy side failed")
        return x

    with pytest.raises(ValueError, match="heavy side failed"):
        list(overlapped_map(boom, range(5), range(10, 12)))
    with pytest.raises(ValueError, match="heavy side failed"):
        list(overlapped_map(boom, range(10, 12), range(5)))


def test_bounded_map_keeps_input_order() -> None:
    assert list(bounded_map(lambda x: x + 1, range(200), workers=2, window=8)) == list(
        range(1, 201)
    )
