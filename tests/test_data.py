import numpy as np
import pytest
from PIL import Image

from pipeline.training.data import load_data
from core.errors import PipelineError


def test_digits_splits_are_disjoint_stratified_and_sized():
    s = load_data("digits", 16, 1, seed=0)
    idx = [set(d.indices) for d in (s.w, s.theta, s.test)]
    assert not (idx[0] & idx[1]) and not (idx[0] & idx[2]) and not (idx[1] & idx[2])
    assert sum(map(len, idx)) == 1797 and s.num_classes == 10
    assert len(s.test) == pytest.approx(0.2 * 1797, abs=2) and len(s.theta) == pytest.approx(0.2 * 0.8 * 1797, abs=2)
    labels = s.w.dataset.labels.numpy()
    for split in (s.w, s.theta, s.test):
        assert len(set(labels[split.indices])) == 10  # every class in every split
    x, y = s.w[0]
    assert x.shape == (1, 16, 16) and -1.01 <= float(x.min()) and float(x.max()) <= 1.01


def test_digits_to_three_channels_at_any_resolution():
    x, _ = load_data("digits", 40, 3).test[0]
    assert x.shape == (3, 40, 40)


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    s = load_data(str(tmp_path), 16, 3)
    assert s.classes == ("cat", "dog") and len(s.w) + len(s.theta) + len(s.test) == 16
    x, y = s.test[0]
    assert x.shape == (3, 16, 16) and int(y) in (0, 1)


def test_empty_or_missing_image_folder(tmp_path):
    with pytest.raises(PipelineError, match="0 class sub-folder"):
        load_data(str(tmp_path), 16, 3)
    with pytest.raises(PipelineError, match="does not exist"):
        load_data(str(tmp_path / "nope"), 16, 3)


def test_unreadable_image_is_named(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(6):
            (tmp_path / c / f"{i}.png").write_bytes(b"not a png")
    s = load_data(str(tmp_path), 16, 3)
    with pytest.raises(PipelineError, match=r"cannot read image .*\.png"):
        s.w[0]
