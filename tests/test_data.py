import numpy as np
import torch
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
    with pytest.raises(PipelineError, match=r"'.*nope' is neither a built-in source \(digits, digits-hard\) nor a folder"):
        load_data(str(tmp_path / "nope"), 16, 3)


def test_unreadable_image_is_named(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(6):
            (tmp_path / c / f"{i}.png").write_bytes(b"not a png")
    s = load_data(str(tmp_path), 16, 3)
    with pytest.raises(PipelineError, match=r"cannot read image .*\.png"):
        s.w[0]


def test_digits_hard_is_fixed_disjoint_by_digit_and_the_seed_moves_only_w_and_theta():
    from pipeline.training.data import HARD_TEST_COPIES, HARD_TRAIN_COPIES

    a, b, again = (load_data("digits-hard", 32, 1, seed=s) for s in (0, 1, 0))
    assert len(a.test) == 360 * HARD_TEST_COPIES and len(a.w) + len(a.theta) == 1437 * HARD_TRAIN_COPIES
    assert a.classes == tuple(str(c) for c in range(10)) and a.source == "digits-hard"
    # the copies of one digit stay on one side: W and Θ never share a source digit
    w_digits = {i // HARD_TRAIN_COPIES for i in a.w.indices}
    assert not w_digits & {i // HARD_TRAIN_COPIES for i in a.theta.indices}
    for split in (a.w, a.theta, a.test):
        assert len(set(split.dataset.labels[split.indices].tolist())) == 10
    x, _ = a.test[7]
    assert x.shape == (1, 32, 32) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    # the same images in every run; a seed changes which digits train W and which Θ, not the test set
    assert all(torch.equal(a.test[i][0], b.test[i][0]) and torch.equal(a.test[i][0], again.test[i][0])
               for i in range(0, 3600, 97))
    assert torch.equal(a.w[5][0], again.w[5][0]) and a.w.indices != b.w.indices
    # a copy is not its source digit upscaled: every copy of a digit differs
    assert not torch.equal(a.test[0][0], a.test[1][0])
    assert load_data("digits-hard", 48, 3).test[0][0].shape == (3, 48, 48)


def test_unknown_data_source_names_the_built_in_ones(tmp_path):
    from pipeline.training.data import data_labels

    assert data_labels("digits-hard") == tuple(str(c) for c in range(10))
    with pytest.raises(PipelineError, match="built-in source \\(digits, digits-hard\\)"):
        data_labels(str(tmp_path / "no-such"))
