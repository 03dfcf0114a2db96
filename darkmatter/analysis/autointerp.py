"""Auto-interpretation of components, scored by detection (pure: splits, prompts, parsing, scores).

Each component's top-activating examples are split by rank: even ranks (0, 2, 4, …) are shown to an
explainer, odd ranks are held out. A judge then reads the explanation and a shuffled mix of the
held-out activating contexts and as many non-activating ones, and says which it thinks activate;
the score is how well it tells them apart. The method follows Bills et al. 2023 ("Language models
can explain neurons in language models", OpenAI) for explaining from top-activating examples, and
the detection score of EleutherAI's delphi / sae-auto-interp (Paulo et al. 2024, "Automatically
interpreting millions of features in large language models"). One deviation: our contexts keep the
``[[marked]]`` token, and the judge is asked about that token (delphi's detection shows no marker),
because our non-activating examples are defined per token (a low quantile sample), not per window.

The explainer and the judge are pluggable (:class:`Interpreter`): :class:`LLMInterpreter` wraps any
``complete(prompt) -> str`` function (``darkmatter.sources.llm`` supplies them), and
:class:`TokenBaseline` is a deterministic, non-LLM baseline that runs the same scoring code.
"""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

#: Quantile samples at or below this quantile count as non-activating.
LOW_QUANTILE = 0.5
#: What the null of :func:`interpret_components` is, in words (written to the output).
NULL_OTHER = "other_explanation"
NULL_CHANCE = "chance"
NULL_WORDS = {NULL_OTHER: "the same judge given another component's explanation on the same contexts",
              NULL_CHANCE: "chance (balanced accuracy 0.5)"}
_MARK = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)
_BASELINE_PREFIX = "fires on: "


@dataclass(frozen=True)
class Context:
    """One example of a component, as the feature bank holds it.

    Attributes:
        context: text with the active token marked ``[[like this]]``; on planted runs a label list
            such as ``"f17*:1.52 f3:0.80"`` (active true features, largest first, no marker).
        activation: the component's source value at the marked token (unit variance).
        token: the marked token (planted: the largest feature's label).
        unit: its document (or window) id; quantile: for quantile samples, the quantile it stands for.
        tokens, values: the context token by token and the source's value at each (None where not
            analysed, or the whole field None on planted runs); at: the marked token's index.
    """

    context: str
    activation: float
    token: str = ""
    unit: int | None = None
    quantile: float | None = None
    tokens: tuple[str, ...] | None = None
    values: tuple[float | None, ...] | None = None
    at: int | None = None


@dataclass(frozen=True)
class ComponentExamples:
    """The examples of one component the split draws on.

    Attributes:
        component: its index; candidate: the candidate rule's verdict.
        top: top-activating examples, best first, at most one per document.
        quantiles: one example per quantile of its source (0.01 … 0.99).
    """

    component: int
    top: tuple[Context, ...]
    quantiles: tuple[Context, ...] = ()
    candidate: bool = False


@dataclass(frozen=True)
class Split:
    """One component's examples for explaining and scoring.

    Attributes:
        explain: shown to the explainer (top examples of even rank).
        activating: held-out activating contexts (top examples of odd rank).
        non_activating: its quantile samples at q ≤ 0.5, then other components' top examples
            (seeded order), as many as ``activating`` where enough exist.
    """

    explain: tuple[Context, ...]
    activating: tuple[Context, ...]
    non_activating: tuple[Context, ...]


@dataclass(frozen=True)
class DetectionScore:
    """How well a judge told held-out activating contexts from non-activating ones.

    Attributes:
        accuracy: share of answered contexts judged right.
        balanced_accuracy: (recall + specificity) / 2; 0.5 is chance whatever the mix, 1 perfect
            (None unless both kinds were answered).
        precision: TP / (TP + FP) (None when the judge called nothing activating).
        recall: TP / answered activating; specificity: TN / answered non-activating (None without any).
        n_activating, n_non_activating: contexts shown of each kind.
        true_positives, false_positives, true_negatives, false_negatives: answered counts.
        unanswered: contexts the judge gave no answer for (left out of every rate).
    """

    accuracy: float | None
    balanced_accuracy: float | None
    precision: float | None
    recall: float | None
    specificity: float | None
    n_activating: int
    n_non_activating: int
    true_positives: int
    false_positives: int
    true_negatives: int
    false_negatives: int
    unanswered: int


@dataclass(frozen=True)
class Interpretation:
    """One component's explanation and its detection score against a null.

    Attributes:
        component, candidate: which component, and the candidate rule's verdict.
        explanation: the explainer's one line ("" when skipped); n_explain: examples it saw.
        detection: its score (None when skipped).
        null_kind: ``"other_explanation"`` (the same judge given ``null_component``'s explanation on
            the same contexts) or ``"chance"`` (0.5, when no other component was explained).
        null_balanced_accuracy: the null's balanced accuracy; null_detection: its full score.
        skipped: why it was not scored ("" when it was).
    """

    component: int
    candidate: bool
    explanation: str
    n_explain: int
    detection: DetectionScore | None
    null_kind: str
    null_component: int | None
    null_balanced_accuracy: float | None
    null_detection: DetectionScore | None
    skipped: str = ""


#: ``judge(explanation, contexts)``: per context, True if judged activating (None: no answer).
Judge = Callable[[str, Sequence[str]], Sequence[bool | None]]


class Interpreter(Protocol):
    """An explainer and a judge: what :func:`interpret_components` needs."""

    @property
    def name(self) -> str: ...

    @property
    def is_llm(self) -> bool: ...

    def explain(self, examples: Sequence[Context]) -> str: ...

    def judge(self, explanation: str, contexts: Sequence[str]) -> Sequence[bool | None]: ...


def marked_token(context: str) -> str:
    """The token marked ``[[like this]]`` in ``context``; without a marker (planted label lists
    ``"f17*:1.52 f3:0.80"``) the first label's name (``"f17*"``)."""
    m = _MARK.search(context)
    if m:
        return m.group(1)
    words = context.split()
    return words[0].split(":")[0] if words else ""


def split_examples(bank: Sequence[ComponentExamples], index: int, seed: int = 0,
                   exclude: Collection[int] = ()) -> Split:
    """Split ``bank[index]``'s examples into explanation, held-out activating and non-activating.

    Non-activating: its quantile samples at q ≤ 0.5 first, then other components' top examples
    (not those of components in ``exclude``, nor any with a context among this component's top
    examples) in an order seeded by ``seed`` and the component, up to as many as the activating ones.
    """
    entry = bank[index]
    explain, activating = entry.top[0::2], entry.top[1::2]
    n = len(activating)
    low = [q for q in entry.quantiles if q.quantile is not None and q.quantile <= LOW_QUANTILE]
    own = {e.context for e in entry.top}
    others = [e for other in bank if other.component != entry.component and other.component not in exclude
              for e in other.top if e.context not in own]
    random.Random(seed * 1_000_003 + entry.component).shuffle(others)
    return Split(tuple(explain), tuple(activating), tuple((low + others)[:n]))


def score_detection(explanation: str, activating: Sequence[Context], non_activating: Sequence[Context],
                    judge: Judge, seed: int = 0, batch_size: int = 10) -> DetectionScore:
    """Score ``explanation`` by detection: ``judge`` sees the contexts shuffled (seeded), in batches of
    ``batch_size``, and says which activate.

    Raises:
        ValueError: the judge returned a different number of answers than contexts it was given.
    """
    items = [(c.context, True) for c in activating] + [(c.context, False) for c in non_activating]
    random.Random(seed).shuffle(items)
    answers: list[bool | None] = []
    for start in range(0, len(items), batch_size):
        batch = [text for text, _ in items[start:start + batch_size]]
        got = list(judge(explanation, batch))
        if len(got) != len(batch):
            raise ValueError(f"the judge returned {len(got)} answers for {len(batch)} contexts")
        answers.extend(got)
    tp = sum(a is True and y for (_, y), a in zip(items, answers))
    fn = sum(a is False and y for (_, y), a in zip(items, answers))
    fp = sum(a is True and not y for (_, y), a in zip(items, answers))
    tn = sum(a is False and not y for (_, y), a in zip(items, answers))
    recall = tp / (tp + fn) if tp + fn else None
    specificity = tn / (tn + fp) if tn + fp else None
    return DetectionScore(
        accuracy=(tp + tn) / (tp + tn + fp + fn) if tp + tn + fp + fn else None,
        balanced_accuracy=(recall + specificity) / 2 if recall is not None and specificity is not None else None,
        precision=tp / (tp + fp) if tp + fp else None, recall=recall, specificity=specificity,
        n_activating=len(activating), n_non_activating=len(non_activating), true_positives=tp,
        false_positives=fp, true_negatives=tn, false_negatives=fn, unanswered=sum(a is None for a in answers))


def interpret_components(bank: Sequence[ComponentExamples], interpreter: Interpreter,
                         selected: Sequence[int] | None = None, seed: int = 0,
                         log: Callable[[str], None] | None = None) -> list[Interpretation]:
    """Explain and score the components at positions ``selected`` of ``bank`` (all when None).

    The null of each is the same judge given the next explained component's explanation (cyclic,
    in the order of ``selected``) on the same contexts; that component's top examples are kept out
    of its non-activating set. With one explained component the null is chance (0.5).
    A component needs two top examples (one to explain, one held out); others are skipped.
    """
    order = list(range(len(bank))) if selected is None else list(selected)
    explained = [i for i in order if len(bank[i].top) >= 2]
    explanations = {}
    for i in explained:
        explanations[i] = interpreter.explain(bank[i].top[0::2])
        if log:
            log(f"component {bank[i].component}: {explanations[i]}")
    out = []
    for i in order:
        entry = bank[i]
        if i not in explanations:
            out.append(Interpretation(entry.component, entry.candidate, "", 0, None, NULL_CHANCE, None, None,
                                      None, skipped=f"{len(entry.top)} top example(s); needs 2"))
            continue
        partner = explained[(explained.index(i) + 1) % len(explained)] if len(explained) > 1 else None
        split = split_examples(bank, i, seed, () if partner is None else (bank[partner].component,))
        score = score_detection(explanations[i], split.activating, split.non_activating, interpreter.judge, seed)
        null = None if partner is None else score_detection(explanations[partner], split.activating,
                                                            split.non_activating, interpreter.judge, seed)
        out.append(Interpretation(
            entry.component, entry.candidate, explanations[i], len(split.explain), score,
            NULL_CHANCE if null is None else NULL_OTHER, None if partner is None else bank[partner].component,
            0.5 if null is None else null.balanced_accuracy, null))
    return out


@dataclass(frozen=True)
class TokenBaseline:
    """A deterministic baseline explainer and judge: not an LLM.

    The explanation lists the most frequent marked tokens among the explanation examples
    (``"fires on: ' server', ' host'"``: up to ``n_tokens`` that occur at least twice, else the most
    frequent one); the judge calls a context activating when its marked token (:func:`marked_token`)
    is among the tokens an explanation in this format lists (none for any other text).
    """

    n_tokens: int = 3
    name: str = "token_baseline"
    is_llm: bool = False

    def explain(self, examples: Sequence[Context]) -> str:
        counts = Counter(marked_token(e.context) for e in examples).most_common()
        tokens = [t for t, c in counts[:self.n_tokens] if c >= 2] or [t for t, _ in counts[:1]]
        return _BASELINE_PREFIX + ", ".join(repr(t) for t in tokens)

    def judge(self, explanation: str, contexts: Sequence[str]) -> list[bool | None]:
        tokens = explained_tokens(explanation)
        return [marked_token(c) in tokens for c in contexts]


def explained_tokens(explanation: str) -> frozenset[str]:
    """The tokens a :class:`TokenBaseline` explanation lists (empty for any other text)."""
    if not explanation.startswith(_BASELINE_PREFIX):
        return frozenset()
    try:
        parsed = ast.literal_eval("(" + explanation[len(_BASELINE_PREFIX):] + ",)")
    except (ValueError, SyntaxError):
        return frozenset()
    return frozenset(t for t in parsed if isinstance(t, str))


def _shown(example: Context, n_values: int = 4) -> str:
    """One example for the explainer: its context, activation, and other high tokens in it."""
    text = f"{example.context}  (activation {example.activation:.2f}"
    if example.tokens is not None and example.values is not None:
        high = sorted(((v, t) for i, (t, v) in enumerate(zip(example.tokens, example.values))
                       if v is not None and i != example.at and v >= 0.5 * example.activation > 0), reverse=True)
        if high:
            text += "; also high: " + ", ".join(f"{t!r} {v:.2f}" for v, t in high[:n_values])
    return text + ")"


def explain_prompt(examples: Sequence[Context]) -> str:
    """The explainer's prompt: each example's context with the marked token, its value and other
    high tokens (Bills et al. 2023 show per-token activations; we show the largest few)."""
    lines = [f"Example {i}: {_shown(e)}" for i, e in enumerate(examples, 1)]
    return (
        "We are studying one direction in a language model's activations (an independent component of the "
        "part a sparse autoencoder fails to reconstruct). Below are the text excerpts where it is most active. "
        "In each, the token where it is active is marked [[like this]]; after it come the component's value "
        "there (unit variance: larger is more active) and other tokens of the excerpt where it is also high. "
        "Excerpts without a marker list labels describing the row, largest first.\n\n"
        + "\n".join(lines)
        + "\n\nWhat do the marked tokens have in common: the token itself, the words around it, or what comes "
        "next? Reply with one line, 'Explanation: ' followed by a concise explanation of at most 20 words, "
        "without quoting the examples.")


def detection_prompt(explanation: str, contexts: Sequence[str]) -> str:
    """The judge's prompt (delphi's detection, asked about the marked token): which of ``contexts``
    activate a component with this explanation, answered as a list of 1/0."""
    lines = [f"Excerpt {i}: {c}" for i, c in enumerate(contexts, 1)]
    return (
        "We are studying one direction in a language model's activations. An explanation of when it is "
        f"active:\n\nExplanation: {explanation}\n\n"
        f"Below are {len(contexts)} text excerpts, each with one token marked [[like this]] (excerpts without a "
        "marker are label lists: judge the first label). On some of them the direction is strongly active at "
        "the marked token, on the others it is not. Judge each from the explanation alone.\n\n"
        + "\n".join(lines)
        + f"\n\nReply with only a list of {len(contexts)} numbers in excerpt order, 1 where it is active and 0 "
        "where it is not, e.g. [1, 0, 0, 1].")


def parse_explanation(reply: str, max_chars: int = 300) -> str:
    """The explanation in an explainer's reply: the text after the last 'Explanation:', else its first
    non-empty line; one line of at most ``max_chars`` characters."""
    found = re.findall(r"explanation\s*:\s*(.+)", reply, flags=re.IGNORECASE)
    text = found[-1] if found else next((line for line in reply.splitlines() if line.strip()), "")
    return " ".join(text.split())[:max_chars]


def parse_detection(reply: str, n: int) -> list[bool | None]:
    """A judge's reply as n answers: the last bracketed list of n 0/1 values in it; n Nones if none."""
    for body in reversed(re.findall(r"\[([^\[\]]*)\]", reply)):
        items = [x.strip().strip("'\"").lower() for x in body.split(",") if x.strip()]
        if len(items) == n and all(x in ("0", "1", "true", "false") for x in items):
            return [x in ("1", "true") for x in items]
    return [None] * n


@dataclass(frozen=True)
class LLMInterpreter:
    """An LLM explainer and judge from one ``complete(prompt) -> reply`` function, through
    :func:`explain_prompt` / :func:`parse_explanation` and :func:`detection_prompt` /
    :func:`parse_detection` (an unparseable judge reply counts as unanswered).

    Attributes:
        complete: sends a prompt, returns the reply text; name: what the output calls it.
    """

    complete: Callable[[str], str]
    name: str
    is_llm: bool = True

    def explain(self, examples: Sequence[Context]) -> str:
        return parse_explanation(self.complete(explain_prompt(examples)))

    def judge(self, explanation: str, contexts: Sequence[str]) -> list[bool | None]:
        return parse_detection(self.complete(detection_prompt(explanation, contexts)), len(contexts))


def mean_balanced_accuracy(values: Sequence[float | None]) -> float | None:
    """The mean of the balanced accuracies that exist (None when none do)."""
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else None
