"""The text encoder's shared-prefix path (issue 10) against the plain and 77-token paths.

Real open_clip text towers with seeded random weights (the ViT-B/16 and RN50 text configs, and a
small tower where the architecture is not the point), and the shipped demo backbone for the
learner and lab wiring. No mocks.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from app_testdata import demo_backbone
from open_clip import get_model_config
from open_clip.model import _build_text_tower

from explorer.backbones.text_encoder import PromptBatch, TextEncoder, assemble_prompts, shared_prefix_length
from explorer.core.settings import ENV_TEXT_PREFIX as PREFIX_ENV
from explorer.methods import make_config, stored_config
from explorer.methods.ordinalclip import interpolation_weights
from explorer.methods.prompt import build_prompt_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SOT, PERIOD, EOT, PAD = 49406, 269, 49407, 0
SMALL = dict(context_length=77, vocab_size=49408, width=64, heads=4, layers=2)


def text_tower(arch: str | None = None, seed: int = 0, quick_gelu: bool = False, **overrides) -> torch.nn.Module:
    """An open_clip text tower (``arch``'s text config, or a small one) with seeded random weights."""
    cfg = dict(get_model_config(arch)["text_cfg"]) if arch else dict(SMALL)
    cfg.update(overrides)
    embed_dim = get_model_config(arch)["embed_dim"] if arch else 32
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        tower = _build_text_tower(embed_dim, cfg, quick_gelu=quick_gelu)
    return tower.float().eval().requires_grad_(False)


def special(tower) -> dict[str, torch.Tensor]:
    e = tower.token_embedding.weight.detach()[torch.tensor([SOT, PERIOD, EOT, PAD])].float()
    return {"sot": e[0], "period": e[1], "eot": e[2], "pad": e[3]}


def learned(tower, n: int, t: int, num_base: int, seed: int = 0):
    """Leaf tensors (context n x D, bases B x t x D) initialised like the learners, N(0, 0.02^2)."""
    gen = torch.Generator().manual_seed(seed)
    dim = tower.token_embedding.embedding_dim
    ctx = (torch.randn(n, dim, generator=gen) * 0.02).requires_grad_(True)
    bases = (torch.randn(num_base, t, dim, generator=gen) * 0.02).requires_grad_(True)
    return ctx, bases


def prompts(tower, ctx, bases, num_ranks: int, position: str, length: int | None = None) -> PromptBatch:
    """A rank learner's prompts: shared context broadcast, ranks interpolated from the bases."""
    weights = interpolation_weights(num_ranks, bases.shape[0], "linear").to(bases.device)
    ranks = torch.einsum("rk,ktd->rtd", weights, bases)
    context = ctx[None].expand(num_ranks, -1, -1)
    counts = [bases.shape[1]] * num_ranks
    return assemble_prompts(context, ranks, counts, special(tower), position, length=length, shared_context=True)


def encode(encoder: TextEncoder, batch: PromptBatch, mode: str) -> torch.Tensor:
    encoder.prefix_mode = mode
    out = F.normalize(encoder(batch).float(), dim=-1)
    assert encoder.last_path == ("plain" if mode == "off" else "shared")
    return out


@pytest.fixture(scope="module")
def towers():
    """The real ViT-B/16 and RN50 text towers (RN50 with QuickGELU, as OpenAI's RN50 weights), built once."""
    return {"ViT-B-16": text_tower("ViT-B-16", seed=0), "RN50": text_tower("RN50", seed=1, quick_gelu=True)}


@pytest.fixture(scope="module")
def small():
    return text_tower(seed=2)


@pytest.fixture(scope="module")
def demo():
    return demo_backbone()  # the test process's one demo backbone (only read here)


# --- 1. exactness ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["ViT-B-16", "RN50"])
@pytest.mark.parametrize("position", ["tail", "middle"])
@pytest.mark.parametrize("n", [4, 10, 16])
def test_shared_prefix_equals_77_token_path(towers, arch, position, n):
    """Normalised prototypes of the shared-prefix path equal the padded reference, <= 1e-5, for t, B in {1,3} x {2,5}."""
    tower = towers[arch]
    encoder = TextEncoder(tower)
    assert encoder.unsupported is None
    num_ranks = 5
    with torch.no_grad():
        for t in (1, 3):
            for num_base in (2, 5):
                ctx, bases = learned(tower, n, t, num_base, seed=10 * n + t + num_base)
                batch = prompts(tower, ctx, bases, num_ranks, position)
                assert batch.shared_prefix == shared_prefix_length(position, n) == 1 + (n if position == "tail" else n // 2)
                assert batch.embeddings.shape[1] == 1 + n + t + 2
                full = prompts(tower, ctx, bases, num_ranks, position, length=77)
                assert full.shared_prefix == 0 and full.embeddings.shape[1] == 77
                shared, reference = encode(encoder, batch, "auto"), encode(encoder, full, "off")
                assert (shared - reference).abs().max().item() <= 1e-5, (t, num_base)
                assert (shared[0] - shared[-1]).abs().max().item() > 1e-3  # the ranks differ far beyond the tolerance


def test_shared_prefix_equals_plain_path_small_tower_padded_ranks(small):
    """Ranks with different token counts (padding after some EOTs) and a larger R, small tower."""
    ctx, bases = learned(small, 6, 3, 4, seed=3)
    ranks = torch.einsum("rk,ktd->rtd", interpolation_weights(40, 4, "linear"), bases)
    counts = [1 + r % 3 for r in range(40)]
    batch = assemble_prompts(ctx[None].expand(40, -1, -1), ranks, counts, special(small), "tail", shared_context=True)
    encoder = TextEncoder(small)
    with torch.no_grad():
        shared, plain = encode(encoder, batch, "shared"), encode(encoder, batch, "off")
    assert (shared - plain).abs().max().item() <= 1e-5


# --- 2. gradients ----------------------------------------------------------------------------------


def grads(encoder: TextEncoder, tower, mode: str, n: int, t: int, position: str, num_ranks: int = 5):
    ctx, bases = learned(tower, n, t, 2, seed=7)
    target = torch.randn(num_ranks, encoder.text_projection.shape[-1], generator=torch.Generator().manual_seed(8))
    (encode(encoder, prompts(tower, ctx, bases, num_ranks, position), mode) * target).sum().backward()
    return ctx.grad, bases.grad


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.slow
@pytest.mark.parametrize("arch,position,n,t", [("ViT-B-16", "tail", 10, 1), ("ViT-B-16", "middle", 16, 3), ("RN50", "tail", 4, 3)])
def test_gradients_equal_plain_path(towers, arch, position, n, t):
    tower = towers[arch]
    encoder = TextEncoder(tower)
    g_ctx, g_rank = grads(encoder, tower, "shared", n, t, position)
    p_ctx, p_rank = grads(encoder, tower, "off", n, t, position)
    assert g_ctx.abs().max() > 0 and g_rank.abs().max() > 0
    assert rel(g_ctx, p_ctx) <= 1e-4 and rel(g_rank, p_rank) <= 1e-4


@pytest.mark.parametrize("kind", ["rank", "plain"])
def test_learner_training_gradients_equal_plain_path(demo, kind):
    """Through PromptModel (what training runs): the shared path is taken and gives the plain path's gradients."""
    config = dict(kind=kind, num_ranks=21, num_context_tokens=6, num_tokens_per_rank=2)
    target = torch.randn(21, 128, generator=torch.Generator().manual_seed(5))
    out = {}
    for mode in ("auto", "off"):
        pm = build_prompt_model(demo, stored_config(config), seed=11)
        pm.encoder.prefix_mode = mode
        (pm() * target).sum().backward()
        assert pm.encoder.last_path == ("shared" if mode == "auto" else "plain")
        out[mode] = {k: p.grad.clone() for k, p in pm.learner.named_parameters()}
    for name, g in out["auto"].items():
        assert g.abs().max() > 0 and rel(g, out["off"][name]) <= 1e-4, name


def test_lab_recompute_takes_the_shared_path(demo):
    from explorer.analysis import lab

    pm = build_prompt_model(demo, make_config("ordinalclip", num_ranks=21, num_context_tokens=8), seed=3)
    shared = lab.recompute(pm, "normal", bandwidth=2.0, num_base_ranks=4)
    assert pm.encoder.last_path == "shared"
    pm.encoder.prefix_mode = "off"
    plain = lab.recompute(pm, "normal", bandwidth=2.0, num_base_ranks=4)
    assert pm.encoder.last_path == "plain"
    assert abs(shared.prototypes - plain.prototypes).max() <= 1e-5


# --- 3. fallbacks and switches ---------------------------------------------------------------------


@pytest.mark.parametrize("case", ["front", "rank_specific", "template", "full_length"])
def test_fallback_where_the_prefix_is_not_shared(demo, case):
    config = dict(kind="ordinalclip", num_ranks=11, num_context_tokens=6)
    if case == "front":
        config["position"] = "front"
    elif case == "rank_specific":
        config["rank_specific_context"] = True
    elif case == "template":
        config = dict(kind="zeroshot", num_ranks=11)
    pm = build_prompt_model(demo, stored_config(config), seed=0)
    batch = pm.learner(full_length=case == "full_length", context_length=77)
    assert batch.shared_prefix == 0
    with torch.no_grad():
        pm.encoder(batch)
        assert pm.encoder.last_path == "plain"
        pm.encoder.prefix_mode = "shared"
        with pytest.raises(ValueError, match="share no prefix beyond SOT"):
            pm.encoder(batch)


def test_environment_variable_turns_auto_off(demo, monkeypatch):
    pm = build_prompt_model(demo, make_config("ordinalclip", num_ranks=11, num_context_tokens=6), seed=0)
    with torch.no_grad():
        pm()
        assert pm.encoder.last_path == "shared"
        monkeypatch.setenv(PREFIX_ENV, "off")
        pm()
        assert pm.encoder.last_path == "plain"
        pm.encoder.prefix_mode = "shared"  # an explicit choice wins over the variable
        pm()
        assert pm.encoder.last_path == "shared"
        pm.encoder.prefix_mode = "sometimes"
        with pytest.raises(ValueError, match="Unknown prefix_mode"):
            pm()


def test_unknown_text_tower_falls_back(small):
    custom = text_tower(seed=4, block_type="custom")
    encoder = TextEncoder(custom)
    assert "CustomResidualAttentionBlock" in encoder.unsupported
    assert TextEncoder(small).unsupported is None
    assert TextEncoder(text_tower(seed=4, no_causal_mask=True)).unsupported is not None
    ctx, bases = learned(custom, 4, 1, 2)
    batch = prompts(custom, ctx, bases, 5, "tail")
    with torch.no_grad():
        encoder(batch)
        assert encoder.last_path == "plain"
        encoder.prefix_mode = "shared"
        with pytest.raises(ValueError, match="CustomResidualAttentionBlock"):
            encoder(batch)


def test_single_prompt_and_batch_compatibility(small):
    ctx, bases = learned(small, 4, 1, 1)
    one = assemble_prompts(ctx[None], bases, [1], special(small), "tail", shared_context=True)
    encoder = TextEncoder(small, prefix_mode="shared")
    with pytest.raises(ValueError, match="only one prompt"):
        encoder(one)
    # The two-field form still works (shared_prefix defaults to 0) and unpacks in three.
    old = PromptBatch(one.embeddings, one.eot_index)
    embeddings, eot, prefix = old
    assert prefix == 0 and embeddings is one.embeddings
    encoder.prefix_mode = "auto"
    with torch.no_grad():
        encoder(old)
    assert encoder.last_path == "plain"


def test_shared_context_is_checked(small):
    dim = small.token_embedding.embedding_dim
    context = torch.randn(3, 4, dim)
    ranks = torch.randn(3, 1, dim)
    with pytest.raises(ValueError, match="differs across ranks"):
        assemble_prompts(context, ranks, [1] * 3, special(small), "tail", shared_context=True)
    same = assemble_prompts(context[:1].repeat(3, 1, 1), ranks, [1] * 3, special(small), "middle", shared_context=True)
    assert same.shared_prefix == 1 + 2
    front = assemble_prompts(context[:1].repeat(3, 1, 1), ranks, [1] * 3, special(small), "front", shared_context=True)
    assert front.shared_prefix == 0


# --- 4. mixed precision (bf16 autocast; CPU, and CUDA where there is one) ------------------------------


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))])
def test_bf16_autocast_matches_float32(small, device):
    """Both paths under bf16 autocast (a bf16 training step) give float32 features close to fp32's."""
    tower = text_tower(seed=2).to(device)
    ctx, bases = learned(tower, 10, 1, 3)
    batch = prompts(tower, ctx.to(device), bases.to(device), 21, "tail")
    encoder = TextEncoder(tower)
    with torch.no_grad():
        reference = encode(encoder, batch, "off")
        for mode in ("shared", "off"):
            encoder.prefix_mode = mode
            with torch.autocast(device, dtype=torch.bfloat16):
                out = encoder(batch)
            assert encoder.last_path == ("plain" if mode == "off" else "shared")
            assert out.dtype == torch.float32
            assert 0 < (F.normalize(out, dim=-1) - reference).abs().max().item() < 3e-2, mode
