"""The interpolation lab (explorer.analysis.lab over OrdinalCLIP.reinterpolate): re-interpolating without retraining."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from app_testdata import build

from explorer.analysis import lab
from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.methods.ordinalclip import interpolation_weights, resample_base_embeddings


@pytest.fixture(scope="module")
def model():
    return build("ordinalclip", interpolation="linear", num_base_ranks=3, seed=11)


def _stored(model) -> np.ndarray:
    return model.prototypes().matrix.numpy().astype(np.float64)


def test_same_scheme_and_b_reproduces_the_model(model):
    v = lab.recompute(model, "linear")
    assert v.num_base_ranks == 3 and not v.resampled and v.label == "linear B=3"
    np.testing.assert_allclose(v.prototypes, _stored(model), atol=1e-5)
    np.testing.assert_allclose(v.weights, interpolation_weights(21, 3, "linear").numpy(), atol=1e-7)
    np.testing.assert_allclose(v.positions, [0, 10, 20])


def test_other_scheme_matches_a_model_built_with_it(model):
    other = build("ordinalclip", interpolation="normal", bandwidth=2.5, num_base_ranks=3, seed=11)  # the same bases
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
    same = resample_base_embeddings(emb, 5)
    assert torch.equal(same, emb)
    three = resample_base_embeddings(emb, 3)  # positions 0, 2, 4
    assert three[:, 0, 0].tolist() == [0.0, 2.0, 4.0]
    four = resample_base_embeddings(emb, 4)  # positions 0, 4/3, 8/3, 4: linear between neighbours
    np.testing.assert_allclose(four[:, 1, 2].numpy(), [0, 4 / 3, 8 / 3, 4], atol=1e-6)
    one = resample_base_embeddings(emb, 1)  # the middle rank
    assert one[:, 0, 0].tolist() == [2.0]
    with pytest.raises(ExplorerError):
        resample_base_embeddings(emb, 6)
    with pytest.raises(ExplorerError):
        resample_base_embeddings(emb, 0)


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


def test_bad_settings_are_refused(model):
    with pytest.raises(ExplorerError, match="Unknown interpolation"):
        lab.recompute(model, "cubic")
    with pytest.raises(ExplorerError, match="bandwidth"):
        lab.recompute(model, "normal", bandwidth=0)
    with pytest.raises(ExplorerError, match="between 1 and 21"):
        lab.recompute(model, "linear", num_base_ranks=22)


def test_only_methods_with_the_lab_hooks():
    coop = build("coop", seed=1)
    with pytest.raises(ExplorerError, match="CoOp checkpoint; the interpolation lab needs"):
        lab.recompute(coop, "linear")
    with pytest.raises(ExplorerError, match="zero-shot"):
        lab.lab_options(type(build("zeroshot", ranks=Ranks.integers(5))), None)
    assert lab.lab_options(type(build("ordinalclip")), build("ordinalclip").config).schemes == ("linear", "inv_prop", "normal")
