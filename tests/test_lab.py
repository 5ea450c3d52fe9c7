"""explorer.analysis.lab: re-interpolating a rank learner without retraining."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from app_testdata import build

from explorer.analysis import lab
from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.methods.ordinalclip import interpolation_weights


@pytest.fixture(scope="module")
def model():
    return build("rank", interpolation="linear", num_base_ranks=3, seed=11)


def _stored(model) -> np.ndarray:
    return model.prototypes().matrix.numpy().astype(np.float64)


def test_same_scheme_and_b_reproduces_the_model(model):
    v = lab.recompute(model, "linear")
    assert v.num_base_ranks == 3 and not v.resampled and v.label == "linear B=3"
    np.testing.assert_allclose(v.prototypes, _stored(model), atol=1e-5)
    np.testing.assert_allclose(v.weights, interpolation_weights(21, 3, "linear").numpy(), atol=1e-7)
    np.testing.assert_allclose(v.positions, [0, 10, 20])


def test_other_scheme_matches_set_interpolation_on_a_copy(model):
    other = build("rank", interpolation="linear", num_base_ranks=3, seed=11)
    other.learner.set_interpolation("normal", 2.5)
    v = lab.recompute(model, "normal", bandwidth=2.5)
    np.testing.assert_allclose(v.prototypes, _stored(other), atol=1e-5)
    assert v.label == "normal (bw 2.5) B=3"
    assert not np.allclose(v.prototypes, _stored(model), atol=1e-3)


def test_recompute_does_not_mutate_the_model(model):
    before = _stored(model)
    weights = model.learner.interpolation.clone()
    lab.recompute(model, "inv_prop", num_base_ranks=7)
    lab.recompute(model, "normal", bandwidth=0.5)
    assert model.config.interpolation == "linear" and model.config.bandwidth == 1.0
    assert torch.equal(model.learner.interpolation, weights)
    np.testing.assert_array_equal(_stored(model), before)


def test_resample_base_embeddings():
    emb = torch.arange(5, dtype=torch.float32)[:, None, None].expand(5, 2, 3).clone()
    same = lab.resample_base_embeddings(emb, 5)
    assert torch.equal(same, emb)
    three = lab.resample_base_embeddings(emb, 3)  # positions 0, 2, 4
    assert three[:, 0, 0].tolist() == [0.0, 2.0, 4.0]
    four = lab.resample_base_embeddings(emb, 4)  # positions 0, 4/3, 8/3, 4: linear between neighbours
    np.testing.assert_allclose(four[:, 1, 2].numpy(), [0, 4 / 3, 8 / 3, 4], atol=1e-6)
    one = lab.resample_base_embeddings(emb, 1)  # the middle rank
    assert one[:, 0, 0].tolist() == [2.0]
    with pytest.raises(ExplorerError):
        lab.resample_base_embeddings(emb, 6)
    with pytest.raises(ExplorerError):
        lab.resample_base_embeddings(emb, 0)


def test_inv_prop_with_b_equal_r_reproduces_current_ranks(model):
    """B' = R, inv_prop: bases are the current rank embeddings, weights one-hot -> same prototypes."""
    v = lab.recompute(model, "inv_prop", num_base_ranks=21)
    assert v.resampled and v.num_base_ranks == 21 and "(resampled)" in v.label
    np.testing.assert_allclose(v.prototypes, _stored(model), atol=1e-4)


def test_other_b_gives_normalised_prototypes(model):
    for b in (1, 2, 5, 11):
        v = lab.recompute(model, "linear", num_base_ranks=b)
        assert v.weights.shape == (21, b) and v.positions.shape == (b,)
        np.testing.assert_allclose(v.weights.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(v.prototypes, axis=1), 1.0, atol=1e-6)


def test_lock_is_held_while_encoding(model):
    class Recording:
        def __init__(self):
            self.inner, self.count = threading.RLock(), 0

        def __enter__(self):
            self.inner.acquire()
            self.count += 1

        def __exit__(self, *a):
            self.inner.release()

    lock = Recording()
    out = lab.recompute_many(model, [("linear", 1.0, None), ("normal", 3.0, 4)], lock=lock)
    assert lock.count == 2 and [v.label for v in out] == ["linear B=3", "normal (bw 3) B=4 (resampled)"]


def test_bad_settings_are_refused(model):
    with pytest.raises(ExplorerError, match="Unknown interpolation"):
        lab.recompute(model, "cubic")
    with pytest.raises(ExplorerError, match="bandwidth"):
        lab.recompute(model, "normal", bandwidth=0)
    with pytest.raises(ExplorerError, match="between 1 and 21"):
        lab.recompute(model, "linear", num_base_ranks=22)


def test_only_rank_learners():
    plain = build("plain", seed=1)
    with pytest.raises(ExplorerError, match="CoOp .plain. learner"):
        lab.recompute(plain, "linear")
    template = build("template", ranks=Ranks.integers(5))
    with pytest.raises(ExplorerError, match="zero-shot template"):
        lab.require_rank_learner(template)


def test_weights_frame():
    w = interpolation_weights(4, 2, "linear").numpy()
    df = lab.weights_frame(w, ["a", "b", "c", "d"])
    assert len(df) == 8 and set(df["base"]) == {"b1", "b2"}
    assert df.groupby("rank")["weight"].sum().tolist() == pytest.approx([1, 1, 1, 1])
