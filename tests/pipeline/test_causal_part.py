"""Which components step 06 gives per-component causal tests."""

from types import SimpleNamespace

from darkmatter.pipeline.steps.causal_part import components_to_test


def _run(flags):
    """ICA and similarity stand-ins: (candidate, settled, stable, above_floor, kurtosis) per component."""
    ica = SimpleNamespace(k=len(flags), components=[
        SimpleNamespace(settled=s, stable=st, above_floor=a, source_excess_kurtosis=kt) for _, s, st, a, kt in flags])
    sim = SimpleNamespace(components=[SimpleNamespace(candidate=c) for c, *_ in flags])
    return ica, sim


def test_reproducible_components_and_candidates_are_tested_in_the_add_back_order_up_to_the_cap():
    ica, sim = _run([(False, True, True, False, 1.0),   # 0: reproducible
                     (False, False, True, False, 9.0),  # 1: unsettled
                     (True, False, False, False, 2.0),  # 2: a candidate
                     (False, True, True, True, 3.0),    # 3: reproducible, above the floor
                     (False, True, False, True, 5.0)])  # 4: unstable
    tested, rule, why = components_to_test(ica, sim, "reproducible", 32)
    assert tested == [2, 3, 0] and rule.startswith("3 components, the reproducible ones")
    assert set(why) == {1, 4} and "not a reproducible direction" in why[1]
    tested, rule, why = components_to_test(ica, sim, "reproducible", 2)
    assert tested == [2, 3] and "--causal-max-components" in why[0] and "first 2 of 3" in rule
    tested, _, why = components_to_test(ica, sim, "all", 2)
    assert tested == [2, 3, 1, 4, 0] and why == {}  # the rest by excess kurtosis
