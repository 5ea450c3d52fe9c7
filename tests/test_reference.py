"""Import of reference OrdinalCLIP runs (explorer.store.reference), checked against an independent
re-implementation of the reference forward pass (method doc §2), on real files in tmp_path.

The fake-but-faithful run: a small open_clip CLIP with QuickGELU (the demo architecture) saved in
OpenAI layout (fp16, like OpenAI's files); a Lightning-style ``.ckpt`` whose state_dict has
``module.``-prefixed prompt-learner tensors, the CLIP text tower (optionally perturbed: a tuned text
encoder), a perturbed CLIP visual tower (the reference fine-tunes it) and the logit scale; and a
``config.yaml`` shaped like the reference's OmegaConf dump.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from explorer.backbones.load import load_backbone
from explorer.backbones.sources import DEMO_CONFIG
from explorer.core.errors import ExplorerError
from explorer.methods import canonical_name
from explorer.store.checkpoints import load_checkpoint
from explorer.store.reference import ReferenceImportWarning, import_reference, import_reference_run

R = 9  # ranks (small: the test is about faithfulness, not scale)
CONTEXT_LENGTH = 77
SOT, PERIOD, EOT, PAD = 49406, 269, 49407, 0
TEXT_KEYS = ("transformer.", "ln_final.", "positional_embedding", "text_projection")




# --- the CLIP weights (OpenAI layout) -------------------------------------------------------------


def _clip_model(seed: int = 7):
    from open_clip.model import CLIP

    cfg = DEMO_CONFIG
    torch.manual_seed(seed)
    model = CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=True)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))
        # open_clip initialises some tensors to constants (ln biases 0, positional 0.01 std ...);
        # spread every text-tower weight a little so that positions and tokens matter clearly.
        for name, p in model.named_parameters():
            if name.startswith(TEXT_KEYS) or name == "token_embedding.weight":
                p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """clip.pt (OpenAI key names, fp16 like OpenAI's) and its fp32 state as loaded back."""
    return write_clip_file(tmp_path_factory.mktemp("clip") / "clip.pt")


def write_clip_file(path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """Write the tiny CLIP as ``path`` (fp16, OpenAI layout); returns it and its fp32 state as loaded back."""
    state = {k: v.detach().clone() for k, v in _clip_model().state_dict().items()}
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)
    loaded = {k: v.float() for k, v in torch.load(path, weights_only=True).items()}
    return path, loaded


def test_clip_weights_load_in_openai_layout(clip_file):
    path, state = clip_file
    bb = load_backbone(str(path))
    assert bb.config.get("inferred_from") == "openai-layout"
    assert bb.model.token_embedding.weight.shape == state["token_embedding.weight"].shape
    assert torch.equal(bb.model.token_embedding.weight.cpu(), state["token_embedding.weight"])
    assert abs(bb.logit_scale - 100.0) < 0.1


# --- a reference run on disk ---------------------------------------------------------------------


def tokenizer():
    import open_clip

    return open_clip.tokenizer.SimpleTokenizer()


def make_run(
    root: Path,
    clip_state: dict[str, torch.Tensor],
    *,
    kind: str = "rank",
    B: int = 3,
    n: int = 4,
    t: int = 1,
    specific: bool = False,
    position: str = "tail",
    interpolation: str = "linear",
    init_context: str | None = None,
    num_context_tokens: int | None = None,
    init_rank_path: str | None = None,
    tune_text: bool = False,
    tune_image: bool = True,
    image_encoder_name: str = "ViT-B/16",
    seed: int = 0,
    write_config: bool = True,
    ckpt_name: str = "epoch=7-step=96.ckpt",
    num_ranks: int = R,
) -> tuple[Path, dict[str, torch.Tensor]]:
    """Write <root>/config.yaml and <root>/ckpts/<ckpt_name>; returns (run folder, state_dict)."""
    g = torch.Generator().manual_seed(seed)
    D = clip_state["token_embedding.weight"].shape[1]
    if init_context is not None:
        ids = tokenizer().encode(init_context.replace("_", " "))
        n = len(ids)
        ctx = clip_state["token_embedding.weight"][ids] + 0.3 * torch.randn(n, D, generator=g)
        if specific:
            ctx = ctx[None].repeat(R, 1, 1) + 0.3 * torch.randn(R, n, D, generator=g)
    else:
        ctx = torch.randn((R, n, D) if specific else (n, D), generator=g) * 0.5
    rows = B if kind == "rank" else num_ranks
    rank = torch.randn(rows, t, D, generator=g) * 0.5

    sd: dict[str, torch.Tensor] = {
        "module.prompt_learner.context_embeds": ctx,
        "module.prompt_learner.rank_embeds": rank,
        "module.logit_scale": clip_state["logit_scale"].clone(),
    }
    for k, v in clip_state.items():
        if k.startswith(TEXT_KEYS):
            sd[f"module.text_encoder.{k}"] = (v + 0.02 * torch.randn(v.shape, generator=g)) if tune_text else v.clone()
        elif k.startswith("visual."):
            sd[f"module.image_encoder.{k[len('visual.'):]}"] = (
                v + 0.05 * torch.randn(v.shape, generator=g) if tune_image else v.clone()
            )
    root.mkdir(parents=True, exist_ok=True)
    (root / "ckpts").mkdir(exist_ok=True)
    torch.save(
        {"epoch": 7, "global_step": 96, "pytorch-lightning_version": "1.6.4", "state_dict": sd,
         "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 7}}}}},
        root / "ckpts" / ckpt_name,
    )
    if write_config:
        config = {
            "runner_cfg": {
                "seed": 42,
                "output_dir": str(root),
                "model_cfg": {
                    "type": "OrdinalCLIP",
                    "prompt_learner_cfg": {
                        "type": "RankPromptLearner" if kind == "rank" else "PlainPromptLearner",
                        "num_ranks": num_ranks,
                        "num_base_ranks": B,
                        "num_tokens_per_rank": t,
                        "num_context_tokens": n if num_context_tokens is None else num_context_tokens,
                        "rank_tokens_position": position,
                        "init_rank_path": init_rank_path,
                        "init_context": init_context,
                        "rank_specific_context": specific,
                        "interpolation_type": interpolation,
                    },
                    "text_encoder_name": "ViT-B/16",
                    "image_encoder_name": image_encoder_name,
                },
            },
            "trainer_cfg": {"max_epochs": 100, "precision": 16},
        }
        (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root, sd


# --- the independent reference forward (§2), plain torch ops -------------------------------------


def reference_interpolation(num_ranks: int, num_base: int, kind: str) -> torch.Tensor:
    d = torch.arange(num_ranks)[:, None].repeat(1, num_base).float()
    base = torch.linspace(0, num_ranks - 1, 3)[1:2] if num_base == 1 else torch.linspace(0, num_ranks - 1, num_base)
    d = (d - base[None]).abs()
    f = {"linear": 1.0 - d / (num_ranks - 1), "inv_prop": 1.0 / (d + 1e-5), "normal": torch.exp(-d * d)}[kind]
    return f / f.sum(-1, keepdim=True)


def _layer_norm(x, w, b):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * w + b


def _text_transformer(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """CLIP's text transformer (pre-LN blocks, QuickGELU, causal mask) from raw weights; x: N x L x D."""
    N, L, D = x.shape
    heads = D // 64
    mask = torch.full((L, L), float("-inf")).triu(1)
    layers = sorted({int(k.split(".")[2]) for k in p if k.startswith("transformer.resblocks.")})
    for i in layers:
        w = {k[len(f"transformer.resblocks.{i}."):]: v for k, v in p.items() if k.startswith(f"transformer.resblocks.{i}.")}
        h = _layer_norm(x, w["ln_1.weight"], w["ln_1.bias"])
        q, k, v = (h @ w["attn.in_proj_weight"].T + w["attn.in_proj_bias"]).chunk(3, dim=-1)
        q, k, v = (z.reshape(N, L, heads, D // heads).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // heads) + mask, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(N, L, D)
        x = x + o @ w["attn.out_proj.weight"].T + w["attn.out_proj.bias"]
        h = _layer_norm(x, w["ln_2.weight"], w["ln_2.bias"])
        h = h @ w["mlp.c_fc.weight"].T + w["mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)
        x = x + h @ w["mlp.c_proj.weight"].T + w["mlp.c_proj.bias"]
    return x


def reference_prototypes(sd, token_embedding, *, kind, B, position, interpolation="linear", counts=None) -> torch.Tensor:
    """Normalised R x E prototypes exactly as the reference computes them (77-token sentences; a plain
    learner has one prototype per row of rank_embeds)."""
    tok = token_embedding.double()
    ctx = sd["module.prompt_learner.context_embeds"].double()
    rank = sd["module.prompt_learner.rank_embeds"].double()
    n, t = ctx.shape[-2], rank.shape[1]
    num = R if kind == "rank" else rank.shape[0]
    if ctx.dim() == 2:
        ctx = ctx[None].expand(num, -1, -1)
    if kind == "rank":
        rank = torch.sum(reference_interpolation(R, B, interpolation).double()[..., None, None] * rank[None], dim=1)
    counts = counts or [t] * num
    eot = torch.tensor([1 + n + c + 1 for c in counts])  # argmax of the pseudo sentence tokens
    rows = torch.arange(num)
    sentence = tok[PAD][None, None].repeat(num, CONTEXT_LENGTH, 1)
    sentence[:, 0] = tok[SOT]
    sentence[rows, eot] = tok[EOT]
    sentence[rows, eot - 1] = tok[PERIOD]
    for i in range(num):
        r = rank[i, : counts[i]]
        if position == "tail":
            body = torch.cat([ctx[i], r])
        elif position == "front":
            body = torch.cat([r, ctx[i]])
        else:
            half = n // 2
            body = torch.cat([ctx[i][:half], r, ctx[i][half:]])
        sentence[i, 1 : 1 + n + counts[i]] = body
    text = {k[len("module.text_encoder."):]: v.double() for k, v in sd.items() if k.startswith("module.text_encoder.")}
    x = sentence + text["positional_embedding"]
    x = _text_transformer(x, text)
    x = _layer_norm(x, text["ln_final.weight"], text["ln_final.bias"])
    feats = x[rows, eot] @ text["text_projection"]
    return F.normalize(feats, dim=-1).float()


def assert_prototypes_match(actual: torch.Tensor, expected: torch.Tensor, tol: float = 0.99999):
    cos = (F.normalize(actual.float(), dim=-1) * expected).sum(-1)
    assert cos.shape == (R,)
    assert float(cos.min()) >= tol, f"per-prototype cosine {cos.tolist()}"


# --- faithfulness ---------------------------------------------------------------------------------

CASES = {
    "rank-linear-tail": dict(kind="rank", B=3, n=4, t=1, interpolation="linear"),
    "rank-inv_prop-front": dict(kind="rank", B=4, n=3, t=2, interpolation="inv_prop", position="front"),
    "rank-linear-one-base": dict(kind="rank", B=1, n=2, t=1, interpolation="linear"),
    "rank-normal": dict(kind="rank", B=3, n=2, t=1, interpolation="normal"),
    "plain-tail": dict(kind="plain", n=3, t=2),
    "rank-specific-context": dict(kind="rank", B=3, n=3, t=1, specific=True, position="middle"),
    "init-context": dict(kind="rank", B=2, t=1, init_context="the_age_of_the_person_is", num_context_tokens=10),
    "middle-odd-n-tuned-text": dict(kind="plain", n=5, t=2, position="middle", tune_text=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_import_matches_reference_forward(case, clip_file, tmp_path):
    clip_path, clip_state = clip_file
    opts = CASES[case]
    run, sd = make_run(tmp_path / "run", clip_state, **opts)
    out = tmp_path / "imported.safetensors"
    result = import_reference_run(run_dir=run, clip_weights=clip_path, out=out)
    assert result.path == out.resolve()

    expected = reference_prototypes(
        sd, clip_state["token_embedding.weight"], kind=opts["kind"], B=opts.get("B", 3),
        position=opts.get("position", "tail"), interpolation=opts.get("interpolation", "linear"),
    )
    ckpt = load_checkpoint(out)
    assert_prototypes_match(ckpt.prototypes.matrix, expected)

    # The config reflects the tensors (n from init_context's token count, not num_context_tokens=10).
    cfg = ckpt.method_config
    assert cfg.method == canonical_name(opts["kind"]) and cfg.num_ranks == R
    assert cfg.num_context_tokens == sd["module.prompt_learner.context_embeds"].shape[-2]
    assert cfg.rank_specific_context == opts.get("specific", False)
    assert cfg.position == opts.get("position", "tail")
    if opts.get("init_context"):
        assert cfg.num_context_tokens != 10 and cfg.context_init == opts["init_context"]

    # Source metadata; the fine-tuned towers live in a combined backbone file next to the checkpoint.
    src = ckpt.meta["source"]
    assert src["reference_run"] == str(run.resolve()) and src["ckpt"].endswith("epoch=7-step=96.ckpt")
    assert (src["epoch"], src["global_step"]) == (7, 96)
    assert src["tuned"] == {"image_encoder": True, "text_encoder": opts.get("tune_text", False), "logit_scale": False}
    assert ckpt.backbone_spec == str(tmp_path / "imported.backbone.safetensors")
    assert Path(ckpt.backbone_spec).is_file()

    # Rebuilding the learner from the checkpoint on its backbone gives the same prototypes, padded or not.
    backbone = load_backbone(ckpt.backbone_spec)
    model = ckpt.build_model(backbone)
    with torch.no_grad():
        assert_prototypes_match(model(full_length=True).cpu(), expected)
        assert_prototypes_match(model(full_length=False).cpu(), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_import_on_cuda(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    run, sd = make_run(tmp_path / "run", clip_state, kind="rank", B=3, n=4, t=2, interpolation="inv_prop")
    import_reference_run(run_dir=run, clip_weights=clip_path, out=tmp_path / "cuda.safetensors", device="cuda")
    expected = reference_prototypes(sd, clip_state["token_embedding.weight"], kind="rank", B=3, position="tail",
                                    interpolation="inv_prop")
    assert_prototypes_match(load_checkpoint(tmp_path / "cuda.safetensors").prototypes.matrix, expected)


def test_reference_check_is_sensitive(clip_file, tmp_path):
    """The comparison would catch a wrong position, interpolation or text tower (guards the tests above)."""
    _, clip_state = clip_file
    _, sd = make_run(tmp_path / "run", clip_state, kind="rank", B=3, n=4, t=1, tune_text=True)
    tok = clip_state["token_embedding.weight"]
    right = reference_prototypes(sd, tok, kind="rank", B=3, position="tail")
    for wrong in (
        reference_prototypes(sd, tok, kind="rank", B=3, position="front"),
        reference_prototypes(sd, tok, kind="rank", B=3, position="tail", interpolation="inv_prop"),
        reference_prototypes({**sd, **{f"module.text_encoder.{k}": v for k, v in clip_state.items() if k.startswith(TEXT_KEYS)}},
                             tok, kind="rank", B=3, position="tail"),
    ):
        assert float((wrong * right).sum(-1).min()) < 0.999


def test_normal_interpolation_warns_where_the_reference_was_nan():
    from explorer.store.reference import method_config_from_reference

    cfg = {"type": "RankPromptLearner", "num_ranks": 101, "num_base_ranks": 3, "num_context_tokens": 4,
           "interpolation_type": "normal", "rank_tokens_position": "tail"}
    config, warns = method_config_from_reference(cfg, torch.zeros(4, 8), torch.zeros(3, 1, 8))
    assert config.interpolation == "normal" and config.num_base_ranks == 3
    assert any("58 of 101" in w for w in warns)  # method doc §2: R=101, B=3 gives 58 NaN prototypes


def test_plain_learner_with_rank_names_uses_per_rank_token_counts(clip_file, tmp_path):
    """init_rank_path (relative to the reference repo root) with names of different token counts."""
    clip_path, clip_state = clip_file
    names = ["baby", "toddler", "young child", "teen", "young adult", "adult", "middle aged adult", "senior", "very old person"]
    assert len(names) == R
    counts = [len(tokenizer().encode(x)) for x in names]
    assert len(set(counts)) > 1
    repo = tmp_path / "OrdinalCLIP"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "names.txt").write_text("\n".join(x.replace(" ", "_") for x in names) + "\n")
    run, sd = make_run(repo / "results" / "coop", clip_state, kind="plain", n=3, t=max(counts), init_rank_path="data/names.txt")
    out = tmp_path / "coop.safetensors"
    result = import_reference_run(run_dir=run, clip_weights=clip_path, out=out)
    assert result.config.rank_token_counts == counts and result.config.rank_names == names
    expected = reference_prototypes(sd, clip_state["token_embedding.weight"], kind="plain", B=3, position="tail", counts=counts)
    assert_prototypes_match(load_checkpoint(out).prototypes.matrix, expected)


def test_rank_learner_names_file_with_one_line_per_rank_is_a_warning(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    names = tmp_path / "ages.txt"
    names.write_text("\n".join(str(i) for i in range(R)) + "\n")
    run, sd = make_run(tmp_path / "run", clip_state, kind="rank", B=3, n=4, t=1, init_rank_path=str(names))
    out = tmp_path / "imported.safetensors"
    with pytest.warns(ReferenceImportWarning, match="known pitfall"):
        path = import_reference(run_dir=run, clip_weights=clip_path, out=out)
    ckpt = load_checkpoint(path)
    assert any("known pitfall" in w for w in ckpt.meta["source"]["warnings"])
    assert ckpt.method_config.rank_names is None
    expected = reference_prototypes(sd, clip_state["token_embedding.weight"], kind="rank", B=3, position="tail")
    assert_prototypes_match(ckpt.prototypes.matrix, expected)


def test_bare_ckpt_with_learner_flags(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    run, sd = make_run(tmp_path / "bare", clip_state, kind="rank", B=4, n=3, t=2, interpolation="inv_prop",
                       position="front", write_config=False)
    ckpt_file = next((run / "ckpts").glob("*.ckpt"))
    out = tmp_path / "bare.safetensors"
    overrides = {"method": "ordinalclip", "num_ranks": R, "interpolation": "inv_prop", "position": "front"}
    result = import_reference_run(ckpt=ckpt_file, clip_weights=clip_path, out=out, learner_overrides=overrides)
    assert result.config.num_base_ranks == 4 and result.config.num_tokens_per_rank == 2  # from the shapes
    expected = reference_prototypes(sd, clip_state["token_embedding.weight"], kind="rank", B=4, position="front",
                                    interpolation="inv_prop")
    ckpt = load_checkpoint(out)
    assert_prototypes_match(ckpt.prototypes.matrix, expected)
    assert ckpt.meta["source"]["reference_run"] is None
    assert [float(v) for v in ckpt.ranks.values] == list(range(R))

    # Without num_ranks a shared-context rank learner is ambiguous: a clear error, not a guess.
    with pytest.raises(ExplorerError, match="num_ranks"):
        import_reference(ckpt=ckpt_file, clip_weights=clip_path, out=tmp_path / "x.safetensors",
                         learner_overrides={"method": "ordinalclip"})


def test_untuned_run_uses_the_clip_file_as_backbone(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    run, _ = make_run(tmp_path / "run", clip_state, tune_image=False)
    out = tmp_path / "frozen.safetensors"
    result = import_reference_run(run_dir=run, clip_weights=clip_path, out=out)
    assert result.backbone_file is None and result.backbone_spec == str(clip_path.resolve())
    assert not (tmp_path / "frozen.backbone.safetensors").exists()
    ckpt = load_checkpoint(out, backbone=load_backbone(str(clip_path)))
    assert ckpt.backbone_spec == str(clip_path.resolve())


def test_prediction_uses_the_fine_tuned_image_encoder(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    run, sd = make_run(tmp_path / "run", clip_state, tune_image=True)
    out = tmp_path / "imported.safetensors"
    import_reference_run(run_dir=run, clip_weights=clip_path, out=out)
    ckpt = load_checkpoint(out)
    imported = load_backbone(ckpt.backbone_spec)
    ckpt.check_backbone(imported)
    plain = load_backbone(str(clip_path))

    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (80, 96, 3), dtype=np.uint8))
    f_imported = imported.encode_images([image])
    f_plain = plain.encode_images([image])
    assert float((f_imported * f_plain).sum()) < 0.999  # not CLIP's own visual tower

    tuned = tuned_clip(clip_state, sd)
    with torch.no_grad():
        f_tuned = F.normalize(tuned.encode_image(imported.preprocess(image)[None]), dim=-1)
    torch.testing.assert_close(f_imported, f_tuned, atol=1e-5, rtol=1e-5)

    pred = ckpt.prototypes.predict(f_imported)
    assert pred.probs.shape == (1, R) and abs(pred.probs.sum() - 1) < 1e-6


def test_checkpoint_choice_in_a_run_folder(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    run, _ = make_run(tmp_path / "run", clip_state, seed=1, ckpt_name="epoch=3.ckpt")
    make_run(run, clip_state, seed=2, ckpt_name="best-epoch=1-val_mae=2.9.ckpt", write_config=False)
    make_run(run, clip_state, seed=3, ckpt_name="last.ckpt", write_config=False)
    os.utime(run / "ckpts" / "last.ckpt", (2e9, 2e9))  # newest, but not 'best'
    result = import_reference_run(run_dir=run, clip_weights=clip_path, out=tmp_path / "a.safetensors")
    assert result.source["ckpt"].endswith("best-epoch=1-val_mae=2.9.ckpt")
    assert any("3 checkpoints" in w for w in result.warnings)
    result = import_reference_run(run_dir=run, ckpt="last.ckpt", clip_weights=clip_path, out=tmp_path / "b.safetensors")
    assert result.source["ckpt"].endswith("last.ckpt")


# --- refusals -------------------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def tuned_clip(clip_state, sd):
    """An independent open_clip demo CLIP with the run's fine-tuned image encoder (``module.image_encoder.*``)."""
    from open_clip.model import CLIP

    cfg = DEMO_CONFIG
    model = CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=True).eval()
    state = dict(clip_state)
    state.update({f"visual.{k[len('module.image_encoder.'):]}": v for k, v in sd.items() if k.startswith("module.image_encoder.")})
    model.load_state_dict(state)
    return model


def test_malicious_pickle_is_refused_without_running_it(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    run, sd = make_run(tmp_path / "run", clip_state)
    marker = tmp_path / "pwned"
    ckpt_file = run / "ckpts" / "epoch=7-step=96.ckpt"
    torch.save({"epoch": 1, "global_step": 2, "state_dict": sd, "hook": _Evil(marker)}, ckpt_file)

    with pytest.raises(ExplorerError, match="refused"):
        import_reference(run_dir=run, clip_weights=clip_path, out=tmp_path / "x.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "x.backbone.safetensors").exists()

    # The payload is real: an unrestricted load would have run it.
    other = tmp_path / "pwned-by-unsafe-load"
    torch.save({"hook": _Evil(other)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert other.exists()


def test_non_clip_image_encoder_is_refused(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    run, sd = make_run(tmp_path / "run", clip_state, image_encoder_name="vgg16")
    with pytest.raises(ExplorerError, match="only CLIP image encoders"):
        import_reference(run_dir=run, clip_weights=clip_path, out=tmp_path / "x.safetensors")

    # A bare .ckpt whose image encoder is a torchvision VGG: refused from its keys.
    vgg = {k: v for k, v in sd.items() if not k.startswith("module.image_encoder.")}
    vgg["module.image_encoder.features.0.weight"] = torch.zeros(64, 3, 3, 3)
    vgg["module.image_encoder.classifier.6.weight"] = torch.zeros(128, 4096)
    torch.save({"epoch": 0, "global_step": 0, "state_dict": vgg}, tmp_path / "vgg.ckpt")
    with pytest.raises(ExplorerError, match="only CLIP image encoders"):
        import_reference(ckpt=tmp_path / "vgg.ckpt", clip_weights=clip_path, out=tmp_path / "y.safetensors",
                         learner_overrides={"method": "ordinalclip", "num_ranks": R})


def test_missing_config_or_checkpoint_is_refused(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    out = tmp_path / "x.safetensors"
    run, _ = make_run(tmp_path / "run", clip_state, write_config=False)
    with pytest.raises(ExplorerError, match="no config.yaml"):
        import_reference(run_dir=run, clip_weights=clip_path, out=out)

    full, _ = make_run(tmp_path / "full", clip_state)
    empty = tmp_path / "empty"
    (empty / "ckpts").mkdir(parents=True)
    (empty / "config.yaml").write_text((full / "config.yaml").read_text())
    with pytest.raises(ExplorerError, match="no checkpoint"):
        import_reference(run_dir=empty, clip_weights=clip_path, out=out)

    # A CNN-baseline run (no prompt learner) is not importable.
    cfg = yaml.safe_load((full / "config.yaml").read_text())
    del cfg["runner_cfg"]["model_cfg"]["prompt_learner_cfg"]
    cfg["runner_cfg"]["model_cfg"]["type"] = "Baseline"
    (full / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ExplorerError, match="prompt_learner_cfg"):
        import_reference(run_dir=full, clip_weights=clip_path, out=out)
    assert not out.exists()


def test_shape_disagreements_are_refused(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    out = tmp_path / "x.safetensors"
    # rank_embeds has 3 base ranks but the config says 5.
    run, _ = make_run(tmp_path / "r1", clip_state, kind="rank", B=3)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["runner_cfg"]["model_cfg"]["prompt_learner_cfg"]["num_base_ranks"] = 5
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ExplorerError, match=r"num_base_ranks=5"):
        import_reference(run_dir=run, clip_weights=clip_path, out=out)
    assert not out.exists() and not (tmp_path / "x.backbone.safetensors").exists()

    # num_context_tokens contradicting the tensor (no init_context to explain it).
    run, _ = make_run(tmp_path / "r2", clip_state, n=4, num_context_tokens=6)
    with pytest.raises(ExplorerError, match="num_context_tokens=6"):
        import_reference(run_dir=run, clip_weights=clip_path, out=out)

    # rank_specific_context true in the config, shared context in the tensor.
    run, _ = make_run(tmp_path / "r3", clip_state)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["runner_cfg"]["model_cfg"]["prompt_learner_cfg"]["rank_specific_context"] = True
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ExplorerError, match="rank_specific_context"):
        import_reference(run_dir=run, clip_weights=clip_path, out=out)


def test_missing_state_dict_keys_are_refused(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    out = tmp_path / "x.safetensors"
    run, sd = make_run(tmp_path / "run", clip_state)
    ckpt_file = run / "ckpts" / "epoch=7-step=96.ckpt"
    for drop, message in (
        ("module.prompt_learner.rank_embeds", "rank_embeds"),
        ("module.text_encoder.ln_final.weight", "ln_final.weight"),
        ("module.logit_scale", "logit_scale"),
    ):
        torch.save({"epoch": 1, "global_step": 2, "state_dict": {k: v for k, v in sd.items() if k != drop}}, ckpt_file)
        with pytest.raises(ExplorerError, match=message):
            import_reference(run_dir=run, clip_weights=clip_path, out=out)
    torch.save({"epoch": 1, "global_step": 2, "state_dict": {k: v for k, v in sd.items() if not k.startswith("module.image_encoder.")}}, ckpt_file)
    with pytest.raises(ExplorerError, match="image_encoder"):
        import_reference(run_dir=run, clip_weights=clip_path, out=out)
    assert not out.exists()


# --- unsupported model types: refused in one sentence, nothing written ----------------------------


def _outputs(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def _set_model_type(run: Path, model_type) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    if model_type is None:
        del cfg["runner_cfg"]["model_cfg"]["type"]
    else:
        cfg["runner_cfg"]["model_cfg"]["type"] = model_type
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def _add_numclip_weights(ckpt_file: Path, sd: dict[str, torch.Tensor]) -> None:
    """Re-save the run's .ckpt with NumCLIP's image adapter and SSR regressor (method doc numclip §2)."""
    E = sd["module.text_encoder.text_projection"].shape[1]
    K = 5
    numclip = {
        "module.image_adapter.fc.0.weight": torch.randn(E // 4, E),
        "module.image_adapter.fc.2.weight": torch.randn(E, E // 4),
        "module.regressor.stage1_FC_after_PB.0.weight": torch.randn(2 * K, K),
        "module.regressor.stage1_FC_after_PB.0.bias": torch.zeros(2 * K),
        "module.regressor.stage1_delta_k.0.weight": torch.randn(K, 2 * K),
        "module.regressor.stage1_delta_k.0.bias": torch.zeros(K),
    }
    torch.save({"epoch": 7, "global_step": 96, "pytorch-lightning_version": "1.6.4", "state_dict": {**sd, **numclip}}, ckpt_file)


def test_numclip_run_with_a_rank_learner_is_refused_and_nothing_is_written(clip_file, tmp_path):
    """RegCLIPSSR runs are imported (tests/test_reference_numclip.py), but only with the reference's plain learner."""
    clip_path, clip_state = clip_file
    run, sd = make_run(tmp_path / "run", clip_state, kind="rank", B=5)
    _add_numclip_weights(run / "ckpts" / "epoch=7-step=96.ckpt", sd)
    _set_model_type(run, "RegCLIPSSR")
    out_dir = tmp_path / "out"
    with pytest.raises(ExplorerError, match=r"RegCLIPSSR run with prompt learner 'RankPromptLearner' is not the reference NumCLIP"):
        import_reference(run_dir=run, clip_weights=clip_path, out=out_dir / "x.safetensors")
    assert _outputs(out_dir) == []
    # The --ckpt path finds the run's config.yaml too.
    with pytest.raises(ExplorerError, match="RegCLIPSSR"):
        import_reference(ckpt=run / "ckpts" / "epoch=7-step=96.ckpt", clip_weights=clip_path, out=out_dir / "x.safetensors")
    assert _outputs(out_dir) == []


def test_numclip_weights_in_a_bare_ckpt_are_refused_not_dropped(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    run, sd = make_run(tmp_path / "bare", clip_state, kind="plain", write_config=False)
    ckpt_file = run / "ckpts" / "epoch=7-step=96.ckpt"
    _add_numclip_weights(ckpt_file, sd)
    out_dir = tmp_path / "out"
    with pytest.raises(ExplorerError, match=r"image_adapter\.\* and regressor\.\* weights .*NumCLIP.*--learner numclip"):
        import_reference(ckpt=ckpt_file, clip_weights=clip_path, out=out_dir / "x.safetensors",
                         learner_overrides={"method": "coop", "num_ranks": R})
    assert _outputs(out_dir) == []

    # Even when config.yaml claims OrdinalCLIP, the adapter / regressor weights are not dropped in silence.
    run, sd = make_run(tmp_path / "claims-ordinalclip", clip_state, kind="plain")
    ckpt_file = run / "ckpts" / "epoch=7-step=96.ckpt"
    _add_numclip_weights(ckpt_file, {k: v for k, v in sd.items() if not k.startswith("module.image_adapter")})
    with pytest.raises(ExplorerError, match="NumCLIP"):
        import_reference(run_dir=run, clip_weights=clip_path, out=out_dir / "x.safetensors")
    assert _outputs(out_dir) == []

    # Any other module OrdinalCLIP lacks is named.
    torch.save({"epoch": 1, "global_step": 2, "state_dict": {**sd, "module.head.weight": torch.zeros(3, 3)}}, ckpt_file)
    with pytest.raises(ExplorerError, match=r"module\.head"):
        import_reference(run_dir=run, clip_weights=clip_path, out=out_dir / "x.safetensors")
    assert _outputs(out_dir) == []


@pytest.mark.parametrize("model_type", ["CoOpRegression", None])
def test_other_model_types_are_refused_by_name(model_type, clip_file, tmp_path):
    clip_path, clip_state = clip_file
    run, _ = make_run(tmp_path / "run", clip_state)
    _set_model_type(run, model_type)
    out_dir = tmp_path / "out"
    expected = "model type 'CoOpRegression'" if model_type else "no runner_cfg.model_cfg.type"
    with pytest.raises(ExplorerError, match=rf"{expected}; only OrdinalCLIP / RegCLIPSSR runs can be imported"):
        import_reference(run_dir=run, clip_weights=clip_path, out=out_dir / "x.safetensors")
    assert _outputs(out_dir) == []


# --- damaged files and unexpected failures -------------------------------------------------------


def test_damaged_checkpoints_are_user_errors(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    run, _ = make_run(tmp_path / "run", clip_state)
    ckpt_file = run / "ckpts" / "epoch=7-step=96.ckpt"
    data = ckpt_file.read_bytes()
    out_dir = tmp_path / "out"
    for content, message in (
        (data[: len(data) // 2], "truncated or damaged"),
        (b"", "it is empty"),
        (b"epoch: 7\nthis is a text file\n", "neither a zip archive nor a pickle"),
    ):
        ckpt_file.write_bytes(content)
        with pytest.raises(ExplorerError, match=message):
            import_reference(run_dir=run, clip_weights=clip_path, out=out_dir / "x.safetensors")
    assert _outputs(out_dir) == []


def test_unexpected_load_failures_propagate(clip_file, tmp_path, monkeypatch):
    """Only problems the user can fix are ExplorerErrors; a bug keeps its own type and traceback."""
    from explorer.store.reference import read_lightning_checkpoint

    _, clip_state = clip_file
    run, _ = make_run(tmp_path / "run", clip_state)
    ckpt_file = run / "ckpts" / "epoch=7-step=96.ckpt"
    for error in (ValueError("boom"), RuntimeError("CUDA error: something unexpected"), MemoryError()):
        def failing_load(*args, _error=error, **kwargs):
            raise _error

        monkeypatch.setattr(torch, "load", failing_load)
        with pytest.raises(type(error)) as info:
            read_lightning_checkpoint(ckpt_file)
        assert not isinstance(info.value, ExplorerError)


def test_backbone_file_is_written_atomically_and_shareable(clip_file, tmp_path):
    clip_path, clip_state = clip_file
    run, _ = make_run(tmp_path / "run", clip_state)
    out_dir = tmp_path / "out"
    result = import_reference_run(run_dir=run, clip_weights=clip_path, out=out_dir / "x.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert result.backbone_file is not None
    assert (result.backbone_file.stat().st_mode & 0o777) == (0o666 & ~umask)
    assert _outputs(out_dir) == ["x.backbone.safetensors", "x.safetensors"]  # no temporaries left behind
