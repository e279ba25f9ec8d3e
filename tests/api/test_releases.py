"""Releases by name: the n-th build of a pipeline is `name vN`, in creation order, even when two builds
carry the same one-second `created` stamp; an unknown digest keeps its short digest."""

from __future__ import annotations

import os

from edgeship import artifact
from edgeship.fleet.rollout.releases import Catalog, format_counts
from tests.support.bundles import make_bundle


def test_versions_follow_creation_order_and_count_devices(tmp_path):
    first = make_bundle(tmp_path, "kws", seed=1)
    second = make_bundle(tmp_path, "kws", seed=2)   # same `created` stamp as the first (a fixed test time)
    other = make_bundle(tmp_path, "cam", seed=3)
    os.utime(first, ns=(1_000_000_000, 1_000_000_000))
    os.utime(second, ns=(2_000_000_000, 2_000_000_000))
    catalog = Catalog([second, other, first])
    d1, d2, d3 = (artifact.bundle_digest(p) for p in (first, second, other))
    assert (catalog.get(d1).name, catalog.get(d2).name, catalog.get(d3).name) == ("kws v1", "kws v2", "cam v1")
    assert catalog.label(d2) == f"kws v2 ({artifact.short(d2)})"
    unknown = "sha256:" + "ab" * 32
    assert catalog.get(unknown).name == artifact.short(unknown) and catalog.label(None) == "-"
    counts = catalog.counts([d2, d2, d1, None])
    assert [(r.name if r else None, n) for r, n in counts] == [("kws v2", 2), ("kws v1", 1), (None, 1)]
    assert format_counts(counts).startswith(f"kws v2 ({artifact.short(d2)}): 2 devices")
