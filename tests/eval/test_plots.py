"""The reward-curve PNG is written and shows the recorded data."""

import matplotlib.image
import numpy as np
import pytest

from rar_jax.eval.plots import plot_reward_curve


def test_reward_curve_png(tmp_path):
    records = [{"step": s, "reward/mean": 0.1 * s, "reward/std": 0.05} for s in range(5)]
    records.append({"step": 4, "eval/reward_mean": 0.5})
    path = tmp_path / "reward.png"
    plot_reward_curve(records, path)
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (400, 600)
    assert np.unique(image.reshape(-1, image.shape[-1]), axis=0).shape[0] > 10  # Not blank.


def test_nothing_to_plot_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no reward/mean or eval/reward_mean values"):
        plot_reward_curve([{"step": 0, "reward/mean": float("nan")}], tmp_path / "x.png")
