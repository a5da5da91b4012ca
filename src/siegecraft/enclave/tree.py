"""The aggregation tree: training enclaves at the leaves, aggregators of bounded fan-out above them.

Leaves are grouped `fanout` at a time under level-1 aggregators, those under level-2 ones, and so on
until at most `fanout` nodes remain; they become the children of the root. With n <= fanout leaves the
root aggregates them directly. Per round only the nodes with a live leaf below them take part.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ROOT = "root"


@dataclass(frozen=True)
class AggregationTree:
    """Parent and children of every node; `aggregators` lists the intermediate nodes, bottom-up."""

    leaves: tuple[str, ...]
    aggregators: tuple[str, ...]
    parent: dict[str, str]
    children: dict[str, tuple[str, ...]]
    root: str = ROOT

    @classmethod
    def build(cls, leaves: Sequence[str], fanout: int, root: str = ROOT) -> AggregationTree:
        if fanout < 2:
            raise ValueError(f"fanout must be >= 2, got {fanout}")
        if not leaves:
            raise ValueError("an aggregation tree needs at least one leaf")
        if len(set(leaves)) != len(leaves):
            raise ValueError("leaf names must be unique")
        parent: dict[str, str] = {}
        children: dict[str, tuple[str, ...]] = {}
        aggregators: list[str] = []
        level, nodes = 1, list(leaves)
        while len(nodes) > fanout:
            grouped = []
            for i in range(0, len(nodes), fanout):
                name = f"agg-{level}-{i // fanout}"
                children[name] = tuple(nodes[i:i + fanout])
                parent.update({child: name for child in children[name]})
                aggregators.append(name)
                grouped.append(name)
            level, nodes = level + 1, grouped
        children[root] = tuple(nodes)
        parent.update({child: root for child in nodes})
        return cls(tuple(leaves), tuple(aggregators), parent, children, root)

    def nodes(self) -> list[str]:
        return [*self.leaves, *self.aggregators, self.root]

    def depth(self) -> int:
        """Number of edges from a leaf to the root."""
        node, hops = self.leaves[0], 0
        while node != self.root:
            node, hops = self.parent[node], hops + 1
        return hops

    def leaves_under(self, node: str) -> set[str]:
        if node in self.leaves:
            return {node}
        return set().union(*(self.leaves_under(c) for c in self.children[node]))

    def live_children(self, live_leaves: Iterable[str]) -> dict[str, list[str]]:
        """For each aggregator (and the root) with a live leaf below it, the children it must wait for."""
        live = set(live_leaves)
        active: dict[str, list[str]] = {}
        for node in [*self.aggregators, self.root]:
            kids = [c for c in self.children[node] if self.leaves_under(c) & live]
            if kids:
                active[node] = kids
        return active
