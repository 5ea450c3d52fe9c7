"""The training objective (§3, §8) against independent computations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explorer.methods.objectives import distance_weighted_logits, kl_text_to_image, ordinal_loss
from explorer.training.parts import cosine_with_warmup


def reference_kl(logits, y, num_ranks):
    """The reference's own formulation: nn.KLDivLoss(reduction='sum') on masked soft targets / #present."""
    y_t = F.one_hot(y, num_ranks).t()
    present = y_t.sum(-1) > 0
    target = (y_t * 10.0).softmax(-1)
    target[~present] = 0
    kl = torch.nn.KLDivLoss(reduction="sum")(F.log_softmax(logits.t(), dim=-1), target)
    return kl / present.sum()


def loop_kl(logits, y):
    """Straight from the definition: per present rank r, sum_b t_rb (log t_rb - log q_rb)."""
    logits = logits.double().numpy()
    y = y.numpy()
    n, num_ranks = logits.shape
    total, present = 0.0, 0
    for r in range(num_ranks):
        if not (y == r).any():
            continue
        present += 1
        t = np.exp(10.0 * (y == r)) / np.exp(10.0 * (y == r)).sum()
        col = logits[:, r]
        logq = col - np.log(np.exp(col - col.max()).sum()) - col.max()
        total += float((t * (np.log(t) - logq)).sum())
    return total / present


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_matches_reference_and_definition(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(16, 7, generator=g) * 5
    y = torch.randint(0, 7, (16,), generator=g)
    ours = kl_text_to_image(logits, y)
    assert torch.allclose(ours, reference_kl(logits, y, 7), atol=1e-5)
    assert abs(float(ours) - loop_kl(logits, y)) < 1e-4


def test_loss_is_ce_plus_weighted_kl():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(10, 5, generator=g, requires_grad=True)
    y = torch.randint(0, 5, (10,), generator=g)
    loss, parts = ordinal_loss(logits, y, kl_weight=0.5)
    expected = F.cross_entropy(logits, y) + 0.5 * reference_kl(logits, y, 5)
    assert torch.allclose(loss, expected, atol=1e-6)
    assert parts["ce"] == pytest.approx(float(F.cross_entropy(logits.detach(), y)), abs=1e-6)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    only_ce, _ = ordinal_loss(logits.detach(), y, kl_weight=0)
    assert torch.allclose(only_ce, F.cross_entropy(logits.detach(), y))


def test_distance_weighting_follows_numclip_formula():
    logits = torch.arange(12, dtype=torch.float32).reshape(2, 6) + 1
    y = torch.tensor([0, 3])
    out = distance_weighted_logits(logits, y)
    for i, yi in enumerate(y.tolist()):
        dists = [abs(yi - k) for k in range(6)]
        for j in range(6):
            w = 1.0 if j == yi else (6 - 1) * abs(yi - j) / sum(dists)
            assert out[i, j].item() == pytest.approx(logits[i, j].item() * w, rel=1e-6)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    values = [cosine_with_warmup(s, 100, 10) for s in range(101)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)
    assert values[55] == pytest.approx(0.5, abs=1e-9)
    assert values[100] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
