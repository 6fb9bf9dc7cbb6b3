"""Pure allocation logic for stitched networks: integer ranges and IPv4 address space.

``IntPool`` hands out integers of a closed range (VNIs, route-target numbers, VLAN ids);
``AddressSpace`` hands out IPv4 blocks from supernets and accepts asked-for blocks. Both
are next-fit (a cursor after the last allocation), so a long run of allocations costs
O(log n) each, and both search the whole space before refusing.

Invariants (property-tested): a value or block is never held twice; nothing allocated
overlaps another allocation or a registered external prefix; a refusal means nothing of
that size is left (never exhausted early), and says what is left.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from broker.errors import AddressOverlap, PoolExhausted

Net = ipaddress.IPv4Network


@dataclass(slots=True)
class IntPool:
    """The integers ``lo..hi`` (inclusive), each held by at most one owner."""

    name: str
    lo: int
    hi: int
    used: dict[int, str] = field(default_factory=dict)
    cursor: int = 0

    def __post_init__(self) -> None:
        if self.lo > self.hi:
            raise ValueError(f"{self.name}: empty range {self.lo}..{self.hi}")
        self.cursor = max(self.cursor, self.lo)

    @property
    def size(self) -> int:
        return self.hi - self.lo + 1

    def left(self) -> int:
        return self.size - len(self.used)

    def describe(self) -> str:
        return f"{self.name} {self.lo}..{self.hi}: {self.left()} of {self.size} free"

    def allocate(self, owner: str, want: int | None = None) -> int:
        """A free value (``want`` if given); raises ``PoolExhausted``/``AddressOverlap``."""
        if want is not None:
            if not self.lo <= want <= self.hi:
                raise PoolExhausted(self.name, f"{want} is outside {self.lo}..{self.hi}")
            if want in self.used:
                raise AddressOverlap(self.name, f"{want} is held by {self.used[want]}")
            self.used[want] = owner
            return want
        if len(self.used) >= self.size:
            raise PoolExhausted(self.name, f"all {self.size} values of {self.describe()} held")
        value = self.cursor
        while value in self.used:
            value = self.lo if value >= self.hi else value + 1
        self.used[value] = owner
        self.cursor = self.lo if value >= self.hi else value + 1
        return value

    def take(self, value: int, owner: str) -> None:
        """Record a value already held (loaded from the store)."""
        self.used[value] = owner

    def release(self, value: int) -> None:
        self.used.pop(value, None)


@dataclass(frozen=True, slots=True)
class Block:
    start: int
    end: int  # inclusive
    owner: str


def _span(net: Net) -> tuple[int, int]:
    return int(net.network_address), int(net.broadcast_address)


@dataclass(slots=True)
class AddressSpace:
    """Every IPv4 block held anywhere (networks and external prefixes), kept disjoint.

    Allocation searches the supernets it is given, aligned to the block size, skipping
    everything held; an asked-for block only has to be disjoint from everything held.
    """

    name: str = "address space"
    _starts: list[int] = field(default_factory=list)
    _blocks: list[Block] = field(default_factory=list)
    _cursor: dict[tuple[int, int], int] = field(default_factory=dict)

    def held(self) -> Iterator[tuple[Net, str]]:
        for b in self._blocks:
            yield _net(b.start, b.end), b.owner

    def overlapping(self, net: Net) -> list[tuple[Net, str]]:
        start, end = _span(net)
        i = bisect.bisect_right(self._starts, end)
        found = []
        while i > 0:
            i -= 1
            b = self._blocks[i]
            if b.end < start:
                # blocks are disjoint and sorted, so no earlier one reaches further
                break
            found.append((_net(b.start, b.end), b.owner))
        return found[::-1]

    def take(self, net: Net, owner: str) -> None:
        """Hold ``net`` for ``owner``; ``AddressOverlap`` names what it overlaps."""
        clash = self.overlapping(net)
        if clash:
            what = ", ".join(f"{n} ({o})" for n, o in clash)
            raise AddressOverlap(self.name, f"{net} overlaps {what}")
        start, end = _span(net)
        i = bisect.bisect_left(self._starts, start)
        self._starts.insert(i, start)
        self._blocks.insert(i, Block(start, end, owner))

    def release(self, net: Net) -> None:
        start, _ = _span(net)
        i = bisect.bisect_left(self._starts, start)
        if i < len(self._starts) and self._starts[i] == start:
            del self._starts[i]
            del self._blocks[i]

    def allocate(self, supernets: Iterable[Net], prefixlen: int, owner: str) -> Net:
        """The next free aligned /prefixlen inside ``supernets`` (next-fit)."""
        supers = list(supernets)
        if not supers:
            raise PoolExhausted(self.name, f"no supernet configured for {owner}")
        for sup in supers:
            if prefixlen < sup.prefixlen or prefixlen > 32:
                continue
            found = self._search(sup, prefixlen)
            if found is not None:
                self.take(found, owner)
                return found
        raise PoolExhausted(
            self.name,
            f"no free /{prefixlen} in {', '.join(map(str, supers))} "
            f"(free there: {self.free_summary(supers)})",
        )

    def _search(self, sup: Net, prefixlen: int) -> Net | None:
        lo, hi = _span(sup)
        size = 1 << (32 - prefixlen)
        key = (lo, prefixlen)
        begin = self._cursor.get(key, lo)
        for first, last in ((begin, hi), (lo, begin - 1)):
            cand = self._first_fit(first, last, size)
            if cand is not None:
                self._cursor[key] = cand + size if cand + size <= hi else lo
                return _net(cand, cand + size - 1)
        return None

    def _first_fit(self, first: int, last: int, size: int) -> int | None:
        cand = first
        while cand + size - 1 <= last:
            clash = self.overlapping(_net(cand, cand + size - 1))
            if not clash:
                return cand
            end = max(int(n.broadcast_address) for n, _ in clash)
            cand = end + 1
            cand = (cand + size - 1) // size * size  # align up
        return None

    def free_summary(self, supers: Iterable[Net]) -> str:
        """How many addresses are free in ``supers`` and the largest free block."""
        free, largest = 0, 0
        for sup in supers:
            lo, hi = _span(sup)
            pos = lo
            for n, _ in self.overlapping(sup):
                s, e = _span(n)
                if s > pos:
                    free += s - pos
                    largest = max(largest, _largest_aligned(pos, s - 1))
                pos = max(pos, e + 1)
            if pos <= hi:
                free += hi - pos + 1
                largest = max(largest, _largest_aligned(pos, hi))
        if not largest:
            return "nothing"
        return f"{free} addresses, largest block /{32 - largest.bit_length() + 1}"


def _largest_aligned(first: int, last: int) -> int:
    """Size of the largest aligned power-of-two block inside first..last."""
    best = 0
    for bits in range(32, -1, -1):
        size = 1 << bits
        cand = (first + size - 1) // size * size
        if cand + size - 1 <= last:
            best = size
            break
    return best


def _net(start: int, end: int) -> Net:
    size = end - start + 1
    return ipaddress.IPv4Network((start, 32 - size.bit_length() + 1))
