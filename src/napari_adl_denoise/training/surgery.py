"""Weight surgery: start a network from a saved one of another shape (2D to 3D, wider, gray to
RGB), so that a training run begins where a cheaper one ended."""

from __future__ import annotations

import os

import torch

from ..models import Denoiser, EfficientUnet, EfficientUnetConfig
from ..weights import load_model

__all__ = ["GUIDED_HEAD_SCALE", "OPPONENT", "inflate_weights"]

GUIDED_HEAD_SCALE = 0.05
"""How much of an unguided source's heads a guided network starts with (:func:`inflate_weights`)."""


# Orthonormal opponent colour basis (luminance, red-blue, green-magenta), the space colour BM3D
# denoises in: rows are the opponent channels in terms of R, G, B.
OPPONENT = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0], [1.0, -2.0, 1.0]])
OPPONENT = OPPONENT / OPPONENT.norm(dim=1, keepdim=True)


def inflate_weights(source: str | os.PathLike, target: Denoiser) -> dict[str, torch.Tensor]:
    """Weights for ``target`` from a saved model of the same shape, its 2D counterpart, a model
    with half its ``filter_base``, or a grayscale model with a third of it (for an RGB target).

    A 2D model initialises a 3D one with the same channels, widths and kernels: each 2D filter
    becomes the centre depth slice of a 3D filter (zeros elsewhere) and each transposed filter is
    spread over depth taps (1/2, 1, 1/2), so the 3D network starts as the 2D network applied slice
    by slice, with features interpolated over depth below full resolution (I3D-style inflation).

    A model with half the ``filter_base`` initialises a twice-wider one that computes the same
    function (Net2Net widening, Chen et al. 2016): every feature channel is duplicated, and each
    weight reading a duplicated channel is split between its two copies at a random ratio in
    [0.25, 0.75], so the copies receive different gradients and can grow apart.

    A grayscale model with a third of the ``filter_base`` initialises an RGB one as three copies
    of itself, one per channel of the orthonormal opponent colour space (:data:`OPPONENT`): the
    image-reading filters project R, G, B onto the copy's opponent channel, the copies do not read
    each other (zero weights, free to train), and the output layers map the three noise estimates
    back to RGB.

    A model without a ``guide`` initialises a guided 3D network of the same shape (one that
    refines a 2D model's view of the volume): the filters reading the image keep their weights
    and read the guide's channels with zeros, and the heads' last filters are scaled by
    :data:`GUIDED_HEAD_SCALE`, so the network starts close to its guide's 2.5D result (minus
    that fraction of the source's noise estimate) with the source's features to learn from.
    Zero heads would start exactly at the guide's result, but then the heads see no consistent
    gradient and the features none at all (a 250-step run did not move).

    Widening needs a network without normalisation (``norm: none``); it and the colour copies
    are for Efficient-Unets. Other families start from a model of the same config or its 2D
    counterpart.

    Raises
    ------
    ValueError
        The source model's configuration differs from the target's in anything else.
    """
    loaded = load_model(source)
    src_cfg, dst_cfg = loaded.config, target.config
    if getattr(dst_cfg, "guide", None) and not getattr(src_cfg, "guide", None):
        return _guided(
            inflate_weights(source, type(target)(dst_cfg.model_copy(update={"guide": None}))), target
        )
    misfit = f"init model {loaded.name} does not fit this config's model: {src_cfg} vs {dst_cfg}"
    if type(src_cfg) is not type(dst_cfg):
        raise ValueError(misfit)
    if not isinstance(dst_cfg, EfficientUnetConfig):
        same_dims = src_cfg.model_copy(update={"spatial_dims": dst_cfg.spatial_dims})
        if same_dims != dst_cfg or src_cfg.spatial_dims > dst_cfg.spatial_dims:
            raise ValueError(misfit)
        return _inflate_depth(loaded.model.state_dict(), target, src_cfg.spatial_dims)
    colour = (src_cfg.in_channels, src_cfg.out_channels, dst_cfg.in_channels, dst_cfg.out_channels) == (
        1,
        1,
        3,
        3,
    )
    factor = dst_cfg.filter_base / src_cfg.filter_base
    same = src_cfg.model_copy(
        update={
            "spatial_dims": dst_cfg.spatial_dims,
            "filter_base": dst_cfg.filter_base,
            **({"in_channels": 3, "out_channels": 3} if colour else {}),
        }
    )
    if (
        same != dst_cfg
        or (src_cfg.spatial_dims, dst_cfg.spatial_dims) not in ((2, 2), (3, 3), (2, 3))
        or factor not in ((3,) if colour else (1, 2))
        or (factor != 1 and dst_cfg.norm != "none")
    ):
        raise ValueError(misfit)
    state = loaded.model.state_dict()
    if factor != 1:
        try:
            state = _widen(state, target, int(factor), colour)
        except ValueError as exc:  # e.g. a head halving an odd width
            raise ValueError(f"init model {loaded.name} does not fit this config's model: {exc}") from None
    return _inflate_depth(state, target, src_cfg.spatial_dims)


def _inflate_depth(
    state: dict[str, torch.Tensor], target: Denoiser, source_dims: int
) -> dict[str, torch.Tensor]:
    """A 2D model's weights as the 3D ``target``'s (see :func:`inflate_weights`); same dims: as is."""
    if source_dims == target.config.spatial_dims:
        return state
    for name, module in target.named_modules():
        if not isinstance(module, torch.nn.Conv3d | torch.nn.ConvTranspose3d):
            continue
        weight = state[f"{name}.weight"]
        depth = module.kernel_size[0]
        taps = torch.zeros(depth)
        taps[depth // 2] = 1.0
        if isinstance(module, torch.nn.ConvTranspose3d):  # stride 2: odd slices interpolate
            taps[depth // 2 - 1], taps[depth // 2 + 1] = 0.5, 0.5
        state[f"{name}.weight"] = weight.unsqueeze(2) * taps.view(1, 1, depth, 1, 1)
    return state


def _guided(state: dict[str, torch.Tensor], target: Denoiser) -> dict[str, torch.Tensor]:
    """An unguided network's weights for its guided twin (see :func:`inflate_weights`)."""
    shapes = {k: v.shape for k, v in target.state_dict().items()}
    for key, weight in state.items():
        if key.rpartition(".")[0].endswith("to_image"):
            state[key] = weight * GUIDED_HEAD_SCALE
        elif weight.shape != shapes[key]:  # reads the image: the guide's channels get zeros
            grown = weight.new_zeros(shapes[key])
            grown[:, : weight.shape[1]] = weight
            state[key] = grown
    return state


def _widen(
    state: dict[str, torch.Tensor], target: EfficientUnet, factor: int, colour: bool
) -> dict[str, torch.Tensor]:
    """Widen every feature channel ``c`` into ``factor`` copies ``factor * c + g`` (which keeps
    concatenated skip connections aligned); see :func:`inflate_weights`."""
    generator = torch.Generator().manual_seed(0)
    modules, shapes = dict(target.named_modules()), {k: v.shape for k, v in target.state_dict().items()}
    image_readers = _image_readers(target)
    wide = {}
    for key, weight in state.items():
        weight = weight.float()
        name = key.rpartition(".")[0]
        # Conv weights are (out, in, ...); transposed conv weights are (in, out, ...).
        transposed = isinstance(modules[name], torch.nn.ConvTranspose2d | torch.nn.ConvTranspose3d)
        in_dim, out_dim = (0, 1) if transposed else (1, 0)
        expand = [1] * weight.ndim
        if colour and name.endswith("to_image"):  # opponent noise estimates -> RGB
            weight = weight.repeat_interleave(factor, dim=in_dim)
            expand[out_dim], expand[in_dim] = 3, -1
            weight = weight * OPPONENT.T.repeat(1, weight.shape[in_dim] // 3).view(expand)
        elif colour and name in image_readers:  # RGB -> the copies' opponent channels
            weight = weight.repeat_interleave(factor, dim=out_dim)
            expand[out_dim], expand[in_dim] = -1, 3
            weight = weight * OPPONENT.repeat(weight.shape[out_dim] // 3, 1).view(expand)
        else:
            if shapes[key][out_dim] == factor * weight.shape[out_dim]:
                weight = weight.repeat_interleave(factor, dim=out_dim)
            if shapes[key][in_dim] == factor * weight.shape[in_dim] and colour:  # copy g reads copy g only
                weight = weight.repeat_interleave(factor, dim=in_dim)
                copy_out = torch.arange(weight.shape[out_dim]) % factor
                copy_in = torch.arange(weight.shape[in_dim]) % factor
                expand[out_dim], expand[in_dim] = weight.shape[out_dim], weight.shape[in_dim]
                mask = copy_out[:, None] == copy_in[None, :]
                weight = weight * (mask.T if transposed else mask).view(expand)
            elif shapes[key][in_dim] == factor * weight.shape[in_dim]:  # readers split at random ratios
                share = 0.25 + 0.5 * torch.rand(weight.shape, generator=generator)
                share = torch.stack([share, 1 - share], dim=in_dim + 1).flatten(in_dim, in_dim + 1)
                weight = weight.repeat_interleave(factor, dim=in_dim) * share
        if weight.shape[:2] != shapes[key][:2]:
            raise ValueError(f"cannot widen {key} from {tuple(state[key].shape)} to {tuple(shapes[key])}")
        wide[key] = weight
    return wide


def _image_readers(model: EfficientUnet) -> set[str]:
    """Names of the convolutions that read the network's input image itself."""
    readers: set[str] = set()
    image = torch.zeros(1, model.config.in_channels, *[8] * model.config.spatial_dims)
    hooks = [
        module.register_forward_pre_hook(
            lambda _, args, name=name: readers.add(name) if args[0] is image else None
        )
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Conv2d | torch.nn.Conv3d)
    ]
    with torch.no_grad():
        model(image)
    for hook in hooks:
        hook.remove()
    return readers
