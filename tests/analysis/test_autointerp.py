"""Auto-interpretation scored by detection, on hand-made banks with a known answer: a component whose
top tokens repeat is explained and detected (balanced accuracy 1), one with random tokens is not (0.5)."""

from __future__ import annotations

import random
import re

import pytest

from darkmatter.analysis.autointerp import (
    NULL_CHANCE,
    NULL_OTHER,
    ComponentExamples,
    Context,
    LLMInterpreter,
    TokenBaseline,
    detection_prompt,
    explain_prompt,
    explained_tokens,
    interpret_components,
    marked_token,
    parse_detection,
    parse_explanation,
    score_detection,
    split_examples,
)


def example(token: str, activation: float, unit: int, rng: random.Random, quantile: float | None = None) -> Context:
    """A text example: three filler tokens either side of the marked one, values at each token."""
    left = [f" w{rng.randrange(500)}" for _ in range(3)]
    right = [f" w{rng.randrange(500)}" for _ in range(3)]
    values = [round(rng.uniform(-0.5, 0.5), 3) for _ in range(7)]
    values[3], values[4] = activation, 0.6 * activation  # the token after is high too
    return Context(context="".join(left) + f"[[{token}]]" + "".join(right), activation=activation, token=token,
                   unit=unit, quantile=quantile, tokens=tuple(left + [token] + right), values=tuple(values), at=3)


def component(c: int, top_tokens: list[str], seed: int, candidate: bool = False) -> ComponentExamples:
    rng = random.Random(seed)
    top = tuple(example(t, 8.0 - 0.2 * r, 100 * c + r, rng) for r, t in enumerate(top_tokens))
    qs = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
    quantiles = tuple(example(f" q{c}_{i}", -1.5 + 0.5 * i, 1000 + 10 * c + i, rng, q) for i, q in enumerate(qs))
    return ComponentExamples(component=c, top=top, quantiles=quantiles, candidate=candidate)


def bank() -> list[ComponentExamples]:
    """0: ' server' (' host' at ranks 3, 8, 13, 18); 1: a different token at every rank; 2: '('."""
    return [component(0, [" host" if r % 5 == 3 else " server" for r in range(20)], 1, candidate=True),
            component(1, [f" r{r}" for r in range(20)], 2),
            component(2, ["("] * 20, 3, candidate=True)]


def test_token_baseline_detects_a_repeated_token_and_not_a_random_one():
    found = interpret_components(bank(), TokenBaseline())
    assert [f.component for f in found] == [0, 1, 2] and not any(f.skipped for f in found)
    server, rand, paren = found
    assert server.explanation == "fires on: ' server', ' host'" and server.n_explain == 10
    assert server.detection is not None and server.detection.balanced_accuracy == pytest.approx(1.0)
    assert paren.detection is not None and paren.detection.balanced_accuracy == pytest.approx(1.0)
    assert rand.detection is not None and rand.detection.balanced_accuracy == pytest.approx(0.5, abs=0.1)
    assert rand.detection.recall == 0.0 and rand.detection.precision is None  # nothing called activating
    d = server.detection
    assert (d.n_activating, d.n_non_activating, d.true_positives, d.true_negatives, d.unanswered) == (10, 10, 10, 10, 0)
    # the null: the same judge given the next component's explanation on the same contexts
    assert (server.null_kind, server.null_component) == (NULL_OTHER, 1)
    assert server.null_balanced_accuracy == pytest.approx(0.5, abs=0.1)
    assert paren.null_component == 0  # cyclic


def test_one_component_gets_the_chance_null_and_short_ones_are_skipped():
    b = bank()
    short = ComponentExamples(component=7, top=b[0].top[:1], quantiles=b[0].quantiles)
    found = interpret_components([b[0], short], TokenBaseline())
    assert found[0].null_kind == NULL_CHANCE and found[0].null_balanced_accuracy == 0.5
    assert found[0].null_detection is None and found[0].null_component is None
    assert found[1].detection is None and "needs 2" in found[1].skipped
    assert [f.component for f in interpret_components(b, TokenBaseline(), selected=[2])] == [2]


def test_split_shows_even_ranks_holds_out_odd_and_matches_non_activating():
    b = bank()
    s = split_examples(b, 0, seed=0, exclude=(1,))
    assert s.explain == b[0].top[0::2] and s.activating == b[0].top[1::2]
    assert len(s.non_activating) == len(s.activating) == 10
    low = [q for q in b[0].quantiles if q.quantile <= 0.5]
    assert list(s.non_activating[:4]) == low  # low quantile samples first
    own = {e.context for e in b[0].top}
    rest = s.non_activating[4:]
    assert all(e.context not in own for e in s.non_activating)
    assert all(e in b[2].top for e in rest)  # component 1 excluded
    assert split_examples(b, 0, seed=0, exclude=(1,)) == s  # deterministic
    assert split_examples(b, 0, seed=1, exclude=(1,)).non_activating != s.non_activating  # seeded


def test_score_detection_counts_rates_and_shuffles():
    b = bank()
    act, non = b[0].top[1::2], b[2].top[:10]
    seen: list[list[str]] = []

    def always(explanation, contexts):
        seen.append(list(contexts))
        return [True] * len(contexts)

    s = score_detection("anything", act, non, always, batch_size=8)
    assert [len(x) for x in seen] == [8, 8, 4]
    assert (s.recall, s.specificity, s.precision, s.balanced_accuracy) == (1.0, 0.0, 0.5, 0.5)
    labels = [c in {e.context for e in act} for c in seen[0] + seen[1] + seen[2]]
    assert labels != sorted(labels, reverse=True)  # activating ones are not all shown first
    half = score_detection("x", act, non, lambda e, cs: [None] * len(cs))
    assert half.unanswered == 20 and half.balanced_accuracy is None and half.accuracy is None
    with pytest.raises(ValueError, match="answers for"):
        score_detection("x", act, non, lambda e, cs: [True])


def test_planted_label_contexts():
    assert marked_token("f17*:1.52 f3:0.80") == "f17*" and marked_token("a[[ b]]c") == " b"
    rng = random.Random(0)
    tops = tuple(Context(context=f"f17*:{2 + rng.random():.2f} f{rng.randrange(9)}:1.00", activation=9 - r * 0.1,
                         token="f17*", unit=r) for r in range(12))
    noise = tuple(Context(context=f"f{rng.randrange(100, 200)}:0.9", activation=0.0, quantile=q, unit=50 + i)
                  for i, q in enumerate((0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)))
    others = tuple(Context(context=f"f5:{1 + r * 0.1:.2f}", activation=5.0, unit=90 + r) for r in range(12))
    b = [ComponentExamples(0, tops, noise), ComponentExamples(1, others, noise)]
    found = interpret_components(b, TokenBaseline())
    assert found[0].explanation == "fires on: 'f17*'"
    assert found[0].detection is not None and found[0].detection.balanced_accuracy == 1.0


def test_explained_tokens_round_trip():
    text = TokenBaseline().explain(bank()[0].top[0::2])
    assert explained_tokens(text) == {" server", " host"}
    assert explained_tokens("tokens about networking") == frozenset()
    assert explained_tokens("fires on: ']], [[', 'it''s") == frozenset()  # malformed: nothing


def test_prompts_show_marked_tokens_values_and_ask_for_a_list():
    b = bank()
    p = explain_prompt(b[0].top[0::2])
    assert "Example 10:" in p and "[[ server]]" in p and "activation 8.00" in p and "also high:" in p
    assert "Explanation:" in p
    d = detection_prompt("the word server", ["a[[ b]]c", "d[[e]]"])
    assert "Explanation: the word server" in d and "Excerpt 2: d[[e]]" in d and "list of 2 numbers" in d


def test_parsers():
    assert parse_detection("Sure.\n[1, 0, 1]", 3) == [True, False, True]
    assert parse_detection("first [2] then [true, false]", 2) == [True, False]
    assert parse_detection("I cannot tell", 2) == [None, None]
    assert parse_detection("[1, 0]", 3) == [None, None, None]
    assert parse_explanation("Thinking...\nExplanation:  the token  ' server'\n") == "the token ' server'"
    assert parse_explanation("\n  network hosts \n more") == "network hosts"


def fake_llm(prompt: str) -> str:
    """A stand-in for an LLM that reads the prompts: it explains by the commonest marked token and
    judges an excerpt active when its marked token is quoted in the explanation."""
    if prompt.rstrip().endswith("[1, 0, 0, 1]."):
        explanation = re.search(r"Explanation: (.*)", prompt).group(1)
        excerpts = re.findall(r"^Excerpt \d+: (.*)$", prompt, flags=re.MULTILINE)
        return "[" + ", ".join("1" if repr(marked_token(e)) in explanation else "0" for e in excerpts) + "]"
    tokens = re.findall(r"\[\[(.*?)\]\]", prompt)[1:]  # the first is the instructions' example
    best = max(set(tokens), key=tokens.count)
    return f"Explanation: fires on the token {best!r}"


def test_llm_interpreter_runs_the_same_scoring_through_prompts():
    found = interpret_components(bank(), LLMInterpreter(complete=fake_llm, name="fake"))
    assert found[0].explanation == "fires on the token ' server'"
    assert found[0].detection.balanced_accuracy == pytest.approx(0.9)  # misses the two held-out ' host'
    assert found[2].detection.balanced_accuracy == 1.0
    assert found[1].detection.balanced_accuracy == pytest.approx(0.5, abs=0.1)
