"""What every denoising network offers the tiled runner and the training engine."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

__all__ = ["Denoiser", "DenoiserConfigBase", "check_input"]


def check_input(x: torch.Tensor, spatial_dims: int, in_channels: int) -> None:
    """One-line ValueError unless ``x`` is ``(N, in_channels, *spatial)`` with ``spatial_dims`` axes."""
    if x.ndim != spatial_dims + 2 or x.shape[1] != in_channels:
        raise ValueError(
            f"expected input of shape (N, {in_channels}, {', '.join('*' * spatial_dims)}), "
            f"got {tuple(x.shape)}"
        )


class DenoiserConfigBase(BaseModel):
    """What every denoiser config has: dimensions and channels; ``out_channels`` defaults to
    ``in_channels``. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    spatial_dims: Literal[2, 3] = 2
    in_channels: Literal[1, 3] = 1
    out_channels: Literal[1, 3] | None = None

    @property
    def network_channels(self) -> int:
        """Channels of the network's input (the image's)."""
        return self.in_channels

    @model_validator(mode="after")
    def _same_channels_by_default(self) -> DenoiserConfigBase:
        if self.out_channels is None:
            self.out_channels = self.in_channels
        return self


class Denoiser(nn.Module):
    """Base of the denoising networks: ``forward(x, multiscale=False)`` maps ``(N, C, *spatial)``
    intensities (normalised to about [0, 1]) to the denoised image, or with ``multiscale`` to a
    tuple of images whose first is the full-resolution one (the training loss compares each with
    the reference area-downsampled to its size). ``config`` rebuilds the network; it has
    ``kind``, ``spatial_dims``, ``in_channels``, ``out_channels``, ``summary`` and
    ``memory_bytes(tile_shape)``.

    Families with a training schedule of their own override :meth:`set_training_phase`,
    :meth:`regulariser` and :meth:`stage_loss`; those with inference options (``denoise(**options)``)
    override :meth:`set_options`.
    """

    config: object

    def set_training_phase(self, phase: str, *, learnt_features: bool) -> None:
        """Adapt the network to a training phase: ``"clean"`` (clean-to-clean reconstruction),
        ``"denoiser"``, ``"discriminator"`` or ``"adversarial"``. ``learnt_features``: the run had
        a clean-to-clean phase before this one. Nothing to do for most networks."""

    def regulariser(self) -> torch.Tensor:
        """A penalty on the weights that the training loss adds with weight ``loss.lp``: none."""
        return next(self.parameters()).new_zeros(())

    def stage_loss(self, noisy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """A loss on the intermediate output of the last training forward pass (a two-stage
        network's noise estimate), which the training loss adds with weight ``loss.stage``:
        none."""
        return next(self.parameters()).new_zeros(())

    def set_options(self, **options) -> None:
        """Method options from ``denoise(**options)``; one-line ValueError for a bad value.
        Most networks take none."""
        if options:
            raise ValueError(f"this network takes no options, got {', '.join(options)}")
