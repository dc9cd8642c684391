"""The PS3 encoder around any timm ``VisionTransformer`` without prefix tokens.

Follows ``NVlabs/PS3:ps3/modeling_ps3.py`` (``PS3VisionEncoder``): a low-resolution pass over
the whole image keeps every layer's hidden states and keys/values; a small head turns
hidden states of a few layers into per-scale selection maps scored against a prompt
(top-down) or a learned prior prompt (bottom-up); the most salient high-resolution patches
are embedded (only those patches are read) with per-scale positional embeddings and run
through the same blocks, their queries attending to ``[low-res cache ; own keys/values]``.

Unlike the reference, which swaps timm's block, patch-embed and pooling classes and
monkey-patches the trunk, the blocks here are executed functionally on the unchanged timm
weights (``attend_with_cache``), so a stock ``timm.create_model(...)`` ViT is hosted as is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from trainforge_ps3_vision.selection import (
    map_to_grid,
    rescale_budget,
    selection_budget,
    selection_logits_to_probs,
    topk_select,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PS3Config:
    """PS3 knobs with the paper's defaults (``NVlabs/PS3:ps3/configuration_ps3.py`` unless
    noted).

    ``scales``: square side lengths, lowest first; scale 0 is the low-res global view
    (``ps3_scales`` = [378, 756, 1512] for PS3-1.5K, [378, 756, 1512, 3780] for PS3-4K).
    ``max_select``: high-res tokens per look (``max_select_num``: the class default is 1280,
    the training configs ``train/src/open_clip/model_configs/PS3-*.json`` and the README use
    2560, the value pinned here). ``select_layers``: hidden states concatenated for the
    selection head (``select_based_on_layer`` = [0, 9, 18, 26] for 27 blocks; ``None`` picks
    ``(0, d//3, 2d//3, d-1)``, which gives exactly that for d = 27). ``logit_scale`` and
    ``logit_clamp``: x5 and +-10 of ``_calculate_select_probs``. ``separate_pos_emb``: the
    zero-initialised per-scale positional residual. ``highres_cue``: the shallow conv net
    on the image at ``cue_size`` (default ``4 * scales[0]`` = 1512) with a stem of kernel
    ``cue_kernel`` (default ``2 * patch`` = 28), width ``cue_hidden`` / ``cue_out`` = 512 and
    ``cue_depth`` = 3 ConvNeXt blocks (``highres_selection_module_*``). ``prompt_dim``: when
    set, ``encode``'s ``prompt`` is a text embedding of this width (from any text encoder)
    and goes through ``prompt_proj``, the reference's ``Mlp(text width -> C -> C)`` with
    LayerNorm applied to the L2-normalised embedding (``ps3/modeling_ps3_text.py``,
    ``train/src/open_clip/model.py``); ``None`` (default) takes prompts already of the
    trunk's width.
    """

    scales: tuple[int, ...] = (378, 756, 1512)
    max_select: int = 2560
    select_layers: tuple[int, ...] | None = None
    logit_scale: float = 5.0
    logit_clamp: float = 10.0
    separate_pos_emb: bool = True
    highres_cue: bool = True
    cue_size: int | None = None
    cue_kernel: int | None = None
    cue_hidden: int = 512
    cue_out: int = 512
    cue_depth: int = 3
    prompt_dim: int | None = None

    def __post_init__(self) -> None:
        scales = tuple(self.scales)
        if len(scales) < 2:
            raise ValueError(f"scales must hold >= 2 sizes (low-res + high-res), got {scales}")
        if any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in scales):
            raise ValueError(f"scales must be positive ints, got {scales}")
        if list(scales) != sorted(set(scales)):
            raise ValueError(f"scales must be strictly increasing, got {scales}")
        if any(s % scales[0] for s in scales[1:]):
            raise ValueError(
                f"every scale must be a multiple of scales[0]={scales[0]}, got {scales}"
            )
        if isinstance(self.max_select, bool) or not isinstance(self.max_select, int):
            raise TypeError(f"max_select must be an int, got {self.max_select!r}")
        if self.max_select < len(scales) - 1:
            raise ValueError(
                f"max_select must be >= the number of high-res scales, got {self.max_select}"
            )
        if self.logit_scale <= 0 or self.logit_clamp <= 0:
            raise ValueError(
                "logit_scale and logit_clamp must be > 0, got "
                f"{self.logit_scale}, {self.logit_clamp}"
            )
        if self.prompt_dim is not None and (
            isinstance(self.prompt_dim, bool)
            or not isinstance(self.prompt_dim, int)
            or self.prompt_dim <= 0
        ):
            raise ValueError(f"prompt_dim must be a positive int or None, got {self.prompt_dim!r}")
        object.__setattr__(self, "scales", scales)


@dataclass
class PS3Output:
    """What :meth:`PS3Encoder.encode` returns.

    ``tokens`` (B, N_low + N_sel, C): the low-res tokens, then the selected high-res tokens in
    raster order per scale (as the reference's ``last_hidden_state``); ``positions``
    (B, N, 3) long: (scale index, row, col) of each token on its scale's patch grid (scale 0
    is the low-res grid). ``selection_maps``: per high-res scale, a (B, h, w) bool map of the
    patches encoded (all looks together). ``selection_probs``: the maps the selection used;
    ``prior_probs`` / ``posterior_probs``: bottom-up and (with a prompt) top-down maps, with
    gradients, for :func:`box_supervision_loss`. ``prompt``: the (B, C) prompt the top-down
    map was scored against (after ``prompt_proj`` when the config has a ``prompt_dim``), or
    ``None`` for bottom-up selection.
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    selection_maps: list[torch.Tensor]
    selection_probs: list[torch.Tensor]
    prior_probs: list[torch.Tensor]
    posterior_probs: list[torch.Tensor] | None
    num_low_res: int
    looks: int
    grids: list[tuple[int, int]] = field(default_factory=list)
    prompt: torch.Tensor | None = None

    @property
    def low_res_tokens(self) -> torch.Tensor:
        return self.tokens[:, : self.num_low_res]

    @property
    def high_res_tokens(self) -> torch.Tensor:
        return self.tokens[:, self.num_low_res :]

    @property
    def high_res_positions(self) -> torch.Tensor:
        return self.positions[:, self.num_low_res :]


# -- functional pieces -------------------------------------------------------------------
def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Interpolation runs in float32 at least (as the reference), float64 stays float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def scale_pos_embed(
    pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Resample an absolute positional embedding (1, h*w, C) to ``new_grid``: bicubic with
    antialiasing to the square of the longer side, then crop (the reference's
    ``resample_abs_pos_embed`` variant in ``NVlabs/PS3:ps3/modeling_ps3.py``)."""
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    c = pos_embed.shape[-1]
    grid = _upcast(pos_embed.reshape(1, old_grid[0], old_grid[1], c).permute(0, 3, 1, 2))
    side = max(new_grid)
    grid = F.interpolate(grid, size=(side, side), mode="bicubic", antialias=True)
    grid = grid[:, :, : new_grid[0], : new_grid[1]]
    return grid.permute(0, 2, 3, 1).reshape(1, -1, c).to(pos_embed.dtype)


def _patch_size(patch_embed: nn.Module) -> int:
    return int(patch_embed.proj.kernel_size[0])


def full_patch_embed(patch_embed: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """timm ``PatchEmbed`` on the whole image, (B, h*w, C) in raster order."""
    x = patch_embed.proj(image).flatten(2).transpose(1, 2)
    return patch_embed.norm(x)


def selected_patch_embed(
    patch_embed: nn.Module, image: torch.Tensor, index: torch.Tensor
) -> torch.Tensor:
    """Embed only the patches at raster ``index`` (B, n) of ``image`` (B, 3, H, W).

    The image is viewed as a (B, h, w, 3, p, p) grid without copying and only the selected
    patches are gathered, then multiplied by the conv weight as a matrix: equal to the full
    conv patch embedding followed by a gather, without the full high-res patchify
    (``SelectedPatchEmbed.selected_proj`` in the reference unfolds the whole image first).
    """
    if image.dim() != 4:
        raise ValueError(f"image must be (B, C, H, W), got shape {tuple(image.shape)}")
    if index.dim() != 2 or index.shape[0] != image.shape[0]:
        raise ValueError(
            f"index must be (B, n) with B={image.shape[0]}, got shape {tuple(index.shape)}"
        )
    p = _patch_size(patch_embed)
    b, c, h, w = image.shape
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
    gh, gw = h // p, w // p
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= gh * gw):
        raise ValueError(
            f"index must lie in [0, {gh * gw}), got [{int(index.min())}, {int(index.max())}]"
        )
    grid = image.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)  # a view
    rows, cols = index // gw, index % gw
    batch = torch.arange(b, device=image.device).unsqueeze(1)
    patches = grid[batch, rows, cols].reshape(b, index.shape[1], c * p * p)
    weight = patch_embed.proj.weight.reshape(patch_embed.proj.out_channels, -1)
    out = patches @ weight.t()
    if patch_embed.proj.bias is not None:
        out = out + patch_embed.proj.bias
    return patch_embed.norm(out)


def attend_with_cache(
    block: nn.Module,
    x: torch.Tensor,
    kv: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run a timm ``Block`` on ``x`` with queries from ``x`` only and keys/values
    ``[kv ; own]``; returns ``(out, own_k, own_v)`` (k, v as (B, heads, N, head_dim)).

    With ``kv=None`` this is exactly ``block(x)``. ``Attention_w_KVCache`` in
    ``NVlabs/PS3:ps3/modeling_ps3.py`` does the same by replacing timm's attention class.
    """
    attn = block.attn
    h = block.norm1(x)
    b, n, _ = h.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    attn_dim = getattr(attn, "attn_dim", heads * head_dim)
    qkv = attn.qkv(h).reshape(b, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    if kv is not None:
        keys, values = torch.cat([kv[0], k], dim=2), torch.cat([kv[1], v], dim=2)
    else:
        keys, values = k, v
    drop = attn.attn_drop.p if attn.training else 0.0
    o = F.scaled_dot_product_attention(q, keys, values, dropout_p=drop)
    o = o.transpose(1, 2).reshape(b, n, attn_dim)
    o = getattr(attn, "norm", nn.Identity())(o)
    gate = getattr(attn, "gate", None)
    if gate is not None:
        o = o * gate(h).sigmoid()
    o = attn.proj_drop(attn.proj(o))
    x = x + block.drop_path1(block.ls1(o))
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, k, v


class ShallowConvNet(nn.Module):
    """The optional high-res selection cue: a patchify stem (conv k=s=``kernel`` + LayerNorm2d),
    ``depth`` ConvNeXt k7 blocks and a 1x1 projection (``ShallowConvNet`` in the reference)."""

    def __init__(self, kernel: int, hidden: int, out: int, depth: int) -> None:
        super().__init__()
        from timm.layers import LayerNorm2d
        from timm.models.convnext import ConvNeXtBlock

        self.stem = nn.Sequential(nn.Conv2d(3, hidden, kernel, stride=kernel), LayerNorm2d(hidden))
        self.blocks = nn.Sequential(
            *[ConvNeXtBlock(in_chs=hidden, out_chs=hidden, kernel_size=7) for _ in range(depth)]
        )
        self.out_proj = nn.Conv2d(hidden, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.blocks(self.stem(x)))


def _check_trunk(trunk: nn.Module) -> None:
    for attr in ("patch_embed", "blocks", "pos_embed", "norm_pre"):
        if not hasattr(trunk, attr):
            raise TypeError(
                f"trunk must be a timm VisionTransformer (missing .{attr}), "
                f"got {type(trunk).__name__}"
            )
    prefix = int(getattr(trunk, "num_prefix_tokens", 0))
    if prefix:
        raise ValueError(
            f"trunk has {prefix} prefix token(s) (class/register tokens); PS3 cannot host them "
            "(the reference asserts num_prefix_tokens == 0): build the ViT with "
            "class_token=False, reg_tokens=0 and global_pool='map' or 'avg'"
        )
    if trunk.pos_embed is None:
        raise ValueError(
            "trunk has no absolute pos_embed (pos_embed=None); PS3 needs one per scale"
        )
    if not isinstance(getattr(trunk, "patch_drop", nn.Identity()), nn.Identity):
        raise ValueError("trunk uses patch dropout; PS3 needs patch_drop_rate=0 (as the reference)")
    proj = getattr(trunk.patch_embed, "proj", None)
    if (
        not isinstance(proj, nn.Conv2d)
        or proj.kernel_size[0] != proj.kernel_size[1]
        or tuple(proj.stride) != tuple(proj.kernel_size)
        or tuple(proj.padding) != (0, 0)
    ):
        raise TypeError("trunk.patch_embed.proj must be a square, non-overlapping Conv2d patchify")
    for i, blk in enumerate(trunk.blocks):
        attn = getattr(blk, "attn", None)
        needed = ("norm1", "norm2", "mlp", "ls1", "ls2", "drop_path1", "drop_path2")
        if attn is None or not hasattr(attn, "qkv") or any(not hasattr(blk, a) for a in needed):
            raise TypeError(
                f"trunk.blocks[{i}] ({type(blk).__name__}) is not a timm pre-norm Block with a "
                "fused qkv Attention; PS3 runs those functionally"
            )
        if getattr(attn, "rope", None) is not None or "Rope" in type(attn).__name__:
            raise TypeError(f"trunk.blocks[{i}] uses rotary attention, which PS3 does not host")


class PS3Encoder(nn.Module):
    """PS3 around a timm ViT ``trunk`` (left unchanged; its weights are shared by all scales).

    Adds the selection head (``selection_feature_proj``, ``prior_prompt``), the per-scale
    positional residuals (``pos_emb_residual``) and optionally the high-res cue. Build it
    with :func:`apply_ps3` or directly.
    """

    def __init__(self, trunk: nn.Module, config: PS3Config | None = None) -> None:
        super().__init__()
        config = PS3Config() if config is None else config
        if not isinstance(config, PS3Config):
            raise TypeError(f"config must be a PS3Config, got {type(config).__name__}")
        if not isinstance(trunk, nn.Module):
            raise TypeError(f"trunk must be a timm VisionTransformer, got {type(trunk).__name__}")
        _check_trunk(trunk)
        self.trunk = trunk
        self.config = config
        self.patch = _patch_size(trunk.patch_embed)
        self.width = int(trunk.pos_embed.shape[-1])
        bad = [s for s in config.scales if s % self.patch]
        if bad:
            raise ValueError(f"scales {bad} are not divisible by the patch size {self.patch}")
        depth = len(trunk.blocks)
        layers = config.select_layers
        if layers is None:
            layers = tuple(sorted({0, depth // 3, 2 * depth // 3, depth - 1}))
        if any(not -depth <= i < depth for i in layers) or not layers:
            raise ValueError(f"select_layers must index the {depth} blocks, got {layers}")
        self.select_layers = tuple(i % depth for i in layers)
        n_high = len(config.scales) - 1
        pos_n = int(trunk.pos_embed.shape[1])
        side = math.isqrt(pos_n)
        grid = tuple(getattr(trunk.patch_embed, "grid_size", (side, side)))
        if grid[0] * grid[1] != pos_n:
            raise ValueError(f"trunk.pos_embed has {pos_n} entries, not a {grid} grid")
        self.pos_grid = (int(grid[0]), int(grid[1]))

        from timm.layers import Mlp

        c, nl = self.width, len(self.select_layers)
        self.selection_feature_proj = Mlp(
            in_features=c * nl,
            hidden_features=c * nl,
            out_features=c * n_high,
            norm_layer=nn.LayerNorm,
        )
        self.prior_prompt = nn.Parameter(torch.randn(c))
        if config.separate_pos_emb:
            self.pos_emb_residual = nn.ParameterList(
                [nn.Parameter(torch.zeros(1, (s // self.patch) ** 2, c)) for s in config.scales[1:]]
            )
        else:
            self.pos_emb_residual = None
        if config.highres_cue:
            kernel = config.cue_kernel or 2 * self.patch
            self.cue_size = config.cue_size or 4 * config.scales[0]
            if self.cue_size % kernel:
                raise ValueError(
                    f"cue_size {self.cue_size} is not divisible by cue_kernel {kernel}"
                )
            self.highres_cue = ShallowConvNet(
                kernel, config.cue_hidden, config.cue_out, config.cue_depth
            )
            self.prompt_proj_for_highres = nn.Linear(c, config.cue_out * n_high)
        else:
            self.highres_cue = None
            self.prompt_proj_for_highres = None
        if config.prompt_dim is not None:
            # NVlabs/PS3:train/src/open_clip/model.py prompt_proj (text width -> C -> C)
            self.prompt_proj = Mlp(
                in_features=config.prompt_dim,
                hidden_features=c,
                out_features=c,
                norm_layer=nn.LayerNorm,
            )
        else:
            self.prompt_proj = None
        logger.info(
            "PS3 around %s: %d blocks, width %d, patch %d, scales %s, select layers %s, "
            "%d selection parameters added",
            type(trunk).__name__,
            depth,
            c,
            self.patch,
            config.scales,
            self.select_layers,
            sum(p.numel() for n, p in self.named_parameters() if not n.startswith("trunk.")),
        )

    # -- sizes ---------------------------------------------------------------------------
    def scale_size(self, height: int, width: int, i: int) -> tuple[int, int]:
        """Image size at scale ``i``: square at scale 0; otherwise the longer side is
        ``scales[i]`` and the shorter keeps the aspect ratio on the patch grid
        (``image_size_scale_i`` in the reference)."""
        s0, p = self.config.scales[0], self.patch
        if i == 0:
            return (s0, s0)
        zoom = self.config.scales[i] // s0
        if height >= width:
            return (s0 * zoom, max(int(s0 / height * width) // p, 1) * p * zoom)
        return (max(int(s0 / width * height) // p, 1) * p * zoom, s0 * zoom)

    def grid_size(self, height: int, width: int, i: int) -> tuple[int, int]:
        h, w = self.scale_size(height, width, i)
        return (h // self.patch, w // self.patch)

    def _resize(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(image.shape[-2:]) == tuple(size):
            return image
        return F.interpolate(_upcast(image), size=size, mode="bicubic").to(image.dtype)

    # -- selection -----------------------------------------------------------------------
    def _probs(
        self,
        feats: torch.Tensor,
        cue: torch.Tensor | None,
        prompt: torch.Tensor,
        grids: list[tuple[int, int]],
    ) -> list[torch.Tensor]:
        # _calculate_select_probs: cosine to the prompt per scale, optional high-res cue
        # averaged in after adaptive max pooling, x5, clamp, sigmoid; then the FIRST scale's
        # map is used for every scale, nearest-upsampled to each grid.
        cos = (F.normalize(feats, dim=2) * F.normalize(prompt, dim=-1)[:, None, :, None, None]).sum(
            2
        )
        if cue is not None:
            hp = self.prompt_proj_for_highres(prompt).view(prompt.shape[0], len(grids), -1)
            hcos = (
                F.normalize(cue, dim=1).unsqueeze(1) * F.normalize(hp, dim=-1)[..., None, None]
            ).sum(2)
            cos = (cos + F.adaptive_max_pool2d(hcos, cos.shape[-2:])) / 2
        probs = selection_logits_to_probs(cos, self.config.logit_scale, self.config.logit_clamp)
        first = probs[:, :1]
        return [F.interpolate(first, size=g, mode="nearest").squeeze(1) for g in grids]

    def project_prompt(self, text_emb: torch.Tensor) -> torch.Tensor:
        """Map text embeddings (B, prompt_dim) or (prompt_dim,) from any text encoder to
        selection prompts (B, C): ``prompt_proj(normalize(text_emb))`` as the reference.
        Needs a config with ``prompt_dim``."""
        if self.prompt_proj is None:
            raise ValueError(
                "project_prompt needs PS3Config(prompt_dim=...) (the text embedding width); "
                "this encoder takes prompts of the trunk's width directly"
            )
        d = self.config.prompt_dim
        if not isinstance(text_emb, torch.Tensor):
            raise TypeError(
                f"text_emb must be a tensor of width {d}, got {type(text_emb).__name__}"
            )
        x = text_emb.unsqueeze(0) if text_emb.dim() == 1 else text_emb
        if x.dim() != 2 or x.shape[-1] != d or not x.is_floating_point():
            raise ValueError(
                f"text_emb must be float (B, {d}) or ({d},) (PS3Config.prompt_dim), got "
                f"shape {tuple(text_emb.shape)} dtype {text_emb.dtype}"
            )
        return self.prompt_proj(F.normalize(x, dim=-1))

    def _check_prompt(self, prompt: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if prompt is None:
            return None
        d = self.config.prompt_dim or self.width
        what = "PS3Config.prompt_dim, a text embedding" if self.prompt_proj else "the trunk's width"
        if not isinstance(prompt, torch.Tensor):
            raise TypeError(f"prompt must be a tensor of width {d}, got {type(prompt).__name__}")
        if prompt.dim() == 1:
            prompt = prompt.unsqueeze(0).expand(batch, -1)
        if prompt.dim() != 2 or prompt.shape[-1] != d:
            raise ValueError(
                f"prompt must be (B, {d}) or ({d},) ({what}), got shape {tuple(prompt.shape)}"
            )
        if prompt.shape[0] != batch:
            raise ValueError(f"prompt has batch {prompt.shape[0]} but image has batch {batch}")
        if self.prompt_proj is not None:
            prompt = self.project_prompt(prompt)
        return prompt

    def _check_image(self, image: torch.Tensor) -> None:
        if not isinstance(image, torch.Tensor):
            raise TypeError(
                f"image must be a (B, 3, H, W) float tensor, got {type(image).__name__}"
            )
        in_chans = self.trunk.patch_embed.proj.in_channels
        if image.dim() != 4 or image.shape[1] != in_chans or not image.is_floating_point():
            raise ValueError(
                f"image must be a float (B, {in_chans}, H, W) tensor, "
                f"got {tuple(image.shape)} {image.dtype}"
            )
        h, w = image.shape[-2:]
        if h % self.patch or w % self.patch:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the patch size {self.patch}; pad or "
                "resize it to a multiple"
            )

    def resolve_budget(self, budget: int | float | str, available: int) -> int:
        """``budget``: an int number of high-res tokens in [1, available], a float fraction
        in (0, 1] of the high-res patches, or ``"all"``."""
        if isinstance(budget, str):
            if budget != "all":
                raise ValueError(
                    f"budget must be an int, a fraction in (0, 1] or 'all', got {budget!r}"
                )
            return available
        if isinstance(budget, bool) or not isinstance(budget, int | float):
            raise TypeError(f"budget must be an int, a fraction in (0, 1] or 'all', got {budget!r}")
        if isinstance(budget, float):
            if not 0.0 < budget <= 1.0:
                raise ValueError(
                    f"a float budget is a fraction and must lie in (0, 1], got {budget}"
                )
            budget = max(1, round(budget * available))
        if budget <= 0:
            raise ValueError(f"budget must be >= 1 high-res token, got {budget}")
        if budget > available:
            raise ValueError(
                f"budget {budget} exceeds the {available} high-res patches available at scales "
                f"{self.config.scales[1:]}"
            )
        return int(budget)

    # -- passes --------------------------------------------------------------------------
    def _pos(self, grid: tuple[int, int]) -> torch.Tensor:
        return scale_pos_embed(self.trunk.pos_embed, self.pos_grid, grid)

    def forward_low_res(
        self, image: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
        """The global pass: every block's output and its keys/values (the low-res cache)."""
        s0 = self.config.scales[0]
        img = self._resize(image, (s0, s0))
        g = s0 // self.patch
        x = full_patch_embed(self.trunk.patch_embed, img) + self._pos((g, g))
        x = self.trunk.norm_pre(self.trunk.pos_drop(x))
        hidden, cache = [], []
        for blk in self.trunk.blocks:
            x, k, v = attend_with_cache(blk, x)
            hidden.append(x)
            cache.append((k, v))
        return hidden, cache

    def tokenize_high_res(
        self, image: torch.Tensor, maps: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed the selected patches of every scale; returns tokens and (scale, row, col)."""
        b = image.shape[0]
        h, w = image.shape[-2:]
        tokens, positions = [], []
        for k, m in enumerate(maps):
            n = int(m[0].sum())
            if n == 0:
                continue
            grid = self.grid_size(h, w, k + 1)
            idx = m.reshape(b, -1).nonzero()[:, 1].view(b, n)  # raster order
            img = self._resize(image, self.scale_size(h, w, k + 1))
            x = selected_patch_embed(self.trunk.patch_embed, img, idx)
            x = self.trunk.pos_drop(x + self._pos(grid).squeeze(0)[idx])
            if self.pos_emb_residual is not None:  # added after the base pos-embed (reference)
                full = self.config.scales[k + 1] // self.patch
                res = self.pos_emb_residual[k].view(full, full, -1)[: grid[0], : grid[1]]
                x = x + res.reshape(-1, self.width)[idx]
            tokens.append(x)
            rc = torch.stack([torch.full_like(idx, k + 1), idx // grid[1], idx % grid[1]], dim=-1)
            positions.append(rc)
        return torch.cat(tokens, dim=1), torch.cat(positions, dim=1)

    def forward_high_res(
        self, tokens: torch.Tensor, cache: Sequence[tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        """One look: high-res queries attend to ``[low-res cache ; own keys/values]``."""
        x = self.trunk.norm_pre(tokens)
        for blk, kv in zip(self.trunk.blocks, cache, strict=True):
            x, _, _ = attend_with_cache(blk, x, kv)
        return x

    def encode(
        self,
        image: torch.Tensor,
        budget: int | float | str = "all",
        prompt: torch.Tensor | None = None,
        gt_map: torch.Tensor | None = None,
        select: str = "saliency",
        generator: torch.Generator | None = None,
    ) -> PS3Output:
        """Encode ``image`` (B, 3, H, W) with ``budget`` high-res tokens chosen by saliency.

        ``prompt`` (B, C) or (C,): top-down selection; without it the learned prior prompt
        (bottom-up) scores the patches. With ``PS3Config.prompt_dim`` set, ``prompt`` is a
        text embedding of that width and passes through ``prompt_proj`` first.
        ``gt_map`` (B, H, W): pixels forced in (the reference's pre-training
        ``gt_selection_maps``: probability 1 inside the boxes).
        A budget above ``max_select`` runs several looks of at most ``max_select`` tokens on
        not-yet-selected patches; looks do not attend to each other. ``select="random"`` is
        an ablation (not in the paper's method): patches drawn uniformly at random (from
        ``generator``) under the same budget split; the prior and posterior maps still come back.
        """
        if select not in ("saliency", "random"):
            raise ValueError(f"select must be 'saliency' or 'random', got {select!r}")
        self._check_image(image)
        b, _, h, w = image.shape
        prompt = self._check_prompt(prompt, b)
        n_high = len(self.config.scales) - 1
        grids = [self.grid_size(h, w, i + 1) for i in range(n_high)]
        available = sum(gh * gw for gh, gw in grids)
        total = self.resolve_budget(budget, available)

        hidden, cache = self.forward_low_res(image)
        g0 = self.config.scales[0] // self.patch
        feats = torch.cat([hidden[i] for i in self.select_layers], dim=-1)
        feats = self.selection_feature_proj(feats).view(b, g0, g0, n_high, self.width)
        feats = feats.permute(0, 3, 4, 1, 2)  # B, scales, C, g0, g0
        cue = None
        if self.highres_cue is not None:
            cue = self.highres_cue(self._resize(image, (self.cue_size, self.cue_size)))
        prior = self._probs(feats, cue, self.prior_prompt.unsqueeze(0).expand(b, -1), grids)
        posterior = self._probs(feats, cue, prompt, grids) if prompt is not None else None
        probs = posterior if posterior is not None else prior
        if gt_map is not None:
            if gt_map.shape != (b, h, w):
                raise ValueError(
                    f"gt_map must be (B, H, W) = {(b, h, w)}, got {tuple(gt_map.shape)}"
                )
            g1 = map_to_grid(gt_map, grids[0])
            forced = [
                F.interpolate(g1.unsqueeze(1), size=g, mode="nearest").squeeze(1) for g in grids
            ]
            probs = [
                torch.where(f > 0, torch.ones_like(p), p)
                for f, p in zip(forced, probs, strict=True)
            ]

        if select == "random":
            probs = [
                torch.rand(p.shape, generator=generator, device="cpu").to(p.device) for p in probs
            ]
        # NVlabs/PS3 forward: ceil(total / max_select) looks; all but the last take the full
        # per-look split, the last the rescaled remainder.
        per_look = selection_budget(self.config.scales, self.config.max_select)
        looks = math.ceil(total / self.config.max_select)
        last = total - (looks - 1) * self.config.max_select
        taken = [torch.zeros(b, *g, dtype=torch.bool, device=image.device) for g in grids]
        outs, poss = [], []
        for look in range(looks):
            split = per_look if look < looks - 1 else rescale_budget(per_look, last)
            maps = topk_select(probs, split, exclude=taken if look else None)
            toks, pos = self.tokenize_high_res(image, maps)
            outs.append(self.forward_high_res(toks, cache))
            poss.append(pos)
            taken = [t | m for t, m in zip(taken, maps, strict=True)]
        high = torch.cat(outs, dim=1)
        pos = torch.cat(poss, dim=1)
        if looks > 1:  # raster order per scale over all looks (aggregate_features)
            offsets = torch.tensor([0] + [gh * gw for gh, gw in grids], device=image.device).cumsum(
                0
            )
            widths = torch.tensor([1] + [gw for _, gw in grids], device=image.device)
            key = offsets[pos[..., 0] - 1] + pos[..., 1] * widths[pos[..., 0]] + pos[..., 2]
            order = key.argsort(dim=1)
            high = high.gather(1, order.unsqueeze(-1).expand_as(high))
            pos = pos.gather(1, order.unsqueeze(-1).expand_as(pos))
        low_idx = torch.arange(g0 * g0, device=image.device)
        low_pos = torch.stack([torch.zeros_like(low_idx), low_idx // g0, low_idx % g0], -1)
        low_pos = low_pos.unsqueeze(0).expand(b, -1, -1)
        return PS3Output(
            tokens=torch.cat([hidden[-1], high], dim=1),
            positions=torch.cat([low_pos, pos], dim=1),
            selection_maps=taken,
            selection_probs=probs,
            prior_probs=prior,
            posterior_probs=posterior,
            num_low_res=g0 * g0,
            looks=looks,
            grids=grids,
            prompt=prompt,
        )

    def forward(
        self,
        image: torch.Tensor,
        budget: int | float | str = "all",
        prompt: torch.Tensor | None = None,
        gt_map: torch.Tensor | None = None,
        select: str = "saliency",
        generator: torch.Generator | None = None,
    ) -> PS3Output:
        return self.encode(image, budget, prompt, gt_map, select, generator)

    # -- pooling -------------------------------------------------------------------------
    def pool(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The trunk's final norm and pooling head over ``tokens`` (B, N, C); ``mask`` (B, N)
        restricts pooling to some tokens (rows with none left pool every token, as the
        reference's ``forward_attn_pool_with_mask``). MAP head (``global_pool='map'``) or mean."""
        x = self.trunk.norm(tokens)
        if mask is not None:
            if mask.shape != tokens.shape[:2]:
                raise ValueError(
                    f"mask must be (B, N) = {tuple(tokens.shape[:2])}, got {tuple(mask.shape)}"
                )
            mask = mask.bool()
            mask = mask | ~mask.any(dim=1, keepdim=True)
        ap = getattr(self.trunk, "attn_pool", None)
        if ap is None:
            if mask is None:
                return x.mean(1)
            m = mask.to(x.dtype).unsqueeze(-1)
            return (x * m).sum(1) / m.sum(1)
        b, n, c = x.shape
        if ap.pos_embed is not None:
            x = x + ap.pos_embed.unsqueeze(0).to(x.dtype)
        q = ap.q(ap.latent.expand(b, -1, -1)).reshape(b, ap.latent_len, ap.num_heads, ap.head_dim)
        q = q.transpose(1, 2)
        k, v = ap.kv(x).reshape(b, n, 2, ap.num_heads, ap.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = ap.q_norm(q), ap.k_norm(k)
        attn_mask = None if mask is None else mask.view(b, 1, 1, n)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        o = ap.proj_drop(ap.proj(o.transpose(1, 2).reshape(b, ap.latent_len, c)))
        if getattr(ap, "mlp", None) is not None:
            o = o + ap.mlp(ap.norm(o))
        return o[:, 0] if ap.pool == "token" else o.mean(1)

    def box_pool(self, out: PS3Output, gt_map: torch.Tensor) -> torch.Tensor:
        """Pool the high-res tokens lying in the box map ``gt_map`` (B, H, W) (the reference's
        ``pool_gt_token_only``: the box is area-downsampled to each scale's grid)."""
        b = out.tokens.shape[0]
        if gt_map.dim() != 3 or gt_map.shape[0] != b:
            raise ValueError(f"gt_map must be (B, H, W) with B={b}, got {tuple(gt_map.shape)}")
        pos = out.high_res_positions
        inside = torch.zeros(pos.shape[:2], dtype=torch.bool, device=pos.device)
        for k, g in enumerate(out.grids):
            gm = map_to_grid(gt_map, g).bool()
            sel = pos[..., 0] == k + 1
            r = pos[..., 1].clamp(max=g[0] - 1)
            c = pos[..., 2].clamp(max=g[1] - 1)
            hit = gm[torch.arange(b, device=pos.device).unsqueeze(1), r, c]
            inside |= sel & hit
        return self.pool(out.high_res_tokens, inside)

    def feature_maps(self, out: PS3Output) -> list[torch.Tensor]:
        """Scatter tokens into zero-filled (B, C, h, w) maps, one per scale (low-res first)
        (``format_features_into_feature_maps``)."""
        b, _, c = out.tokens.shape
        g0 = self.config.scales[0] // self.patch
        maps = []
        for k, g in enumerate([(g0, g0), *out.grids]):
            m = out.tokens.new_zeros(b, g[0] * g[1], c)
            sel = out.positions[..., 0] == k
            cnt = int(sel[0].sum())
            if cnt:
                idx = (out.positions[..., 1] * g[1] + out.positions[..., 2])[sel].view(b, cnt)
                m.scatter_(1, idx.unsqueeze(-1).expand(-1, -1, c), out.tokens[sel].view(b, cnt, c))
            maps.append(m.view(b, g[0], g[1], c).permute(0, 3, 1, 2))
        return maps

    def selection_parameters(self) -> list[nn.Parameter]:
        """Parameters of the selection head (what the box-supervision loss trains)."""
        mods = [
            self.selection_feature_proj,
            self.highres_cue,
            self.prompt_proj_for_highres,
            self.prompt_proj,
        ]
        params = [p for m in mods if m is not None for p in m.parameters()]
        return [*params, self.prior_prompt]


def apply_ps3(trunk: nn.Module, config: PS3Config | None = None) -> PS3Encoder:
    """Wrap a timm ``VisionTransformer`` (no prefix tokens) as a :class:`PS3Encoder`."""
    return PS3Encoder(trunk, config)
