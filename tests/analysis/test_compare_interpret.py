"""Decoder matching, streamed extremes, contexts and the logit lens against brute force."""

import numpy as np

from darkmatter.analysis import compare, directions, interpret


def test_decoder_match_equals_brute_force_over_chunks():
    rng = np.random.default_rng(0)
    W_dec = rng.standard_normal((1000, 16)) * rng.uniform(0.5, 2, size=(1000, 1))
    dirs = rng.standard_normal((7, 16))
    dirs[3] = -W_dec[421]  # an exact (anti-)match
    m = compare.decoder_match(dirs, W_dec, n_top=3, chunk_size=97)
    cos = compare.unit_rows(dirs) @ compare.unit_rows(W_dec).T
    np.testing.assert_allclose(m.max_abs_cos, np.abs(cos).max(1))
    np.testing.assert_array_equal(m.best_feature, np.abs(cos).argmax(1))
    assert m.best_feature[3] == 421 and m.top_cos[3, 0] < -0.999
    best = np.abs(cos).max(1)
    s = m.summary()
    assert (s.above_high, s.between, s.below_low) == (int((best > 0.8).sum()),
                                                      int(((best >= 0.3) & (best <= 0.8)).sum()),
                                                      int((best < 0.3).sum()))
    assert s.mean_max_abs_cos == best.mean()


def test_random_directions_are_unit_and_seeded():
    a = directions.random_unit(5, 32, seed=42)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0)
    np.testing.assert_array_equal(a, directions.random_unit(5, 32, seed=42))


def test_extreme_rows_stream_matches_argsort():
    rng = np.random.default_rng(1)
    s = rng.standard_normal((10_000, 4))
    top, bottom = interpret.extreme_rows(s, 15, chunk_size=999)
    for j in range(4):
        np.testing.assert_array_equal(top[j], np.argsort(-s[:, j])[:15])
        np.testing.assert_array_equal(bottom[j], np.argsort(s[:, j])[:15])


def test_context_marks_the_token_and_drops_bos():
    tokens = np.array([[0, 10, 11, 12, 13, 14]])
    text = interpret.context(tokens, 0, 3, 2, lambda t: f"<{t}>", bos_id=0)
    assert text == "<10><11>[[<12>]]<13><14>"
    assert interpret.context(tokens, 0, 1, 5, lambda t: f"<{t}>", bos_id=0).startswith("[[<10>]]")


def test_quantile_rows_and_logit_lens():
    values = np.arange(101, dtype=float)
    rows = np.arange(1000, 1101)
    picked = interpret.quantile_rows(values, rows, (0.1, 0.5))
    assert picked == [(0.1, 1010, 10.0), (0.5, 1050, 50.0)]
    W_U = np.eye(4)
    up, down = interpret.logit_lens(np.array([0.1, 0.9, -0.5, 0.0]), W_U, str, n=1)
    assert up == [("1", 0.9)] and down == [("2", -0.5)]
    assert interpret.frequent_tokens(np.array([5, 5, 7]), str, n=1) == [("5", 2)]
