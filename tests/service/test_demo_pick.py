"""``neurolabel demo`` picks its neurons from their activations alone: the most selective units by
peak z-score, recomputed here from an independent recording's statistics."""

from __future__ import annotations

from neurolabel.activations.models import load_target
from neurolabel.activations.record import record_activations
from neurolabel.service.cli_label import pick_demo_units


def test_demo_picks_the_units_whose_peak_stands_furthest_above_their_usual_activation():
    picked = pick_demo_units(layer=10, candidates=12, n=3, max_tokens=512)
    assert len(picked) == 3 and len({u for u, _ in picked}) == 3
    assert all(0 <= u < 12 for u, _ in picked)
    recording = record_activations(load_target("default"), "default", layers=[10], units=list(range(12)),
                                   max_tokens=512, top_k=1, n_random=0, window_tokens=64, progress=False)
    z = {r.neuron.index: (r.stats.max - r.stats.mean) / r.stats.std for r in recording.records()}
    expected = sorted(z, key=lambda u: (-z[u], u))[:3]
    assert [u for u, _ in picked] == expected
    for u, value in picked:
        assert abs(value - z[u]) < 1e-9
    assert picked[0][1] >= picked[1][1] >= picked[2][1]
