"""A token-level radix (prefix) cache with a token capacity and priority-then-LRU eviction, like SGLang's."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence


class RadixNode:
    __slots__ = ("children", "key", "last_access", "lock_ref", "parent", "priority")

    def __init__(self, key: tuple[int, ...], parent: RadixNode | None, priority: int, tick: int) -> None:
        self.key = key
        self.parent = parent
        self.children: dict[int, RadixNode] = {}
        self.priority = priority
        self.last_access = tick
        self.lock_ref = 0


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class RadixCache:
    """Token-level radix tree with a token capacity, like SGLang's RadixCache.

    Nodes on the path of a running request are locked and never evicted. Eviction removes unlocked
    leaves, lowest priority first, then least recently used (`--radix-eviction-policy priority`);
    a node's priority is the highest priority of the requests that inserted or matched it.
    """

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity = capacity_tokens
        self._tick = itertools.count(1)
        self.root = RadixNode((), None, 0, 0)
        self.size = 0
        self.node_count = 0
        self.evicted_tokens = 0
        self.inserted_tokens = 0

    def clear(self) -> None:
        self.root = RadixNode((), None, 0, 0)
        self.size = 0
        self.node_count = 0

    def _split(self, child: RadixNode, at: int) -> RadixNode:
        parent = child.parent
        assert parent is not None
        mid = RadixNode(child.key[:at], parent, child.priority, child.last_access)
        mid.lock_ref = child.lock_ref
        parent.children[mid.key[0]] = mid
        child.key = child.key[at:]
        child.parent = mid
        mid.children[child.key[0]] = child
        self.node_count += 1
        return mid

    def match(self, tokens: Sequence[int], priority: int | None = None) -> tuple[int, RadixNode]:
        """Length of the longest cached prefix of `tokens`, and the node where it ends."""
        tick = next(self._tick)
        node = self.root
        i = 0
        while i < len(tokens):
            child = node.children.get(tokens[i])
            if child is None:
                break
            common = _common_prefix(child.key, tokens[i : i + len(child.key)])
            if common < len(child.key):
                child = self._split(child, common)
            child.last_access = tick
            if priority is not None:
                child.priority = max(child.priority, priority)
            node = child
            i += common
        return i, node

    def insert(self, tokens: Sequence[int], priority: int) -> RadixNode:
        """Insert `tokens`; returns the node where they end. Does not evict: call `evict`."""
        matched, node = self.match(tokens, priority)
        if matched < len(tokens):
            leaf = RadixNode(tuple(tokens[matched:]), node, priority, next(self._tick))
            node.children[leaf.key[0]] = leaf
            self.size += len(leaf.key)
            self.inserted_tokens += len(leaf.key)
            self.node_count += 1
            node = leaf
        return node

    @staticmethod
    def lock(node: RadixNode | None) -> None:
        while node is not None and node.parent is not None:
            node.lock_ref += 1
            node = node.parent

    @staticmethod
    def unlock(node: RadixNode | None) -> None:
        while node is not None and node.parent is not None:
            node.lock_ref -= 1
            node = node.parent

    def evict(self) -> None:
        if self.size <= self.capacity:
            return
        order = itertools.count()
        heap: list[tuple[int, int, int, RadixNode]] = []

        def push_if_evictable(node: RadixNode) -> None:
            if node.parent is not None and not node.children and node.lock_ref == 0:
                heapq.heappush(heap, (node.priority, node.last_access, next(order), node))

        stack = [self.root]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            push_if_evictable(node)
        while self.size > self.capacity and heap:
            _, _, _, node = heapq.heappop(heap)
            parent = node.parent
            if parent is None or node.children or node.lock_ref:
                continue
            del parent.children[node.key[0]]
            node.parent = None
            self.size -= len(node.key)
            self.evicted_tokens += len(node.key)
            self.node_count -= 1
            push_if_evictable(parent)
