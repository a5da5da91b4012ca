"""Aggregation tree: fan-out respected, every leaf reaches the root, live subtrees computed right."""

from __future__ import annotations

import pytest

from siegecraft.enclave.tree import AggregationTree


@pytest.mark.parametrize(("n", "fanout", "aggregators", "depth"),
                         [(8, 10, 0, 1), (10, 10, 0, 1), (16, 10, 2, 2), (100, 10, 10, 2),
                          (101, 10, 13, 3), (1000, 10, 110, 3), (7, 2, 6, 3)])
def test_shape(n: int, fanout: int, aggregators: int, depth: int) -> None:
    tree = AggregationTree.build([f"te-{i}" for i in range(n)], fanout)
    assert len(tree.aggregators) == aggregators
    assert tree.depth() == depth
    assert all(len(kids) <= fanout for kids in tree.children.values())
    for leaf in tree.leaves:
        node, hops = leaf, 0
        while node != tree.root:
            node, hops = tree.parent[node], hops + 1
        assert hops == depth
    assert tree.leaves_under(tree.root) == set(tree.leaves)


def test_live_children_skip_dead_subtrees() -> None:
    tree = AggregationTree.build([f"te-{i}" for i in range(9)], 3)
    live = tree.live_children(["te-0", "te-1", "te-7"])
    assert live == {"agg-1-0": ["te-0", "te-1"], "agg-1-2": ["te-7"], "root": ["agg-1-0", "agg-1-2"]}


@pytest.mark.parametrize(("leaves", "fanout"), [([], 3), (["a", "a"], 3), (["a", "b"], 1)])
def test_invalid_trees_are_refused(leaves: list[str], fanout: int) -> None:
    with pytest.raises(ValueError):
        AggregationTree.build(leaves, fanout)
