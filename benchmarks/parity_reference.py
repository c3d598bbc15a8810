"""Numerical parity of muva with the MUVA authors' released code (github.com/RikoLi/MUVA).

    .venv/bin/python benchmarks/parity_reference.py --reference /path/to/MUVA     # both presets
    .venv/bin/python benchmarks/parity_reference.py --reference /path/to/MUVA --config ma2ms --batch 8 --seed 0

``--reference`` is a local checkout of the authors' repository, imported from there at run time
(none of its code is in this repository; it needs ``einops``, ``yacs``, ``ftfy``, ``regex``,
``torchvision``).  In this process only, ``.cuda()`` becomes a no-op, its CLIP download a build
from our state dict (float32), and ``model.clip`` (absent from the release; clip_pat's tokenizer
stands in) and, if not installed, ``matplotlib`` are stubbed.

Per config (``ma2ms``: ``muva_ma2ms.yml`` ↔ ``configs/muva/market_to_msmt.yaml``; ``ms2ma``:
``muva_ms2ma.yml`` ↔ ``configs/muva/msmt_to_market.yaml``) both models are built on the CPU from one
random OpenAI-layout ViT-B/16 state dict; the reference's new random modules (part tokens and their
position rows, mask predictors, prompt contexts, classifier, BN neck) are copied into muva by a
name map.  Inputs: 16 random 256×128 images (4 identities × 4), pseudo masks of row bands (one part
of one batch sample empty), a training batch of ``--batch``.  The reference's training computations
(``engine/coop_trainers.py``) are replayed with its own modules, losses and schedulers (float32, no
autocast) and compared with muva's: features with pseudo and predicted masks before and after the
BN neck, text features, stage-1 centroids, loss and prompt gradient, every layer's predicted masks
(and differing gate decisions), the stage-2 memory, each loss term, the gradients of the total,
BN-neck running statistics after one step, every epoch's learning rate, and the few settings no
number depends on.

``max rel`` = max |muva − reference| / max |reference| (per element for learning rates).  A row
fails above ``--tol`` (1e-5) or when a gate decision differs (red); gradients have their own
``--grad-tol`` (1e-4): in float32 the worst parameter's gradient differs by ~1.4e-5 relative (a
backbone LayerNorm weight) — rounding amplified by the memory loss's temperature of 0.01 and the
unnormalised i2t logits; replayed in float64, every row, gradients included, agrees to 5e-14.
Exit status 1 if any row fails, 0 if none, 2 when the reference or a package is missing.  About 1.5–2.5 minutes per config on 2 CPU
cores.  Nothing in CI runs this script.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import logging
import math
import re
import sys
import tempfile
import time
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"ma2ms": ("muva_ma2ms.yml", "market_to_msmt.yaml"), "ms2ma": ("muva_ms2ma.yml", "msmt_to_market.yaml")}
NUM_IDS, PER_ID = 4, 4
REF_PACKAGES = ("model", "losses", "engine", "configs", "utils")
MASK_MAP = {"ln_q": "ln_attn1", "ln_kv": "ln_attn2", "q_proj": "cross_attn.to_q", "k_proj": "cross_attn.to_k",
            "v_proj": "cross_attn.to_v", "out_proj": "cross_attn.to_out.0", "ln_mlp": "ln_mlp", "mlp": "mlp"}
TEXT_KEYS = ("transformer", "positional_embedding", "ln_final", "text_projection")


class SetupError(Exception):
    """Something the script needs is missing: one line, exit status 2."""


@dataclass
class Row:
    name: str
    abs: float
    rel: float
    detail: str = ""
    ok: bool = True


def compare(name, ref, got, tol, detail="", elementwise=False, fail=False) -> Row:
    ref, got = torch.as_tensor(ref).detach().double(), torch.as_tensor(got).detach().double()
    if ref.shape != got.shape:
        return Row(name, math.nan, math.nan, f"shapes differ: {tuple(ref.shape)} vs {tuple(got.shape)}", False)
    d, scale = (got - ref).abs(), ref.abs()
    if elementwise:
        rel = float((d / scale.clamp_min(1e-30)).max())
    else:
        rel = float(d.max() / scale.max()) if float(scale.max()) > 0 else (0.0 if float(d.max()) == 0 else math.inf)
    return Row(name, float(d.max()), rel, detail, rel <= tol and not fail)


def error_row(name: str, detail: str) -> Row:
    return Row(name, math.nan, math.nan, detail, False)


def set_mode(c, train: bool) -> None:
    c.R.train(train)
    c.M.train(train)


# ----------------------------------------------------------------------------- the reference
def load_reference(root: Path) -> types.SimpleNamespace:
    """Import the reference's modules from ``root`` (with the patches of the module docstring)."""
    if not (root / "model" / "visual_language_encoder.py").is_file():
        raise SetupError(f"no MUVA reference checkout at {root} (model/visual_language_encoder.py is missing); "
                         "clone https://github.com/RikoLi/MUVA and pass its folder with --reference")
    missing = [m for m in ("einops", "yacs", "ftfy", "regex", "torchvision") if importlib.util.find_spec(m) is None]
    if missing:
        raise SetupError(f"the reference code needs the package(s) {', '.join(missing)}: pip install {' '.join(missing)}")
    clash = [n for n in REF_PACKAGES if n in sys.modules and not str(getattr(sys.modules[n], "__file__", "")).startswith(str(root))]
    if clash:
        raise SetupError(f"modules named {', '.join(clash)} are already imported and would shadow the reference's")
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    try:
        import matplotlib.pyplot  # noqa: F401  (engine/utils.py imports it; nothing we call uses it)
    except ImportError:
        mpl, plt = types.ModuleType("matplotlib"), types.ModuleType("matplotlib.pyplot")
        mpl.pyplot = plt
        sys.modules.update({"matplotlib": mpl, "matplotlib.pyplot": plt})
    # model/utils.py imports model.clip; its ``clip`` reaches the prompt learner through ``import *``
    # and only tokenizes there: clip_pat's module (the same BPE tokenizer) stands in
    stub = sys.modules["model.clip"] = types.ModuleType("model.clip")
    sys.path.insert(0, str(root))
    try:
        clip_model = importlib.import_module("model.clip_pat.model")
        clip_model.convert_weights = lambda m: None
        stub.clip = importlib.import_module("model.clip_pat.clip")
        mods = {k: importlib.import_module(v) for k, v in (
            ("vle", "model.visual_language_encoder"), ("configs", "configs"), ("mask_loss", "losses.mask_loss"),
            ("cm", "losses.cm"), ("ce", "losses.ce_loss"), ("eutils", "engine.utils"), ("sched", "engine.solvers.schedulers"))}
    except ImportError as exc:
        top = (exc.name or "").split(".")[0]
        hint = f"is {root} a complete checkout?" if top in REF_PACKAGES else f"it needs the package {top} (pip install {top})"
        raise SetupError(f"importing the reference failed ({exc}): {hint}") from None
    return types.SimpleNamespace(root=root, clip_model=clip_model, **mods)


def build_reference(ref, yml: str, state_dict: dict):
    cfg = ref.configs.cfg.clone()
    cfg.merge_from_file(str(ref.root / "configs" / "muva-full-model" / yml))
    cfg.freeze()
    ref.vle.load_clip_to_cpu_pat = lambda name, h, w, stride, attn_mask=None: ref.clip_model.build_model(
        {k: v.clone() for k, v in state_dict.items()}, h, w, stride, attn_mask=attn_mask)
    with contextlib.redirect_stdout(io.StringIO()):  # its position-embedding resize prints
        model = ref.vle.MUVA(cfg, NUM_IDS, 0, 0)
    return model.float(), cfg


def random_clip_state(seed: int) -> dict:
    """A random open_clip ViT-B/16 in OpenAI's key layout, with the metadata entries of OpenAI's file."""
    import open_clip

    torch.manual_seed(seed)
    logging.disable(logging.WARNING)  # "no pretrained weights loaded": intended
    sd = open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True).state_dict()
    logging.disable(logging.NOTSET)
    sd = {k: v.detach().float().clone() for k, v in sd.items()}
    sd.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    return sd


# ----------------------------------------------------------------------------- name map
def ref_name(name: str) -> str | None:
    """The reference tensor holding muva's ``name`` (the rows of :func:`ref_rows`)."""
    if name.startswith("visual.vit."):
        return "image_encoder." + name[len("visual.vit."):]
    m = re.fullmatch(r"visual\.mask_predictors\.(\d+)\.([a-z_]+)(\..+)", name)
    if m:
        return f"residual_mask_predictor.blocks.{m[1]}.{MASK_MAP[m[2]]}{m[3]}" if m[2] in MASK_MAP else None
    if name.startswith(("classifier.", "neck.bn.")):
        return name.replace("classifier.", "", 1).replace("neck.bn.", "bnneck.", 1)
    if name.startswith("text.") and name.split(".")[1] in TEXT_KEYS:
        return "text_encoder." + name[len("text."):]
    return {"visual.part_tokens": "local_token", "visual.part_pos_embed": "image_encoder.positional_embedding",
            "prompts.ctx": "prompt_learner.learnable_ctx"}.get(name)


def ref_rows(name: str, r: int, n_patches: int):
    """Rows of the reference's [CLS, parts, grid] position embedding held by muva's tensor ``name``."""
    if name == "visual.vit.positional_embedding":
        return torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(1 + r, 1 + r + n_patches)])
    return torch.arange(1, 1 + r) if name == "visual.part_pos_embed" else None


def pair_tensors(M, R) -> tuple[list, Row]:
    """(muva name, muva tensor, reference name, row selector) of every mapped tensor, and a coverage row."""
    ref_t = dict(R.named_parameters()) | dict(R.named_buffers())
    pairs, problems, covered = [], [], {}
    for name, t in list(M.named_parameters()) + list(M.named_buffers()):
        rn = ref_name(name)
        if rn not in ref_t:
            if t.requires_grad or rn is not None:
                problems.append(f"muva {name} has no reference counterpart")
            continue
        get = (lambda x, rows=ref_rows(name, M.num_parts, M.num_patches): x if rows is None else x[rows])
        if get(ref_t[rn]).shape != t.shape:
            problems.append(f"{name} {tuple(t.shape)} vs reference {rn} {tuple(get(ref_t[rn]).shape)}")
            continue
        covered[rn] = covered.get(rn, 0) + t.numel()
        pairs.append((name, t, rn, get))
    problems += [f"reference {rn} is not (fully) mapped" for rn, p in R.named_parameters()
                 if p.requires_grad and not rn.startswith("text_encoder.") and covered.get(rn, 0) != p.numel()]
    detail = f"{len(pairs)} tensors mapped" + (f"; {len(problems)} problem(s): " + "; ".join(problems[:4]) if problems else "")
    return pairs, Row("parameter map (names, shapes)", math.nan, math.nan, detail, not problems)


def make_inputs(seed: int, r: int, grid: tuple[int, int], size: tuple[int, int], batch: int):
    """Images, labels, bool pseudo masks (row bands, one empty part), the reference's additive masks, batch indices."""
    g = torch.Generator().manual_seed(seed + 2)
    n, (rows, cols) = NUM_IDS * PER_ID, grid
    images = torch.randn(n, 3, *size, generator=g)
    labels = torch.arange(NUM_IDS).repeat_interleave(PER_ID)
    masks = torch.zeros(n, r, rows, cols, dtype=torch.bool)
    for i in range(n):
        edges = [0, *sorted(torch.randint(1, rows, (r - 1,), generator=g).tolist()), rows]
        for k in range(r):  # band k overlaps the band above by one row
            masks[i, k, max(edges[k] - 1, 0):edges[k + 1]] = True
    idx = torch.randperm(n, generator=g)[:batch].sort().values
    masks[idx[0], 0] = False  # a part the grounding expert did not find
    masks = masks.flatten(2)
    return images, labels, masks, torch.zeros(masks.shape).masked_fill(~masks, float("-inf")), idx


# ----------------------------------------------------------------------------- checks
def settings(c) -> list[Row]:
    """Settings that no number below depends on (or that explain a failing one)."""
    rc, s1, s2 = c.rcfg, c.mcfg.stage1, c.mcfg.stage2
    r1, r2, mp = rc.SOLVER.STAGE1, rc.SOLVER.STAGE2, "mask_predictor"
    items = [
        ("mask-predictor heads", rc.MGD.RMP_NUM_HEADS, c.mcfg.model.mask_heads),
        ("pixel mean, std", (rc.INPUT.PIXEL_MEAN, rc.INPUT.PIXEL_STD), (c.mcfg.model.mean, c.mcfg.model.std)),
        ("batch, images per identity", (r2.IMS_PER_BATCH, rc.DATALOADER.NUM_INSTANCE), (c.mcfg.data.batch_size, c.mcfg.data.num_instances)),
        ("optimizers, weight decay (stages 1, 2)", (r1.OPTIMIZER_NAME.lower(), r2.OPTIMIZER_NAME.lower(), r1.WEIGHT_DECAY, r2.WEIGHT_DECAY),
         (s1.optim.name, s2.optim.name, s1.optim.weight_decay, s2.optim.weight_decay)),
        ("mask-predictor lr ×, weight decay", (rc.MGD.RMP_LR_MULT, 0.0),
         (s2.optim.lr_mult.get(mp, 1.0), 0.0 if mp in s2.optim.no_weight_decay else s2.optim.weight_decay)),
    ]

    def same(a, b):
        if isinstance(a, (list, tuple)):
            return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same, a, b))
        return math.isclose(a, b, rel_tol=1e-9) if isinstance(a, float) and isinstance(b, (int, float)) else a == b

    fmt = lambda v: ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)  # noqa: E731
    return [Row(f"setting: {k}", math.nan, math.nan, f"reference {fmt(a)} · muva {fmt(b)}", same(a, b)) for k, a, b in items]


def stage1(c, rows) -> None:
    from muva.engine.features import pseudo_mask_features
    from muva.engine.stage1 import identity_centroids
    from muva.losses import PromptCentroidLoss

    R, M, tol = c.R, c.M, c.tol
    set_mode(c, False)
    with torch.no_grad():
        f_ref = R.infer_image(c.images, gt_mask=c.additive, after_bn=False)
        f_mu = pseudo_mask_features(M, {"image": c.images, "mask": c.masks})
    rows.append(compare("stage 1: pre-BN features, pseudo masks (eval)", f_ref, f_mu, tol))
    cent_ref = c.ref.eutils.compute_cluster_centroids(f_ref, c.labels)
    cent_mu = identity_centroids(f_mu, c.labels, NUM_IDS, normalize_first=c.mcfg.stage1.normalize_before_mean)
    rows.append(compare("stage 1: identity centroids", cent_ref, cent_mu, tol))
    y = c.labels[c.idx]
    set_mode(c, True)
    text_ref = F.normalize(R(label=y, get_text=True), dim=1)
    loss_ref = F.cross_entropy(text_ref @ cent_ref.t() / c.rcfg.PCL.CLUSTER_NCE_TEMP, y)
    uniq, inv = torch.unique(y, return_inverse=True)  # as muva's stage-1 step
    loss_mu = PromptCentroidLoss(c.mcfg.stage1.temperature)(M.encode_text(uniq)[inv], cent_mu, y)
    rows.append(compare("stage 1: prompt loss", loss_ref, loss_mu, tol))
    loss_ref.backward()
    loss_mu.backward()
    rows.append(compare("stage 1: prompt-context gradient", R.prompt_learner.learnable_ctx.grad, M.prompts.ctx.grad, tol))
    R.zero_grad(set_to_none=True)
    M.zero_grad(set_to_none=True)


def stage2(c, rows) -> None:
    from muva.engine.features import test_features
    from muva.engine.stage2 import Stage2Losses
    from muva.models.masking import part_patch_gate

    R, M, rc, mc, tol, ref = c.R, c.M, c.rcfg, c.mcfg, c.tol, c.ref
    set_mode(c, False)
    with torch.no_grad():  # text prototypes and the memory, as at the start of stage 2 / of its first epoch
        text_ref = R.infer_text(torch.arange(NUM_IDS))
        text_mu = M.text_features(progress=False).detach().float()
        rows.append(compare("text features, every identity", text_ref, text_mu, tol))
        bn_ref = F.normalize(R.infer_image(c.images, gt_mask=c.additive, after_bn=True).float(), dim=1)
        pseudo = getattr(mc.stage2, "memory_masks", "predicted") == "pseudo"
        f_mu = test_features(use_pseudo_masks=pseudo)(M, {"image": c.images, "mask": c.masks})
    memory = ref.cm.ClusterMemoryAMP(temp=rc.PCL.MEMORY_TEMP, momentum=rc.PCL.MEMORY_MOMENTUM, use_hard=rc.PCL.HARD_MEMORY_UPDATE)
    memory.features = ref.eutils.compute_cluster_centroids(bn_ref, c.labels)
    losses = Stage2Losses(mc.stage2, NUM_IDS, M.feature_dim, text_mu, has_parts=True, mask_temperature=mc.model.mask_temperature)
    losses.memory.rebuild(f_mu, c.labels)
    rows.append(compare("stage 2: memory (rebuilt from eval features)", memory.features, losses.memory.memory, tol))

    # one training step as train_coop_stage2_memory: predicted masks drive the attention
    x, y, m, add = c.images[c.idx], c.labels[c.idx], c.masks[c.idx], c.additive[c.idx]
    set_mode(c, True)
    logit, proj, probs, logits = R(img=x, label=y, gt_mask=None, get_image=True)
    norm = F.normalize if rc.MODEL.NORM_I2TCE else (lambda t, dim: t)
    i2t = norm(proj, dim=1) @ norm(text_ref, dim=1).t() / rc.MODEL.I2TCE_TAU
    xent = ref.ce.CrossEntropyLabelSmooth(NUM_IDS)
    bce, dice = ref.mask_loss.MaskLoss(rc.MGD.MASK_LOSS_TYPE)(probs, logits, add)
    r_terms = {"id": xent(logit, y) * rc.MODEL.ID_LOSS_WEIGHT,
               "imp": memory(F.normalize(R.bnneck(proj), dim=1), y) * rc.MODEL.PCL_LOSS_WEIGHT,  # its second BN call
               "i2t": xent(i2t, y) * rc.MODEL.I2TCE_LOSS_WEIGHT, "mask": (bce + dice) * rc.MODEL.MASK_LOSS_WEIGHT}
    out = M(x)
    m_terms = losses(out, {"pid": y, "mask": m})
    comp = losses.mask.components(out["mask_logits"], m.float())

    probs_mu = M.visual.mask_probabilities(out["mask_logits"])
    if len(probs_mu) != len(probs):
        rows.append(error_row("stage 2: predicted masks", f"{len(probs_mu)} layers vs {len(probs)}"))
    for k, (pr, pm, lm) in enumerate(zip(probs, probs_mu, out["mask_logits"])):
        gate = part_patch_gate(lm, gating=mc.model.mask_gating, temperature=mc.model.mask_temperature,
                               threshold=mc.model.mask_threshold) == 0
        flips = int(((pr > rc.MGD.MASK_GATING_THRESH) != gate).sum())
        rows.append(compare(f"stage 2: predicted mask, layer {k + 1}", pr, pm, tol,
                            f"{flips}/{pr.numel()} gate decisions differ", fail=flips > 0))
    for label, key in (("id (ce)", "id"), ("imp (pcl)", "imp"), ("i2t (i2tce)", "i2t"), ("mask (bce+dice)", "mask")):
        rows.append(compare(f"stage 2 loss: {label}", r_terms[key], m_terms[key], tol) if key in m_terms
                    else error_row(f"stage 2 loss: {label}", "muva computes no such term"))
    rows.append(compare("stage 2 loss: mask BCE", bce, comp["bce"], tol))
    rows.append(compare("stage 2 loss: Dice", dice, comp["dice"], tol))
    r_total, m_total = sum(r_terms.values()), sum(m_terms.values())
    rows.append(compare("stage 2 loss: total", r_total, m_total, tol, f"reference {r_total.item():.6g}"))

    r_total.backward()
    m_total.backward()
    grads, problems = [], []
    for name, t, rn, get in c.pairs:
        rp = c.ref_params.get(rn)
        if not isinstance(t, torch.nn.Parameter) or rp is None or (t.grad is None and rp.grad is None):
            continue
        if t.grad is None or rp.grad is None:
            problems.append(f"{name}: gradient only in {'muva' if rp.grad is None else 'the reference'}")
        else:
            grads.append(compare(name, get(rp.grad), t.grad, c.grad_tol))
    worst = max(grads, key=lambda r: r.rel)
    rows.append(Row("stage 2: gradients of the total (worst parameter)", worst.abs, worst.rel,
                    "; ".join([f"{len(grads)} parameters, worst {worst.name}", *problems[:3]]), worst.ok and not problems))
    rows.append(compare("stage 2: memory after the step's update", memory.features, losses.memory.memory, tol))
    rows.append(compare("BN neck running mean after the step", R.bnneck.running_mean, M.neck.bn.running_mean, tol))
    rows.append(compare("BN neck running var after the step", R.bnneck.running_var, M.neck.bn.running_var, tol))

    set_mode(c, False)
    with torch.no_grad():  # test features: predicted masks, the BN statistics of the step
        pre_ref = R.infer_image(c.images, gt_mask=None, after_bn=False)
        post_ref = R.infer_image(c.images, gt_mask=None, after_bn=True)
        out = M(c.images)
    rows.append(compare("test: pre-BN features, predicted masks (eval)", pre_ref, out["features"], tol))
    rows.append(compare("test: post-BN features (eval-mode BN)", post_ref, out["bn_features"], tol))


def schedules(c, rows) -> None:
    from muva.engine.schedulers import scheduler_from_config

    r1, r2, sched = c.rcfg.SOLVER.STAGE1, c.rcfg.SOLVER.STAGE2, c.ref.sched

    def curve(make, base_lr, epochs, step):  # the lr each 0-based epoch trains at
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
        s = make(opt)
        return [step(s, e) or opt.param_groups[0]["lr"] for e in range(epochs)]

    ref_step = lambda s, e: s.step(e + 1)  # noqa: E731  (the reference: step(epoch), 1-based, before each epoch)
    refs = (curve(lambda o: sched.create_cosine_scheduler(o, r1.MAX_EPOCHS, r1.LR_MIN, r1.WARMUP_LR_INIT, r1.WARMUP_EPOCHS),
                  r1.BASE_LR, r1.MAX_EPOCHS, ref_step),
            curve(lambda o: sched.WarmupMultiStepLR(o, r2.STEPS, r2.GAMMA, r2.WARMUP_FACTOR, r2.WARMUP_ITERS, r2.WARMUP_METHOD),
                  r2.BASE_LR, r2.MAX_EPOCHS, ref_step))
    for label, r, st in zip(("stage 1", "stage 2"), refs, (c.mcfg.stage1, c.mcfg.stage2)):
        m = curve(lambda o: scheduler_from_config(o, st.schedule, st.epochs), st.optim.lr, st.epochs,
                  lambda s, e: s.on_iteration(e, 0, 1))
        if len(r) != len(m):
            rows.append(error_row(f"{label} lr, every epoch", f"{len(m)} epochs vs {len(r)}"))
            continue
        i = max(range(len(r)), key=lambda i: abs(m[i] - r[i]) / r[i])
        rows.append(compare(f"{label} lr, every epoch ({len(r)})", r, m, c.tol,
                            f"worst epoch {i + 1}: reference {r[i]:.4g}, muva {m[i]:.4g}", elementwise=True))


# ----------------------------------------------------------------------------- driver
def run_config(name: str, ref, weights: Path, state_dict: dict, args):
    from muva.engine.config import load_experiment
    from muva.models import build_model

    yml, preset = CONFIGS[name]
    preset_path = REPO / "configs" / "muva" / preset
    if not preset_path.is_file():
        raise SetupError(f"muva preset {preset_path} not found")
    torch.manual_seed(args.seed + 1)
    R, rcfg = build_reference(ref, yml, state_dict)
    mcfg = load_experiment(str(preset_path), [f"model.pretrained={weights}"])
    M = build_model(mcfg.model, NUM_IDS).float()
    c = types.SimpleNamespace(ref=ref, R=R, M=M, rcfg=rcfg, mcfg=mcfg, tol=args.tol, grad_tol=args.grad_tol,
                              ref_params=dict(R.named_parameters()))
    own_pos = R.image_encoder.positional_embedding[ref_rows("visual.vit.positional_embedding", M.num_parts, M.num_patches)]
    rows = settings(c) + [compare("pos-embed 14×14 → 16×8 of each loader", own_pos, M.visual.vit.positional_embedding, args.tol)]
    c.pairs, map_row = pair_tensors(M, R)
    rows.append(map_row)
    ref_t = dict(R.named_parameters()) | dict(R.named_buffers())
    with torch.no_grad():
        for _, t, rn, get in c.pairs:
            t.copy_(get(ref_t[rn]))
    c.images, c.labels, c.masks, c.additive, c.idx = make_inputs(args.seed, M.num_parts, M.grid, M.input_size, args.batch)
    for title, section in (("stage 1", stage1), ("stage 2", stage2), ("schedules", schedules)):
        try:
            section(c, rows)
        except Exception as exc:  # noqa: BLE001 - e.g. a muva API that changed: a failing row, not a crash
            rows.append(error_row(f"{title}: not computed", f"{type(exc).__name__}: {exc}"[:300]))
    return rows


def render(console, title: str, rows: list[Row]) -> bool:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("check", "max |Δ|", "max rel", "detail", ""):
        table.add_column(col, justify="right" if col.startswith("max") else "left")
    num = lambda v: "" if math.isnan(v) else f"{v:.2e}"  # noqa: E731
    for r in rows:
        table.add_row(r.name, num(r.abs), num(r.rel), r.detail, "ok" if r.ok else "FAIL", style=None if r.ok else "red")
    bad = sum(not r.ok for r in rows)
    console.print(table, f"[{'red' if bad else 'green'}]{len(rows) - bad}/{len(rows)} rows pass[/]\n")
    return bad == 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", required=True, type=Path, help="checkout of github.com/RikoLi/MUVA")
    p.add_argument("--config", choices=("ma2ms", "ms2ma", "both"), default="both")
    p.add_argument("--batch", type=int, default=8, help=f"training-step batch (2..{NUM_IDS * PER_ID})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-5, help="largest relative difference that passes")
    p.add_argument("--grad-tol", type=float, default=1e-4,
                   help="the same for gradients (float32 rounding reaches ~1.5e-5 there: see the module docstring)")
    args = p.parse_args(argv)
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 150)
    try:
        if not 2 <= args.batch <= NUM_IDS * PER_ID:
            raise SetupError(f"--batch must lie in 2..{NUM_IDS * PER_ID}")
        torch.set_num_threads(2)
        # the reference steps its schedulers with step(epoch) and no optimizer step: torch warns about both
        warnings.filterwarnings("ignore", message="(Detected call of `lr_scheduler.step|The epoch parameter)", category=UserWarning)
        ref = load_reference(args.reference.expanduser().resolve())
        state_dict = random_clip_state(args.seed)
        passed = True
        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / "ViT-B-16-random.pt"
            torch.save(state_dict, weights)
            for name in ("ma2ms", "ms2ma") if args.config == "both" else (args.config,):
                t0 = time.perf_counter()
                rows = run_config(name, ref, weights, state_dict, args)
                title = (f"{name}: {CONFIGS[name][0]} ↔ configs/muva/{CONFIGS[name][1]} "
                         f"(tolerance {args.tol:g}, gradients {args.grad_tol:g}, {time.perf_counter() - t0:.0f} s)")
                passed &= render(console, title, rows)
    except SetupError as exc:
        console.print(f"[red]parity_reference: {exc}[/]")
        return 2
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
