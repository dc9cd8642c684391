"""``quantize_model``: GPTQ (or round-to-nearest) over a transformers decoder model,
block by block (``gptq:opt.py:opt_sequential``, ``gptq:llama.py:llama_sequential``).

The inputs of the first block are captured by a pre-hook that stops the forward pass (the
reference's "Catcher"); each block then runs the calibration samples with hooks that
accumulate every linear's Hessian, its linears are quantized (in true-sequential groups
when asked, so that later groups see quantized inputs), and the samples run through the
quantized block again to become the next block's inputs. Embeddings and ``lm_head`` are
never quantized.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from trainforge_core import NoEffectWarning
from trainforge_gptq.gptq import (
    GPTQ,
    LLAMA_SEQUENTIAL,
    GPTQConfig,
    QuantResult,
    _layer_kind,
    rtn_quantize,
)
from trainforge_gptq.packing import codes_per_run, pack, unpack, zero_offset
from trainforge_gptq.qlinear import GPTQLinear, attach_config, check_portable_group_size

log = logging.getLogger(__name__)

BLOCK_PATHS = (
    "model.layers",
    "model.decoder.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.language_model.layers",
)


@dataclass(frozen=True)
class LayerReport:
    """One quantized layer: its name, weight shape, GPTQ loss, seconds, damping used."""

    name: str
    shape: tuple[int, ...]
    loss: float
    seconds: float
    damp_percent: float
    packed: bool


@dataclass
class QuantizeReport:
    """What :func:`quantize_model` did."""

    method: str
    config: GPTQConfig
    layers: list[LayerReport] = field(default_factory=list)
    n_sequences: int = 0
    seconds: float = 0.0

    @property
    def total_loss(self) -> float:
        return float(sum(r.loss for r in self.layers))

    def __str__(self) -> str:
        lines = [
            f"{self.method}: {len(self.layers)} layers, {self.n_sequences} calibration "
            f"sequences, {self.seconds:.2f} s"
        ]
        lines += [f"  {r.name:<40} {r.loss:12.4g}  {r.seconds:6.3f}s" for r in self.layers]
        return "\n".join(lines)


class _StopForward(Exception):
    pass


def find_blocks(model: nn.Module, blocks: str = "auto") -> tuple[str, nn.ModuleList]:
    """The model's list of transformer blocks and its dotted path."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    paths = BLOCK_PATHS if blocks == "auto" else (blocks,)
    for path in paths:
        try:
            mod = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(mod, nn.ModuleList) and len(mod):
            return path, mod
    raise ValueError(
        f"blocks={blocks!r}: no nn.ModuleList of blocks found at {paths} in "
        f"{type(model).__name__}; pass blocks='<dotted.path>'"
    )


def _quantizable(block: nn.Module) -> dict[str, nn.Module]:
    out = {}
    for name, m in block.named_modules():
        try:
            kind = _layer_kind(m)
        except (TypeError, ValueError):
            continue
        if kind != "conv2d" and name:
            out[name] = m
    return out


def _batches(calibration: Any) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    if calibration is None:
        raise ValueError("no calibration data: calibration is None (GPTQ needs layer inputs)")
    if isinstance(calibration, torch.Tensor):
        calibration = list(calibration.split(8)) if calibration.dim() == 2 else [calibration]
    elif isinstance(calibration, dict):
        calibration = [calibration]
    out = []
    for item in calibration:
        mask = None
        if isinstance(item, dict):
            if "input_ids" not in item:
                raise ValueError(f"a calibration dict needs 'input_ids', got keys {sorted(item)}")
            ids, mask = item["input_ids"], item.get("attention_mask")
        else:
            ids = item
        if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(
                "calibration items must be integer token tensors [batch, seq] "
                f"or dicts with input_ids; got {type(ids).__name__}"
            )
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
            mask = None if mask is None else mask.reshape(1, -1)
        if ids.dim() != 2 or ids.numel() == 0:
            raise ValueError(f"input_ids must be a non-empty [batch, seq], got {tuple(ids.shape)}")
        if mask is not None and tuple(mask.shape) != tuple(ids.shape):
            raise ValueError(
                f"attention_mask shape {tuple(mask.shape)} != input_ids {tuple(ids.shape)}"
            )
        out.append((ids.long(), mask))
    if not out:
        raise ValueError("no calibration data: the calibration iterable is empty")
    if all(m is not None and not bool(m.bool().any()) for _, m in out):
        raise ValueError(
            "every calibration token is masked out (attention_mask is all zero): GPTQ would "
            "see no inputs and zero every quantized weight"
        )
    return out


def _sequential_groups(
    names: Sequence[str], config: GPTQConfig, sequential_groups: Any
) -> list[list[str]]:
    if not config.true_sequential:
        return [list(names)]
    if sequential_groups == "auto":
        spec = LLAMA_SEQUENTIAL if all(n in names for g in LLAMA_SEQUENTIAL for n in g) else None
        if spec is None:
            return [list(names)]
        groups = [list(g) for g in spec]
    else:
        groups = [list(g) for g in sequential_groups]
        unknown = [n for g in groups for n in g if n not in names]
        if unknown:
            raise ValueError(
                f"sequential_groups names {unknown} are not linears of the block "
                f"(which has {list(names)})"
            )
    rest = [n for n in names if all(n not in g for g in groups)]
    return groups + ([rest] if rest else [])


def _call(block: nn.Module, x: torch.Tensor, kw: dict[str, Any]) -> Any:
    kw = dict(kw)
    return block(x, *kw.pop("__args", ()), **kw)


def _block_out(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple | list) else out


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    calibration: Iterable[Any] | torch.Tensor | None,
    config: GPTQConfig | None = None,
    *,
    method: str = "gptq",
    blocks: str = "auto",
    sequential_groups: Any = "auto",
    pack_weights: bool = True,
    backend: str = "auto",
    progress: bool = True,
    dtype: torch.dtype = torch.float32,
    data_parallel: bool = False,
    process_group: Any = None,
) -> tuple[nn.Module, QuantizeReport]:
    """Quantize every linear inside the model's blocks, in place; return ``(model, report)``.

    ``calibration``: token ids ``[n, seq]`` (split into batches of 8), or an iterable of
    ``[batch, seq]`` tensors or dicts with ``input_ids`` and an optional ``attention_mask``
    (padding tokens are left out of the Hessians). ``method="rtn"`` is the round-to-nearest
    baseline with the same grids (calibration may then be None). ``pack_weights`` replaces
    the linears by :class:`GPTQLinear` (else they stay fake-quantized float weights).

    ``data_parallel=True`` (under an initialised ``torch.distributed``, every rank calling
    with the same model and its own shard of the calibration set): each layer's Hessian and
    sequence count are summed over the ranks of ``process_group`` (default: the world)
    before it is quantized, so N ranks with N shards quantize exactly as one process with
    the whole set, and every rank ends with the same quantized model. Only the calibration
    forward passes are split; each rank runs the (identical) quantization itself.
    """
    cfg = GPTQConfig() if config is None else config
    if not isinstance(cfg, GPTQConfig):
        raise TypeError(f"config must be a GPTQConfig, got {type(cfg).__name__}")
    if method not in ("gptq", "rtn"):
        raise ValueError(f"method must be 'gptq' or 'rtn', got {method!r}")
    if not isinstance(data_parallel, bool):
        raise TypeError(f"data_parallel must be True or False, got {data_parallel!r}")
    if data_parallel and method == "gptq":
        _check_distributed(process_group)
    path, layers = find_blocks(model, blocks)
    report = QuantizeReport(method=method, config=cfg)
    tick = time.perf_counter()
    results: dict[str, tuple[nn.Module, QuantResult]] = {}
    found = {i: _quantizable(b) for i, b in enumerate(layers)}
    if not any(found.values()):
        warnings.warn(
            f"quantize_model: no Linear/Conv1D layers inside {path}; the model is unchanged",
            NoEffectWarning,
            stacklevel=2,
        )
        return model, report
    was_training = model.training
    model.eval()

    def record(full: str, lin: nn.Module, res: QuantResult) -> None:
        """Write the fake-quantized weight into the layer and report it."""
        lin.weight.data = res.weight(lin.weight.dtype)
        results[full] = (lin, res)
        shape = tuple(lin.weight.shape)
        report.layers.append(
            LayerReport(full, shape, res.loss, res.seconds, res.damp_percent, False)
        )

    if method == "rtn":
        for i, linears in found.items():
            for name, lin in linears.items():
                record(f"{path}.{i}.{name}", lin, rtn_quantize(lin, cfg))
    else:
        batches = _batches(calibration)
        report.n_sequences = sum(b.shape[0] for b, _ in batches)
        if data_parallel:
            dev = next(model.parameters()).device  # NCCL reduces device tensors only
            n_all = _all_reduce(torch.tensor(report.n_sequences, device=dev), process_group)
            report.n_sequences = int(n_all)
        inps, kws, masks = _capture(model, layers, batches)
        bar = tqdm(range(len(layers)), desc="gptq blocks", disable=not progress, leave=False)
        for i in bar:
            block = layers[i]
            linears = found[i]
            for names in _sequential_groups(list(linears), cfg, sequential_groups):
                gptqs = {n: GPTQ(linears[n], dtype=dtype) for n in names}
                current: dict[str, torch.Tensor | None] = {"mask": None}

                def make_hook(g: GPTQ, current: dict = current) -> Any:
                    def hook(_mod: nn.Module, inp: tuple, _out: Any) -> None:
                        x = inp[0]
                        m = current["mask"]
                        use = m is not None and tuple(m.shape) == tuple(x.shape[:-1])
                        g.add_batch(x, mask=m if use else None)

                    return hook

                handles = [linears[n].register_forward_hook(make_hook(g)) for n, g in gptqs.items()]
                try:
                    for x, kw, m in zip(inps, kws, masks, strict=True):
                        current["mask"] = m
                        _call(block, x, kw)
                finally:
                    for h in handles:
                        h.remove()
                if data_parallel:
                    for g in gptqs.values():
                        _reduce_hessian(g, process_group)
                for n, g in gptqs.items():
                    res = g.quantize(cfg)
                    record(f"{path}.{i}.{n}", linears[n], res)
                    log.info("gptq %s.%d.%s: loss %.4g (%.2fs)", path, i, n, res.loss, res.seconds)
                del gptqs
            inps = [_block_out(_call(block, x, kw)) for x, kw in zip(inps, kws, strict=True)]

    if pack_weights:
        packed = _pack_all(model, results, cfg, backend)
        report.layers = [
            LayerReport(r.name, r.shape, r.loss, r.seconds, r.damp_percent, r.name in packed)
            for r in report.layers
        ]
    attach_config(model, export_config(cfg, [r.name for r in report.layers if r.packed], path))
    model.train(was_training)
    report.seconds = time.perf_counter() - tick
    return model, report


def _check_distributed(process_group: Any) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "data_parallel=True needs an initialised torch.distributed process group (launch "
            "with torchrun and call torch.distributed.init_process_group first)"
        )
    if process_group is not None and not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(
            f"process_group must be a torch.distributed.ProcessGroup or None, "
            f"got {type(process_group).__name__}"
        )


def _all_reduce(t: torch.Tensor, process_group: Any) -> torch.Tensor:
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=process_group)
    return t


def _reduce_hessian(g: GPTQ, process_group: Any) -> None:
    """``H = 2/N sum_ranks sum x x^T``: sum ``n_r * H_r`` and ``n_r`` over the ranks."""
    n = torch.tensor(float(g.nsamples), dtype=torch.float64, device=g.hessian.device)
    n = _all_reduce(n, process_group)
    H = _all_reduce(g.hessian * g.nsamples, process_group)
    if float(n) > 0:
        H /= float(n)
    g._H = H
    g.nsamples = int(n)


def _capture(
    model: nn.Module, layers: nn.ModuleList, batches: list[tuple[torch.Tensor, torch.Tensor | None]]
) -> tuple[list, list, list]:
    inps: list[torch.Tensor] = []
    kws: list[dict[str, Any]] = []
    masks: list[torch.Tensor | None] = []

    def catcher(_mod: nn.Module, args: tuple, kwargs: dict) -> None:
        kwargs = dict(kwargs)
        x = args[0] if args else kwargs.pop("hidden_states")
        kwargs["__args"] = tuple(args[1:])
        inps.append(x)
        kws.append(kwargs)
        raise _StopForward

    device = next(model.parameters()).device
    handle = layers[0].register_forward_pre_hook(catcher, with_kwargs=True)
    try:
        for ids, mask in batches:
            masks.append(None if mask is None else mask.to(device))
            with contextlib.suppress(_StopForward):
                model(input_ids=ids.to(device), attention_mask=masks[-1], use_cache=False)
    finally:
        handle.remove()
    return inps, kws, masks


def _pack_all(
    model: nn.Module,
    results: dict[str, tuple[nn.Module, QuantResult]],
    cfg: GPTQConfig,
    backend: str,
) -> set[str]:
    packed = set()
    run = codes_per_run(cfg.bits)
    if results:
        check_portable_group_size(cfg.group_size)
    for name, (lin, res) in results.items():
        out_f, in_f = res.Q.shape
        if in_f % run or out_f % run:
            log.warning(
                "%s: %dx%d is not a multiple of %d; left fake-quantized", name, out_f, in_f, run
            )
            continue
        q = GPTQLinear.from_result(
            lin, res, backend=backend, checkpoint_format=cfg.checkpoint_format
        )
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, q)
        packed.add(name)
    return packed


def export_config(cfg: GPTQConfig, modules: list[str], block_path: str) -> dict[str, Any]:
    """The ``quantization_config`` entry (transformers ``GPTQConfig`` field names)."""
    d = asdict(cfg)
    return {
        "quant_method": "gptq",
        "bits": cfg.bits,
        "group_size": cfg.group_size,
        "damp_percent": cfg.damp_percent,
        "desc_act": cfg.desc_act,
        "static_groups": cfg.static_groups,
        "sym": cfg.sym,
        "true_sequential": cfg.true_sequential,
        "act_group_aware": cfg.act_group_aware,
        "checkpoint_format": cfg.checkpoint_format,
        "block_name_to_quantize": block_path,
        "modules_to_not_convert": ["lm_head"],
        "trainforge": {"modules": modules, "block_size": d["block_size"]},
    }


def _replace_with_empty(
    model: nn.Module,
    qcfg: dict[str, Any],
    backend: str,
    modules: Sequence[str],
    biased: set[str] | None = None,
) -> None:
    """Replace ``modules`` (dotted names) by empty :class:`GPTQLinear` of the same shape;
    ``biased``: the names that get a bias (default: those whose layer has one)."""
    for name in modules:
        try:
            lin = model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"the checkpoint quantizes {name!r}, which {type(model).__name__} does not have "
                "(is it the same architecture?)"
            ) from None
        if isinstance(lin, GPTQLinear):
            continue
        kind = _layer_kind(lin)
        w = lin.weight
        out_f, in_f = (w.shape[1], w.shape[0]) if kind == "conv1d" else (w.shape[0], w.shape[1])
        has_bias = getattr(lin, "bias", None) is not None if biased is None else name in biased
        q = GPTQLinear(
            int(in_f),
            int(out_f),
            qcfg["bits"],
            qcfg["group_size"],
            has_bias,
            qcfg["checkpoint_format"],
            backend,
            qcfg.get("sym", True),
        )
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, q.to(w.device))


def to_hf_state_dict(
    model: nn.Module, checkpoint_format: str = "gptq"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict and ``quantization_config`` in the layout transformers' GPTQ loader
    (optimum / gptqmodel) reads: ``<module>.qweight / qzeros / scales / g_idx / bias`` per
    quantized linear, everything else as is, zeros converted to ``checkpoint_format``."""
    target = zero_offset(checkpoint_format)
    from trainforge_gptq.qlinear import quantization_config

    qcfg = quantization_config(model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, m in model.named_modules():
        if isinstance(m, GPTQLinear) and m.zero_offset != target:
            z = unpack(m.qzeros, m.bits, dim=1).to(torch.int64) + m.zero_offset - target
            state[f"{name}.qzeros"] = pack(z & (2**m.bits - 1), m.bits, dim=1)
    qcfg["checkpoint_format"] = checkpoint_format
    return state, qcfg
