"""A sorted collection of keys for the in-process store's indexes.

Kept in chunks of at most `2 * CHUNK` keys, so that adding or removing one costs O(log n + CHUNK)
rather than the O(n) move of a flat sorted list: a submit stays as cheap with a million jobs
queued as with ten. Iteration is in order.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator

CHUNK = 256


class SortedKeys:
    """Strings, in order."""

    def __init__(self) -> None:
        self._chunks: list[list[str]] = []
        self._maxes: list[str] = []  # the last key of each chunk
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[str]:
        for chunk in self._chunks:
            yield from chunk

    def first(self) -> str:
        """The smallest key; IndexError when empty."""
        return self._chunks[0][0]

    def add(self, key: str) -> None:
        self._size += 1
        maxes = self._maxes
        if not maxes:
            self._chunks.append([key])
            maxes.append(key)
            return
        if key >= maxes[-1]:  # after every key (times that only grow): no search
            index = len(maxes) - 1
            chunk = self._chunks[index]
            chunk.append(key)
        else:
            index = bisect_left(maxes, key)
            chunk = self._chunks[index]
            insort(chunk, key)
        self._maxes[index] = chunk[-1]
        if len(chunk) > 2 * CHUNK:
            self._chunks[index : index + 1] = [chunk[:CHUNK], chunk[CHUNK:]]
            self._maxes[index : index + 1] = [chunk[CHUNK - 1], chunk[-1]]

    def remove(self, key: str) -> None:
        """Remove `key`; KeyError when it is not there."""
        index = bisect_left(self._maxes, key)
        chunk = self._chunks[index] if index < len(self._chunks) else []
        position = bisect_left(chunk, key)
        if position == len(chunk) or chunk[position] != key:
            raise KeyError(key)
        del chunk[position]
        self._size -= 1
        if chunk:
            self._maxes[index] = chunk[-1]
        else:
            del self._chunks[index]
            del self._maxes[index]

    def iter_from(self, start: str) -> Iterator[str]:
        """The keys >= `start`, in order."""
        index = bisect_left(self._maxes, start)
        if index == len(self._chunks):
            return
        chunk = self._chunks[index]
        yield from chunk[bisect_left(chunk, start) :]
        for chunk in self._chunks[index + 1 :]:
            yield from chunk
