"""Prompt learners against the method spec (docs ordinalclip-method.md, section 2), number for number.

Real open_clip models only: the shipped demo backbone, and the ViT-B/16 architecture with seeded
random weights loaded through ``load_backbone("ViT-B-16@file")``. Expected values are built
independently here (token ids, hand-assembled sequences, a float32 re-implementation of the
reference interpolation, open_clip's own ``encode_text``).
"""

from __future__ import annotations

import copy
import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from app_testdata import demo_backbone

from explorer.backbones.load import load_backbone
from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks, read_names_file
from explorer.methods import make_config, stored_config
from explorer.methods.ordinalclip import interpolation_weights
from explorer.methods.prompt import build_prompt_model

SOT, PERIOD, EOT, PAD = 49406, 269, 49407, 0
AGE_CONTEXT = "age estimation: the age of the person is"
AGE_CONTEXT_IDS = [805, 8904, 656, 281, 518, 805, 539, 518, 2533, 533]  # CLIP BPE, without SOT/EOT
TOL = 1e-5




@pytest.fixture(scope="module")
def demo():
    return demo_backbone()  # the test process's one demo backbone (only read here)


@pytest.fixture(scope="module")
def vitb16(tmp_path_factory):
    """The ViT-B/16 architecture with seeded random weights, through the ARCH@PATH loader."""
    from safetensors.torch import save_file

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-16", pretrained=None)
    path = tmp_path_factory.mktemp("weights") / "ViT-B-16.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    del model
    bb = load_backbone(f"ViT-B-16@{path}", device="cpu")
    assert bb.embed_dim == 512 and bb.model.token_embedding.embedding_dim == 512
    return bb


@pytest.fixture(scope="module")
def clip_tokenizer():
    """open_clip's own tokenizer (independent of the backbone's)."""
    return open_clip.get_tokenizer("ViT-B-16")


def reference_weights(num_ranks: int, num_base: int, kind: str) -> torch.Tensor:
    """The reference implementation's interpolation weights, float32 throughout (may hold NaN)."""
    w = torch.arange(num_ranks)[:, None].repeat(1, num_base).to(torch.float32)
    base = torch.linspace(0, num_ranks - 1, 3)[1:2] if num_base == 1 else torch.linspace(0, num_ranks - 1, num_base)
    d = (w - base[None]).abs()
    f = {"linear": 1.0 - d / (num_ranks - 1), "inv_prop": 1.0 / (d + 1e-5), "normal": torch.exp(-d * d)}[kind]
    return f / f.sum(dim=-1, keepdim=True)


def token_embeddings(bb, ids) -> torch.Tensor:
    return bb.model.token_embedding.weight.detach()[torch.as_tensor(ids)].float()


def hand_built(bb, ctx, ranks, counts, position, length=None):
    """[SOT] body [.] [EOT] [pad...] assembled row by row from the spec; returns (R x L x D, EOT indices)."""
    sot, period, eot, pad = token_embeddings(bb, [SOT, PERIOD, EOT, PAD])
    n = ctx.shape[1]
    seqs, eots = [], []
    for r in range(ctx.shape[0]):
        c, rk = ctx[r], ranks[r, : counts[r]]
        if position == "tail":
            body = [c, rk]
        elif position == "front":
            body = [rk, c]
        else:
            body = [c[: n // 2], rk, c[n // 2 :]]
        seq = torch.cat([sot[None], *body, period[None], eot[None]])
        seqs.append(seq)
        eots.append(seq.shape[0] - 1)
    total = length or max(s.shape[0] for s in seqs)
    rows = [torch.cat([s, pad[None].expand(total - s.shape[0], -1)]) for s in seqs]
    return torch.stack(rows), torch.tensor(eots)


def learner_ctx(learner, num_ranks):
    ctx = learner.context_embeds.detach()
    return ctx[None].expand(num_ranks, -1, -1) if ctx.dim() == 2 else ctx


# --- 1. truncation equivalence (ViT-B/16 architecture) --------------------------------------------


@pytest.mark.slow
def test_rank_learner_truncated_equals_full_length_vitb16(vitb16):
    """The spec's requirement: R=101, n=10, t=1 rank learner, truncated vs 77-token path, <= 1e-5."""
    pm = build_prompt_model(vitb16, make_config("ordinalclip", num_ranks=101, num_context_tokens=10, num_tokens_per_rank=1))
    with torch.no_grad():
        short_batch = pm.learner(full_length=False)
        full_batch = pm.learner(full_length=True, context_length=77)
        assert short_batch.embeddings.shape == (101, 1 + 10 + 1 + 2, 512)
        assert full_batch.embeddings.shape == (101, 77, 512)
        assert torch.equal(short_batch.eot_index, full_batch.eot_index)
        short, full = pm(), pm(full_length=True)
    assert short.shape == full.shape == (101, 512)
    torch.testing.assert_close(short.norm(dim=-1), torch.ones(101), atol=1e-6, rtol=0)
    assert (short - full).abs().max().item() <= TOL
    # The comparison means something: prototypes differ across ranks far beyond the tolerance.
    assert (short[0] - short[100]).abs().max().item() > 100 * TOL


PLAIN_NAMES = ["newborn", "25", "100", "middle aged adult", "7", "old person"]


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(dict(kind="coop", num_ranks=6, num_context_tokens=4, rank_names=PLAIN_NAMES), id="plain-names"),
        pytest.param(dict(kind="coop", num_ranks=6, num_context_tokens=3, num_tokens_per_rank=2), id="plain-random"),
        pytest.param(dict(kind="ordinalclip", num_ranks=8, num_base_ranks=3, num_context_tokens=5, num_tokens_per_rank=2, position="front"), id="rank-front"),
        pytest.param(dict(kind="ordinalclip", num_ranks=8, num_base_ranks=3, num_context_tokens=5, num_tokens_per_rank=2, position="middle"), id="rank-middle"),
        pytest.param(dict(kind="ordinalclip", num_ranks=8, num_base_ranks=2, num_context_tokens=4, rank_specific_context=True), id="rank-specific-context"),
        pytest.param(dict(kind="ordinalclip", num_ranks=8, num_base_ranks=3, context_init=AGE_CONTEXT, rank_names=["baby", "25", "100"],
                          interpolation="normal"), id="rank-text-init"),
        pytest.param(dict(kind="zeroshot", num_ranks=6, rank_names=PLAIN_NAMES), id="template"),
    ],
)
@pytest.mark.slow
def test_truncated_equals_full_length_other_learners_vitb16(vitb16, config):
    pm = build_prompt_model(vitb16, stored_config(config))
    with torch.no_grad():
        short_len = pm.learner(full_length=False).embeddings.shape[1]
        short, full = pm(), pm(full_length=True)
    assert short_len < 77
    assert torch.isfinite(short).all()
    assert (short - full).abs().max().item() <= TOL
    assert (short[0] - short[-1]).abs().max().item() > 100 * TOL


def test_truncated_equals_full_length_at_the_limit(demo):
    """n = 73, t = 1 fills all 77 positions exactly; both paths coincide."""
    pm = build_prompt_model(demo, make_config("ordinalclip", num_ranks=5, num_base_ranks=2, num_context_tokens=73))
    with torch.no_grad():
        batch = pm.learner(full_length=False)
        assert batch.embeddings.shape[1] == 77 and batch.eot_index.tolist() == [76] * 5
        assert (pm() - pm(full_length=True)).abs().max().item() <= TOL


# --- 2. template learner == open_clip's encode_text -----------------------------------------------


@pytest.mark.parametrize("which", [pytest.param("vitb16", marks=pytest.mark.slow), "demo"])
def test_template_learner_equals_open_clip_encode_text(request, clip_tokenizer, which):
    bb = request.getfixturevalue(which)
    if which == "vitb16":
        names = ["newborn", "7", "25", "48", "100", "one hundred and ten"]
        config = make_config("zeroshot", num_ranks=6, rank_names=names, template="A photo of a {}-year-old, smiling Person!")
    else:
        config = make_config("zeroshot", num_ranks=101)  # default names: the rank labels 0..100
    pm = build_prompt_model(bb, config)
    names = pm.config.rank_names  # the model's resolved copy; the caller's config is left as it was
    texts = [config.template.replace("{}", n) for n in names]
    assert pm.learner.texts == texts
    with torch.no_grad():
        ours = pm()
        ref = F.normalize(bb.model.encode_text(clip_tokenizer(texts)).float(), dim=-1)
    assert (ours - ref).abs().max().item() <= TOL
    # and the EOT position is where open_clip's argmax pooling reads
    assert torch.equal(pm.learner(full_length=False).eot_index, clip_tokenizer(texts).argmax(dim=-1))


# --- 3. prompt layout -----------------------------------------------------------------------------


@pytest.mark.parametrize("position", ["tail", "front", "middle"])
@pytest.mark.parametrize("rank_specific", [False, True], ids=["shared-ctx", "rank-specific-ctx"])
@pytest.mark.parametrize("n", [5, 0], ids=["n5", "n0"])  # odd n: middle splits at floor(5/2) = 2
def test_rank_learner_layout_matches_spec(demo, position, rank_specific, n):
    num_ranks, num_base, t = 7, 3, 2
    config = make_config(
        "ordinalclip", num_ranks=num_ranks, num_base_ranks=num_base, num_context_tokens=n,
        num_tokens_per_rank=t, position=position, rank_specific_context=rank_specific,
    )
    learner = build_prompt_model(demo, config, seed=3).learner
    ctx = learner_ctx(learner, num_ranks)
    assert ctx.shape == (num_ranks, n, 128)
    if rank_specific and n:
        assert not torch.equal(ctx[0], ctx[1])
    ranks = torch.einsum("rk,ktd->rtd", reference_weights(num_ranks, num_base, "linear"), learner.rank_embeds.detach())
    expected, expected_eot = hand_built(demo, ctx, ranks, [t] * num_ranks, position)
    with torch.no_grad():
        batch = learner(full_length=False)
        full = learner(full_length=True, context_length=77)
    assert expected_eot.tolist() == [1 + n + t + 1] * num_ranks
    assert batch.eot_index.tolist() == expected_eot.tolist()
    assert batch.embeddings.shape == (num_ranks, 1 + n + t + 2, 128)
    torch.testing.assert_close(batch.embeddings, expected, atol=1e-6, rtol=0)
    expected_full, _ = hand_built(demo, ctx, ranks, [t] * num_ranks, position, length=77)
    torch.testing.assert_close(full.embeddings, expected_full, atol=1e-6, rtol=0)
    assert torch.equal(full.eot_index, batch.eot_index)


@pytest.mark.parametrize("position", ["tail", "front", "middle"])
def test_plain_learner_names_layout_per_rank_eot(demo, position):
    """Names of different token counts: rank r uses its own count t_r, so EOT = 1 + n + t_r + 1 (as the reference)."""
    n = 4
    learner = build_prompt_model(
        demo, make_config("coop", num_ranks=6, num_context_tokens=n, rank_names=PLAIN_NAMES, position=position)
    ).learner
    tok = demo.tokenizer
    counts = [len(tok.encode(name)) for name in PLAIN_NAMES]
    assert counts == [1, 2, 3, 3, 1, 2]
    ranks = learner.rank_embeds.detach()
    assert ranks.shape == (6, 3, 128)
    expected, expected_eot = hand_built(demo, learner_ctx(learner, 6), ranks, counts, position)
    with torch.no_grad():
        batch = learner(full_length=False)
    assert batch.eot_index.tolist() == [1 + n + c + 1 for c in counts] == expected_eot.tolist()
    torch.testing.assert_close(batch.embeddings, expected, atol=1e-6, rtol=0)


# --- 4. interpolation weights ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "inv_prop"])
@pytest.mark.parametrize("num_ranks, num_base", [(101, 3), (101, 1), (101, 2), (101, 5), (10, 10), (5, 4), (70, 9)])
def test_interpolation_matches_reference(kind, num_ranks, num_base):
    ours = interpolation_weights(num_ranks, num_base, kind)
    ref = reference_weights(num_ranks, num_base, kind)
    assert ours.dtype == torch.float32 and ours.shape == (num_ranks, num_base)
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.sum(dim=1), torch.ones(num_ranks), atol=1e-6, rtol=0)


def test_interpolation_special_cases():
    # B = 1: a single base at (R-1)/2, every weight 1.
    assert torch.equal(interpolation_weights(101, 1, "linear"), torch.ones(101, 1))
    # B = 2, linear: plain two-point interpolation.
    r = torch.arange(101, dtype=torch.float32)
    torch.testing.assert_close(interpolation_weights(101, 2, "linear"), torch.stack([1 - r / 100, r / 100], 1), atol=1e-6, rtol=0)
    # B = 3, linear mixes all bases in the interior (not two-point).
    w = interpolation_weights(101, 3, "linear")
    assert (w[1:50] > 0).all() and (w[51:100] > 0).all()
    # inv_prop: one-hot at the base positions 0, 50, 100.
    w = interpolation_weights(101, 3, "inv_prop")
    for k, pos in enumerate([0, 50, 100]):
        assert w[pos, k] > 1 - 1e-4
        assert w[pos].sum() == pytest.approx(1.0, abs=1e-6)


def test_normal_interpolation_finite_where_reference_is_nan():
    ref = reference_weights(101, 3, "normal")
    nan_rows = torch.isnan(ref).any(dim=1)
    assert int(nan_rows.sum()) == 58  # ranks more than 10 from every base (0, 50, 100)
    assert nan_rows[11:40].all() and nan_rows[61:90].all() and not nan_rows[:11].any() and not nan_rows[40:61].any()
    ours = interpolation_weights(101, 3, "normal")
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours[~nan_rows], ref[~nan_rows], atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.sum(dim=1), torch.ones(101), atol=1e-6, rtol=0)
    # Where the reference underflows, ours is the exact limit (float64, log space).
    d = (torch.arange(101, dtype=torch.float64)[:, None] - torch.tensor([0.0, 50.0, 100.0])[None]).abs()
    exact = torch.softmax(-(d**2), dim=1).float()
    torch.testing.assert_close(ours, exact, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours[25], torch.tensor([0.5, 0.5, 0.0]), atol=1e-7, rtol=0)  # equidistant
    # A finite reference elsewhere: R = 21, B = 3 (spacing 10) has no underflow; must agree everywhere.
    torch.testing.assert_close(interpolation_weights(21, 3, "normal"), reference_weights(21, 3, "normal"), atol=1e-6, rtol=0)


def test_normal_bandwidth():
    w1 = interpolation_weights(101, 3, "normal", bandwidth=1.0)
    w10 = interpolation_weights(101, 3, "normal", bandwidth=10.0)
    assert (w1 - w10).abs().max() > 0.1
    d = (torch.arange(101, dtype=torch.float64)[:, None] - torch.tensor([0.0, 50.0, 100.0])[None]).abs()
    f = torch.exp(-((d / 10.0) ** 2))
    torch.testing.assert_close(w10, (f / f.sum(1, keepdim=True)).float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(w10.sum(dim=1), torch.ones(101), atol=1e-6, rtol=0)


def test_rank_learner_rank_embeddings_are_the_interpolated_bases(demo):
    pm = build_prompt_model(demo, make_config("ordinalclip", num_ranks=101, num_base_ranks=3))
    learner = pm.learner
    base = learner.rank_embeds.detach()
    torch.testing.assert_close(
        learner.rank_embeddings().detach(), torch.einsum("rk,ktd->rtd", reference_weights(101, 3, "linear"), base), atol=1e-6, rtol=0
    )
    normal = build_prompt_model(demo, make_config("ordinalclip", num_ranks=101, num_base_ranks=3, interpolation="normal", bandwidth=1.0))
    with torch.no_grad():
        protos = normal()
    assert torch.isfinite(protos).all()  # the reference gives NaN prototypes for 58 ranks here


# --- 5. initialisation from text ------------------------------------------------------------------


def test_context_init_from_text(demo, clip_tokenizer):
    ids = clip_tokenizer([AGE_CONTEXT])[0]
    assert ids[0] == SOT and ids[1 : 1 + len(AGE_CONTEXT_IDS)].tolist() == AGE_CONTEXT_IDS and ids[11] == EOT
    for text in (AGE_CONTEXT, AGE_CONTEXT.replace(" ", "_")):
        config = make_config("ordinalclip", num_ranks=11, num_context_tokens=4, context_init=text)
        pm = build_prompt_model(demo, config)
        assert pm.config.num_context_tokens == 10 and config.num_context_tokens == 4  # the text's token count overrides n = 4
        assert torch.equal(pm.learner.context_embeds.detach(), token_embeddings(demo, AGE_CONTEXT_IDS))
        assert pm.learner(full_length=False).eot_index.tolist() == [1 + 10 + 1 + 1] * 11
    # rank-specific context: the same text embedding, once per rank
    pm = build_prompt_model(demo, make_config("coop", num_ranks=4, context_init=AGE_CONTEXT, rank_specific_context=True))
    ctx = pm.learner.context_embeds.detach()
    assert ctx.shape == (4, 10, 128)
    for r in range(4):
        assert torch.equal(ctx[r], token_embeddings(demo, AGE_CONTEXT_IDS))


def test_digits_are_split_by_clip_bpe(demo):
    assert demo.tokenizer.encode("25") == [273, 276]
    assert demo.tokenizer.encode("100") == [272, 271, 271]


def test_rank_names_init(demo, tmp_path):
    names_file = tmp_path / "base_names.txt"
    names_file.write_text("newborn\n25\n100_years\n\n", encoding="utf-8")  # underscores -> spaces; trailing blank ignored
    names = read_names_file(names_file, expected=3, what="base ranks")
    assert names == ["newborn", "25", "100 years"]
    ids = [demo.tokenizer.encode(name) for name in names]
    assert [len(i) for i in ids] == [1, 2, 4]
    config = make_config("ordinalclip", num_ranks=101, num_base_ranks=3, num_context_tokens=3, rank_names=names)
    learner = build_prompt_model(demo, config).learner
    base = learner.rank_embeds.detach()
    assert base.shape == (3, 4, 128) and learner.config.max_rank_tokens == 4
    for k, row in enumerate(ids):
        padded = row + [PAD] * (4 - len(row))
        assert torch.equal(base[k], token_embeddings(demo, padded))
    # the rank learner mixes all t = 4 tokens: one EOT position for every rank
    assert learner(full_length=False).eot_index.tolist() == [1 + 3 + 4 + 1] * 101
    # plain learner: one name per rank, each zero-padded to the longest
    plain_names = [str(v) for v in range(0, 101, 10)] + ["old"]
    plain = build_prompt_model(demo, make_config("coop", num_ranks=12, rank_names=plain_names)).learner
    for r, name in enumerate(plain_names):
        row = demo.tokenizer.encode(name)
        assert torch.equal(plain.rank_embeds.detach()[r], token_embeddings(demo, row + [PAD] * (3 - len(row))))


# --- 6. invalid settings --------------------------------------------------------------------------


def _error(fn) -> str:
    with pytest.raises(ExplorerError) as err:
        fn()
    return str(err.value)


def test_invalid_settings_raise_explorer_error(demo, tmp_path):
    build = lambda **kw: build_prompt_model(demo, stored_config(kw))  # noqa: E731
    msg = _error(lambda: build(kind="ordinalclip", num_ranks=5, num_base_ranks=6))
    assert "num_base_ranks" in msg and "6" in msg
    assert "num_base_ranks" in _error(lambda: build(kind="ordinalclip", num_ranks=5, num_base_ranks=0))
    msg = _error(lambda: build(kind="ordinalclip", interpolation="cubic"))
    assert "cubic" in msg and "linear" in msg
    msg = _error(lambda: build(kind="ordinalclip", position="left"))
    assert "left" in msg and "middle" in msg
    msg = _error(lambda: build(kind="ordinalclip", num_context_tokens=80))
    assert "84 tokens" in msg and "77" in msg
    assert "77" in _error(lambda: build(kind="coop", num_context_tokens=74))  # 1 + 74 + 1 + 2 = 78
    msg = _error(lambda: build(kind="zeroshot", num_ranks=3, template="a photo of a person"))
    assert "{}" in msg
    msg = _error(lambda: build(kind="zeroshot", num_ranks=3, template="a " * 80 + "{}"))
    assert "longer than" in msg
    assert "Unknown method" in _error(lambda: build(kind="ordinal"))
    assert "bandwidth" in _error(lambda: build(kind="ordinalclip", interpolation="normal", bandwidth=0.0))
    assert "bandwidth" in _error(lambda: build(kind="ordinalclip", interpolation="normal", bandwidth=math.nan))
    assert "num_tokens_per_rank" in _error(lambda: build(kind="coop", num_tokens_per_rank=0))
    msg = _error(lambda: build(kind="coop", num_ranks=4, rank_names=["a", "b", "c"]))
    assert "4 rank names" in msg and "got 3" in msg
    assert "rank labels" in _error(lambda: build_prompt_model(demo, make_config("ordinalclip", num_ranks=5), ranks=Ranks.integers(6)))
    assert "nope" in _error(lambda: make_config("ordinalclip", nope=1))
    assert "Unknown interpolation" in _error(lambda: interpolation_weights(10, 3, "cubic"))
    assert "num_base_ranks" in _error(lambda: interpolation_weights(10, 11, "linear"))


def test_rank_learner_refuses_a_names_file_with_every_rank(demo, tmp_path):
    """The reference's pitfall: a names file with R lines given to the rank learner (which needs B)."""
    path = tmp_path / "all_ages.txt"
    path.write_text("\n".join(f"{age}_years" for age in range(101)) + "\n", encoding="utf-8")
    names = read_names_file(path)
    assert len(names) == 101
    msg = _error(lambda: build_prompt_model(demo, make_config("ordinalclip", num_ranks=101, num_base_ranks=3, rank_names=names)))
    assert "3 base-rank names" in msg and "got 101" in msg and "names every rank" in msg
    msg = _error(lambda: read_names_file(path, expected=3, what="base ranks"))
    assert "all_ages.txt" in msg and "101 lines" in msg and "3 base ranks" in msg


def test_names_file_errors(tmp_path):
    four = tmp_path / "four.txt"
    four.write_text("a\nb\nc\nd\n", encoding="utf-8")
    assert "4 lines but 3" in _error(lambda: read_names_file(four, expected=3))
    gap = tmp_path / "gap.txt"
    gap.write_text("a\n\nc\n", encoding="utf-8")
    assert "line 2" in _error(lambda: read_names_file(gap))
    assert "Cannot read" in _error(lambda: read_names_file(tmp_path / "missing.txt"))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert "Cannot read" in _error(lambda: read_names_file(binary))


# --- 7. gradients and seeds -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rank", "plain"])
def test_gradients_flow_through_truncated_path(demo, kind):
    config = dict(kind=kind, num_ranks=101, num_context_tokens=6, num_tokens_per_rank=2)
    weights = torch.randn(101, 128, generator=torch.Generator().manual_seed(5))
    grads = {}
    for full in (False, True):
        pm = build_prompt_model(demo, stored_config(config), seed=11)
        params = dict(pm.learner.named_parameters())
        assert set(params) == {"context_embeds", "rank_embeds"}
        assert all(p.requires_grad for p in params.values())
        assert not any(p.requires_grad for p in pm.encoder.parameters())
        (pm(full_length=full) * weights).sum().backward()
        grads[full] = {k: p.grad.clone() for k, p in params.items()}
    for name, g in grads[False].items():
        assert torch.isfinite(g).all() and g.abs().max() > 0, name
        # the truncated path's gradient is the padded path's gradient (up to float32 summation order)
        ref = grads[True][name]
        assert ((g - ref).norm() / ref.norm()).item() < 1e-5, name
    if kind == "rank":
        assert grads[False]["rank_embeds"].shape == (3, 2, 128)
        assert (grads[False]["rank_embeds"].abs().sum(dim=(1, 2)) > 0).all()  # every base gets a gradient


def test_seeded_init_is_reproducible(demo):
    config = lambda: make_config("ordinalclip", num_ranks=11, num_context_tokens=10, num_base_ranks=3)  # noqa: E731
    a = build_prompt_model(demo, config(), seed=0).state_tensors()
    torch.manual_seed(123)  # the global RNG must not matter
    b = build_prompt_model(demo, config(), seed=0).state_tensors()
    c = build_prompt_model(demo, config(), seed=1).state_tensors()
    assert a.keys() == b.keys() == {"context_embeds", "rank_embeds"}
    for key in a:
        assert torch.equal(a[key], b[key]), key
        assert not torch.equal(a[key], c[key]), key
    # N(0, 0.02^2) initialisation
    ctx = a["context_embeds"]
    assert ctx.shape == (10, 128)
    assert abs(ctx.mean().item()) < 0.003 and 0.018 < ctx.std().item() < 0.022


def test_building_never_changes_the_callers_config(demo):
    """Derived settings (n from the context text, token counts, template names) go into the model's own copy."""
    configs = [
        make_config("ordinalclip", num_ranks=8, context_init="the age of the person is", rank_names=["young", "middle aged", "old"]),
        make_config("coop", num_ranks=3, num_context_tokens=2, rank_names=["one", "twenty two", "three"]),
        make_config("zeroshot", num_ranks=5),
    ]
    for config in configs:
        before = copy.deepcopy(config)
        pm = build_prompt_model(demo, config)
        assert config == before
        assert pm.config is not config
    rank = build_prompt_model(demo, configs[0])
    assert rank.config.num_context_tokens == 6 and rank.config.rank_token_counts is not None
