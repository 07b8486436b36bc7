"""The DP (GENERATESEQ + connected-set recurrence) finds the same optimum as brute-force enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paceline.planner.builder import GraphBuilder
from paceline.planner.cost_models import PaseCostModel
from paceline.planner.graph import LayerGraph
from paceline.planner.search import MinSumProblem, PairCost, generate_seq, solve
from paceline.planner.strategy import _problem, build_space, evaluate, plan_strategy


@st.composite
def problems(draw: st.DrawFn) -> MinSumProblem:
    n = draw(st.integers(1, 6))
    sizes = [draw(st.integers(1, 4)) for _ in range(n)]
    cost = st.floats(0.0, 10.0, allow_nan=False, width=32)
    unary = tuple(np.asarray(draw(st.lists(cost, min_size=k, max_size=k))) for k in sizes)
    pairs = []
    if n > 1:
        for _ in range(draw(st.integers(0, 8))):
            a, b = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
            # keys: the pairwise term sees each configuration only through a (possibly coarser) key
            ka = np.unique(
                draw(st.lists(st.integers(0, 2), min_size=sizes[a], max_size=sizes[a])), return_inverse=True
            )[1]
            kb = np.unique(
                draw(st.lists(st.integers(0, 2), min_size=sizes[b], max_size=sizes[b])), return_inverse=True
            )[1]
            la, lb = int(ka.max()) + 1, int(kb.max()) + 1
            table = np.asarray(draw(st.lists(cost, min_size=la * lb, max_size=la * lb))).reshape(la, lb)
            pairs.append(PairCost(a=a, b=b, key_a=ka.reshape(-1), key_b=kb.reshape(-1), table=table))
    return MinSumProblem(unary=unary, pairs=tuple(pairs))


def brute_force(problem: MinSumProblem) -> float:
    return min(problem.cost_of(c) for c in itertools.product(*(range(len(u)) for u in problem.unary)))


@settings(max_examples=300, deadline=None)
@given(problems())
def test_dp_optimum_equals_brute_force(problem: MinSumProblem) -> None:
    solution = solve(problem)
    best = brute_force(problem)
    assert solution.cost == pytest.approx(best, rel=1e-9, abs=1e-9)
    # back-substitution recovers a strategy that attains the optimum
    assert problem.cost_of(solution.choice) == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_forbidden_configurations_are_never_chosen() -> None:
    unary = (np.array([np.inf, 5.0]), np.array([0.0, np.inf, 1.0]))
    pair = PairCost(a=0, b=1, key_a=np.array([0, 1]), key_b=np.array([0, 1, 2]), table=np.zeros((2, 3)))
    solution = solve(MinSumProblem(unary=unary, pairs=(pair,)))
    assert solution.choice == (1, 0)
    assert solution.cost == 5.0


def test_generate_seq_defers_the_hub_of_a_star() -> None:
    # a hub with 5 leaves: leaves go first, each with dependent set {hub}
    neighbors = [{1, 2, 3, 4, 5}, {0}, {0}, {0}, {0}, {0}]
    order, dependents = generate_seq(neighbors)
    assert order[-1] == 0 or order[-2] == 0
    assert max(len(d) for d in dependents) == 1


def _random_layer_graph(seed: int) -> LayerGraph:
    """A small DAG of FC layers with a skip connection (a cycle in the undirected sense)."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder(name=f"random{seed}", min_split_size=1)
    widths = [int(w) for w in rng.choice([4, 8, 16], size=4)]
    x = g.fc(None, (8, widths[0]), widths[1], name="fc0")
    y = g.fc(x, g.shape(x), widths[2], name="fc1")
    z = g.fc(y, g.shape(y), widths[1], name="fc2")
    s = g.elementwise([x, z], g.shape(z), name="add")
    g.softmax_xent(s, g.shape(s), name="loss")
    return g.build()


@pytest.mark.parametrize("seed", range(4))
def test_dp_on_layer_graphs_equals_brute_force(seed: int) -> None:
    graph = _random_layer_graph(seed)
    space = build_space(graph, 4)
    model = PaseCostModel(procs=4, tflops=1.0, gbps=float(10 ** (seed % 3)))
    problem = _problem(space, model, 0.0, True)
    best = brute_force(problem)
    strategy = plan_strategy(space, model)
    assert strategy.total_seconds == pytest.approx(best, rel=1e-6)
    assert evaluate(space, strategy.choice, model).total_seconds == pytest.approx(best, rel=1e-6)
