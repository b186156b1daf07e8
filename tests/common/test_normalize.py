from __future__ import annotations

import numpy as np
import pytest

from common.demos import Stats
from common.normalize import normalize, unnormalize


@pytest.mark.parametrize("mode", ["quantile", "minmax"])
def test_normalize_maps_bounds_to_unit_range_and_back(mode: str) -> None:
    values = np.random.default_rng(0).uniform(-3, 5, (500, 3)).astype(np.float32)
    values[:, 2] = 1.5  # a constant dimension
    stats = Stats.of(values)
    scaled = normalize(values, stats, mode)
    assert scaled.dtype == np.float32 and scaled.min() >= -1 and scaled.max() <= 1
    assert np.all(scaled[:, 2] == 0)  # constant dimensions map to 0, not to a division by zero
    inside = np.all(np.abs(scaled[:, :2]) < 1, axis=1)
    np.testing.assert_allclose(unnormalize(scaled, stats, mode)[inside, :2], values[inside, :2], atol=1e-4)
    with pytest.raises(ValueError, match="unknown normalization mode"):
        normalize(values, stats, "zscore")
