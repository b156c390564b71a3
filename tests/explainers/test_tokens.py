"""The ``tokens`` explainer and the graded token simulator, on records built by hand."""

from __future__ import annotations

import numpy as np
import pytest

from neurolabel.core.errors import ExplanationError, ScoringError
from neurolabel.core.types import ActivationRecord, Explanation, NeuronId, NeuronRecord, TokenStat, TokenStats
from neurolabel.explainers.tokens import (
    TokenExplainer,
    TokenTierExplainer,
    characteristic_tokens,
    form_weights,
    kind_deltas,
    token_table,
    weight_tiers,
)
from neurolabel.scoring.token_simulator import TokenSimulator
from neurolabel.scoring.validate import simulate_and_score

VOCAB = [" the", " cat", " with", ")", " sat", " a", " dog", ","]
FIRES = {" with": 3.0, ")": 2.0}


def _window(rng, wid: int, split: str, kind: str, fires=FIRES) -> ActivationRecord:
    toks = tuple(str(t) for t in rng.choice(VOCAB, size=12))
    return ActivationRecord(tokens=toks, activations=tuple(fires.get(t, 0.0) for t in toks), window_id=wid,
                            split=split, kind=kind)  # type: ignore[arg-type]


def _record(fires=FIRES, **kw) -> NeuronRecord:
    rng = np.random.default_rng(0)
    wins = [_window(rng, i, "explain" if i % 2 else "score", "top" if i < 12 else "random", fires) for i in range(24)]
    return NeuronRecord(model="toy", neuron=NeuronId(2, 5), top=tuple(w for w in wins if w.kind == "top"),
                        random=tuple(w for w in wins if w.kind == "random"), **kw)


def test_lists_the_tokens_the_neuron_fires_on_with_their_weights():
    [e] = TokenExplainer(shrink=0).explain(_record())
    tokens = {t: w for t, w, _ in e.structured["tokens"]}
    assert [t for t, _, _ in e.structured["tokens"][:2]] == [" with", ")"]  # the most important first
    assert {t: tokens[t] for t in FIRES} == pytest.approx(FIRES)
    assert all(w == 0.0 for t, w in tokens.items() if t not in FIRES)  # the silent ones, at their mean
    assert e.structured["source"] == "windows"
    assert e.text.startswith("fires on “with” 3, “)” 2")  # highest weight first, readable
    scored = simulate_and_score(e, _record(), simulator=TokenSimulator())
    assert scored.score.score == pytest.approx(1.0)  # a token-identity neuron is predicted exactly


def test_graded_weights_predict_strength():
    sim = TokenSimulator()
    e = Explanation(model="toy", neuron=NeuronId(2, 5), explainer="tokens", explainer_version="1", text="x",
                    structured={"tokens": [[" with", 3.0, 5], [")", 2.0, 4]], "baseline": 0.25})
    got = sim.simulate(e, (" the", " with", ")", " With"))
    assert got.expected_activations == (0.25, 3.0, 2.0, 0.25)  # exact token strings, leading space included
    assert sim.applies(e)
    bare = Explanation(model="toy", neuron=NeuronId(2, 5), explainer="pmi", explainer_version="1", text="dogs")
    assert not sim.applies(bare)
    with pytest.raises(ScoringError, match="no token list"):
        sim.simulate(bare, ("a",))


def test_token_statistics_of_the_whole_split_win_over_the_kept_windows():
    # the kept windows say " dog" fires weakly once; the whole explain split says it fires at 1.5 on average
    stats = TokenStats(count=5000, mean=0.05, tokens=(TokenStat(" with", 300, 3.0), TokenStat(" dog", 80, 1.5),
                                                      TokenStat(")", 200, 2.0)))
    rec = _record(token_stats=stats)
    table, overall, source = token_table(rec)
    assert source == "token_stats" and overall == 0.05 and table[" dog"] == (80, 1.5)
    [e] = TokenExplainer(shrink=0, backoff=False).explain(rec)
    tokens = {t: w for t, w, _ in e.structured["tokens"]}
    assert tokens[" with"] == 3.0 and tokens[")"] == 2.0
    # baseline: the mean of every other explain-split token of the corpus
    listed = sum(c for _, _, c in e.structured["tokens"])
    listed_sum = sum(w * c for _, w, c in e.structured["tokens"])
    assert e.structured["baseline"] == pytest.approx((0.05 * 5000 - listed_sum) / (5000 - listed))


def test_at_most_max_tokens_entries():
    fires = {t: float(i + 1) for i, t in enumerate(VOCAB)}
    [e] = TokenExplainer(max_tokens=3).explain(_record(fires))
    assert len(e.structured["tokens"]) == 3


def test_a_neuron_that_never_changes_is_an_error():
    with pytest.raises(ExplanationError, match="the same on every explain-split token type"):
        TokenExplainer().explain(_record({}))
    with pytest.raises(ExplanationError, match="the same on every"):
        TokenTierExplainer().explain(_record({}))


def test_a_neuron_that_tokens_lower_is_listed_with_negative_weights():
    # SwiGLU units go negative: a unit silenced below its mean by two tokens is described by them
    lows = {" with": -3.0, ")": -2.0}
    [e] = TokenExplainer(shrink=0).explain(_record(lows))
    assert {t: w for t, w, _ in e.structured["tokens"] if t in lows} == pytest.approx(lows)
    assert "lower on “)” -2, “with” -3 (else" in e.text  # said apart from the tokens it fires on
    scored = simulate_and_score(e, _record(lows), simulator=TokenSimulator())
    assert scored.score.score == pytest.approx(1.0)


def test_weight_tiers_are_the_optimal_contiguous_partition():
    values = np.array([0.0, 0.1, 3.0, 3.2, 1.0, 1.1, 0.05])
    tiers = weight_tiers(values, np.ones(7), max_tiers=3)
    assert len(set(tiers.tolist())) == 3
    assert tiers[2] == tiers[3] and tiers[4] == tiers[5] and tiers[0] == tiers[1] == tiers[6]
    assert tiers[2] > tiers[4] > tiers[0]  # tier 0 is the lowest
    # as few tiers as describe the values: two distinct values need two, whatever the maximum
    assert len(set(weight_tiers(np.array([1.0, 1.0, 5.0]), np.ones(3), max_tiers=12).tolist())) == 2
    # counts weigh: a frequent token pulls its tier's centre
    assert weight_tiers(np.array([0.0]), np.array([3.0]), max_tiers=4).tolist() == [0]


def test_token_tiers_group_many_tokens_into_few_weights():
    fires = {t: float(i) for i, t in enumerate(VOCAB)}  # eight distinct weights
    e, backed = TokenTierExplainer(max_tiers=3).explain(_record(fires))
    assert backed.rank == 1 and backed.structured["tokens"] == e.structured["tokens"]  # the same tiers, backed off
    tiers = e.structured["tiers"]
    assert len(tiers) == 3 and [t["weight"] for t in tiers] == sorted((t["weight"] for t in tiers), reverse=True)
    listed = {t for tier in tiers for t in tier["tokens"]}
    assert listed == {t for t, _, _ in e.structured["tokens"]} and len(listed) >= 6
    assert e.text.startswith("fires by tier ") and "else" in e.text
    # each token carries its tier's weight: the count-weighted mean of its members' means
    weight = {t: w for t, w, _ in e.structured["tokens"]}
    for tier in tiers:
        assert {weight[t] for t in tier["tokens"]} == {tier["weight"]}
    scored = simulate_and_score(e, _record(fires), simulator=TokenSimulator())
    assert scored.score.score > 0.9  # three levels still predict an eight-level neuron closely
    [exact] = TokenTierExplainer(max_tiers=12, backoff=False).explain(_record(fires))
    assert simulate_and_score(exact, _record(fires), simulator=TokenSimulator()).score.score == pytest.approx(1.0)


def test_token_tiers_parameters_are_checked():
    with pytest.raises(ValueError, match="max_tiers"):
        TokenTierExplainer(max_tiers=0)


def test_shrinkage_pulls_rarely_seen_tokens_towards_the_mean():
    stats = TokenStats(count=1000, mean=0.0, tokens=(TokenStat(" with", 100, 2.0), TokenStat("ained", 1, 3.0)))
    rec = _record(token_stats=stats)
    raw, _, _ = characteristic_tokens(rec, 20)
    shrunk, _, _ = characteristic_tokens(rec, 20, shrink=2.0)
    assert [t for t, _, _ in raw] == ["ained", " with"] or raw[0][0] == " with"
    got = {t: w for t, w, _ in shrunk}
    assert got["ained"] == pytest.approx(1.0)  # (1 x 3.0 + 2 x 0.0) / 3: one occurrence says little
    assert got[" with"] == pytest.approx(200 / 102)
    assert [t for t, _, _ in shrunk][0] == " with"  # and it ranks below the frequent token


def test_simulator_backs_off_to_forms_then_kinds():
    sim = TokenSimulator()
    e = Explanation(model="toy", neuron=NeuronId(2, 5), explainer="tokens", explainer_version="2", text="x",
                    structured={"tokens": [[" with", 3.0, 5]], "baseline": 0.25, "forms": [["with", 2.5]],
                                "kinds": [["WordContinuationPiece", 1.0], ["Preposition", -0.5]]})
    got = sim.simulate(e, (" with", " With", "WITH", " eleph", "ants", " of", " cat"))
    # listed exactly; a variant by its form; a piece and a preposition by their kinds; else the baseline
    assert got.expected_activations == pytest.approx((3.0, 2.5, 2.5, 0.25, 1.25, -0.25, 0.25))
    with pytest.raises(ScoringError, match="malformed"):
        sim.simulate(Explanation(model="toy", neuron=NeuronId(2, 5), explainer="tokens", explainer_version="2",
                                 text="x", structured={"tokens": [[" with", 3.0, 5]], "kinds": [["x"]]}), ("a",))


def test_forms_only_where_the_neuron_treats_variants_alike():
    entries = [(" with", 3.0, 50), (" the", 1.0, 80), ("ained", 2.0, 3)]
    table = {" with": (50, 3.0), "With": (10, 2.9), " the": (80, 1.0), " The": (20, -1.0), "ained": (3, 2.0)}
    got = dict((f, w) for f, w in form_weights(entries, table))
    assert set(got) == {"with"}  # " the" and " The" differ; "ained" has one variant only: unknown
    assert got["with"] == pytest.approx((3.0 * 50 + 2.9 * 10) / 60)


def test_kind_deltas_learn_what_unlisted_word_pieces_do():
    # the neuron fires on every word-continuation piece; the label lists none of them
    vocab = [" the", " eleph", "ants", " cat", " gir", "affe", ",", " with"]
    rng = np.random.default_rng(1)
    wins = []
    for i in range(40):
        toks = tuple(str(t) for t in rng.choice(vocab, size=16))
        acts = tuple(2.0 if k == "WordContinuationPiece" else 0.0 for k in
                     [("WordContinuationPiece" if t in ("ants", "affe") and j > 0 and toks[j - 1].strip().isalpha()
                       else "") for j, t in enumerate(toks)])
        wins.append(ActivationRecord(tokens=toks, activations=acts, window_id=i, split="explain" if i % 2 else "score",
                                     kind="random"))
    rec = NeuronRecord(model="toy", neuron=NeuronId(2, 5), top=(), random=tuple(wins))
    kinds, offset = kind_deltas(rec, [(" the", 0.0, 10)], 0.0, forms=False, max_kinds=4, ridge=0.001)
    deltas = dict((k, d) for k, d in kinds)
    assert max(deltas, key=deltas.get) == "WordContinuationPiece" and deltas["WordContinuationPiece"] > 1.0
    assert deltas.get("WholeWord", 0.0) < deltas["WordContinuationPiece"] - 1.0 and np.isfinite(offset)


def test_kind_matrix_equals_a_row_by_row_build():
    """kind_matrix builds each distinct kind set's row once and gathers them: the same names and
    0/1 matrix as filling every row (empty rows, repeated sets, a single row, none)."""
    import random

    import numpy as np

    from neurolabel.explainers.tokens import kind_matrix

    rng = random.Random(0)
    kinds = ["Preposition", "WordInitialPiece", "ClosingBracket", "Capitalised", "Number"]
    for n in (0, 1, 7, 300):
        rows = [tuple(sorted(rng.sample(kinds, rng.randint(0, 3)))) for _ in range(n)]
        names = sorted({k for ks in rows for k in ks})
        ref = np.zeros((n, len(names)))
        for i, ks in enumerate(rows):
            for k in ks:
                ref[i, names.index(k)] = 1.0
        got_names, got = kind_matrix(rows)
        assert got_names == names
        assert got.shape == ref.shape and np.array_equal(got, ref)


def _fit_from_matrix(X, names, ys, max_kinds, ridge):
    """The back-off fit from the full kind matrix (``X'X`` of every row)."""
    import numpy as np

    n = len(ys)
    count = X.sum(0) if X.size else np.zeros(len(names))
    used = np.flatnonzero(count > 0)
    names, X, count = [names[j] for j in used], X[:, used], count[used]
    if n < 10 or not names:
        return [], 0.0
    y = np.asarray(ys, dtype=np.float64) - float(np.mean(ys))
    mean = count / n
    beta = np.linalg.solve(X.T @ X - n * np.outer(mean, mean) + ridge * n * np.eye(len(names)), X.T @ y)
    importance = count * beta ** 2
    keep = [j for j in np.argsort(-importance)[:max_kinds] if importance[j] > 0]
    offset = float(mean[keep] @ beta[keep]) if keep else 0.0
    return [[names[j], round(float(beta[j]), 6)] for j in sorted(keep, key=lambda j: -abs(beta[j]))], offset


def test_fit_from_distinct_rows_equals_the_fit_from_the_matrix():
    """fit_kind_rows counts and forms the Gram matrix from the distinct kind sets weighted by their
    counts: the same deltas and offset, to the last bit, as from every row (a subset of rows, kinds
    no kept row has, too few rows)."""
    import random

    import numpy as np

    from neurolabel.explainers.tokens import fit_kind_rows, kind_rows

    rng = random.Random(1)
    nrng = np.random.default_rng(1)
    kinds = ["Preposition", "WordInitialPiece", "ClosingBracket", "Capitalised", "Number", "Comma", "Article"]
    for n in (5, 12, 80, 1500):
        rows = [tuple(sorted(rng.sample(kinds, rng.randint(0, 3)))) for _ in range(n)]
        names, U, ids = kind_rows(rows)
        ys = nrng.normal(size=n) + np.array([2.0 * ("Comma" in ks) for ks in rows])
        for keep in (np.ones(n, dtype=bool), nrng.random(n) < 0.6):
            got = fit_kind_rows(U, ids[keep], names, ys[keep], max_kinds=4, ridge=0.01)
            assert got == _fit_from_matrix(U[ids][keep], names, ys[keep], 4, 0.01)
