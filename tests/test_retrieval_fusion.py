"""Issue 19's retrieval options, on the real classes and model: the common-word lift
(``common_boost``: a speaker's name says whose facts answer), the blend of the two query
vectors (``common_blend``), and the second evaluation set (two speakers' observations)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.eval_compare import BEFORE, options_for
from bench.eval_retrieval import DIALOGUE, evaluate, load_set, loaded
from proxy.config import RetrievalSettings, Settings
from proxy.models import Scope
from proxy.services.fusion import blend, lift_common
from proxy.services.query_terms import without_words
from proxy.services.retrieval import SearchOptions

TOPICS = [
    "went hiking up a steep trail and saw snow at the top",
    "adopted a puppy from the shelter",
    "started a pottery class on Tuesdays",
    "ran a charity race for a mental health charity",
    "is reading a novel about a circus",
    "planted tomatoes in the backyard",
    "got a new job at the city hospital",
    "went camping by the lake with the kids",
    "bought a second-hand violin",
    "visited a museum with fossils",
    "baked sourdough bread on Sunday",
    "took a yoga class to help with back pain",
]


def _conversation() -> dict[str, Any]:
    """Two speakers who both talk about every topic: only the name says whose fact is whose."""
    facts = []
    for i, topic in enumerate(TOPICS):
        for who in ("Caroline", "Melanie"):
            value = f"{who}: On {i + 3} May 2023, {who} {topic}"
            facts.append({"id": f"{who}_{i}", "key": f"obs_{len(facts) + 1}", "value": value})
    return {"users": [{"user": "conv", "facts": facts}], "questions": []}


def test_blend_weighs_the_query_as_is_against_the_query_without_common_words() -> None:
    a, b = np.array([1.0, 0.0], dtype=np.float32), np.array([0.0, 1.0], dtype=np.float32)
    assert np.allclose(blend([a, b], 1.0), a) and np.allclose(blend([a, b], 0.0), b)
    assert np.allclose(blend([a, b], 0.5), np.array([1, 1]) / np.sqrt(2))
    mixed = blend([a, b], 0.3)
    assert np.isclose(np.linalg.norm(mixed), 1.0) and mixed[1] > mixed[0]


def test_lift_common_closes_part_of_the_gap_for_facts_holding_the_common_words() -> None:
    texts = {"a": "obs 1: Caroline: went hiking", "b": "obs 2: Melanie: went hiking",
             "c": "obs 3: Caroline told Melanie about hiking"}  # fmt: skip
    read = lambda ids: {i: texts[i] for i in ids}  # noqa: E731
    got = dict(lift_common([("b", 0.6), ("a", 0.5), ("c", 0.4)], read, {"caroline"}, 0.2))
    assert got["b"] == 0.6  # holds no common word of the query: unchanged
    assert got["a"] == pytest.approx(0.5 + 0.2 * 0.5) and got["c"] == pytest.approx(0.4 + 0.2 * 0.6)
    # two common words in the query: a fact holding one of them gets half the lift
    both = dict(lift_common([("a", 0.5), ("c", 0.5)], read, {"caroline", "melanie"}, 0.2))
    assert both["a"] == pytest.approx(0.55) and both["c"] == pytest.approx(0.6)
    ranked = lift_common([("b", 0.6), ("a", 0.5)], read, {"caroline"}, 0.5)
    assert [i for i, _ in ranked] == ["a", "b"]
    assert lift_common([("b", 0.6), ("a", 0.5)], read, {"caroline"}, 0.0) == [
        ("b", 0.6),
        ("a", 0.5),
    ]


def test_lift_common_reads_only_the_candidates_that_could_reach_the_results() -> None:
    asked: list[list[str]] = []

    def read(ids: Any) -> dict[str, str]:
        asked.append(list(ids))
        return {i: "Caroline" for i in ids}

    candidates = [("a", 0.9), ("b", 0.8), ("c", 0.5), ("d", 0.1)]
    got = lift_common(candidates, read, {"caroline"}, 0.2, need=2)
    # c could reach 0.6 at most, under the second best (0.8): neither c nor d is read
    assert asked == [["a", "b"]]
    assert [i for i, _ in got] == ["a", "b", "c", "d"]
    assert dict(got)["c"] == 0.5 and dict(got)["b"] == pytest.approx(0.84)


def test_the_name_in_the_question_picks_the_speakers_fact() -> None:
    """Both speakers went hiking: with the name left out of the query embedding and no lift
    (the defaults before issue 19), nothing tells their facts apart; the lift, and the
    defaults' blend (the name kept at 0.2 in the query vector), put the named speaker's fact
    first most of the time; with the lift a fact sharing no word with the question still
    scores its cosine."""
    scope = Scope("eval", "conv")
    opts = SearchOptions(top_k=5, threshold=-1.0)
    with loaded(_conversation()) as stack:
        before = stack.retriever(RetrievalSettings(**BEFORE))
        lift = stack.retriever(RetrievalSettings(**(BEFORE | {"common_boost": 0.075})))
        now = stack.retriever(Settings().retrieval)
        right = {"lift": 0, "defaults": 0}
        for i, topic in enumerate(TOPICS):
            asked = {who: f"When did {who} say she {topic}?" for who in ("Melanie", "Caroline")}
            for who, question in asked.items():
                right["lift"] += lift.search(scope, question, opts)[0].fact.id == f"{who}_{i}"
                right["defaults"] += now.search(scope, question, opts)[0].fact.id == f"{who}_{i}"
            # before issue 19 ("drop", no lift) the name was invisible: both questions got the
            # same ranking, so one of the two was answered with the other speaker's fact
            same = [[h.fact.id for h in before.search(scope, q, opts)] for q in asked.values()]
            assert same[0] == same[1]
        # before: one of each pair, 12 of 24
        assert right["lift"] >= 1.4 * len(TOPICS) and right["defaults"] >= 1.4 * len(TOPICS)
        question = "Which instrument does Melanie play?"
        hits = lift.search(scope, question, SearchOptions(top_k=24, threshold=-1.0))
        vector = lift.embed_query(scope, without_words(question, {"melanie"}))  # "drop"
        stored = stack.index.vectors(scope, [h.fact.id for h in hits])
        caroline = [h for h in hits if h.fact.value.startswith("Caroline: ")]
        assert caroline
        for hit in caroline:  # no word of the question: its cosine, exactly
            assert hit.score == pytest.approx(float(np.dot(stored[hit.fact.id], vector)), abs=1e-5)


def test_defaults_beat_cosine_and_the_old_defaults_on_a_dialogue_subset() -> None:
    data = load_set(DIALOGUE, users=2)
    assert len(data["questions"]) >= 150
    opts = options_for("dialogue")
    with loaded(data) as stack:
        cosine = evaluate(stack.retriever(None), data["questions"], opts)["all"]
        before = evaluate(stack.retriever(RetrievalSettings(**BEFORE)), data["questions"], opts)
        now = evaluate(stack.retriever(Settings().retrieval), data["questions"], opts)["all"]
    assert now["recall@10"] >= 1.08 * cosine["recall@10"], (cosine, now)
    assert now["recall@10"] > before["all"]["recall@10"], (before["all"], now)
    assert now["mrr"] > cosine["mrr"], (cosine, now)
