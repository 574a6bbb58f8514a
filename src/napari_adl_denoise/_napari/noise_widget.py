"""The Simulate-noise dock widget: a thin shell over :func:`napari_adl_denoise.add_noise`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, Label, PushButton, SpinBox
from napari.utils.notifications import show_warning

from ..noise import NOISE_KINDS, NOISE_PARAMETERS, add_noise, estimate_noise, estimate_noise_model
from ._dock import Dock
from ._jobs import copy_placement, start_job
from ._layers import image_choices, keep_fresh, layer_array, narrow, start_on_active


@dataclass(frozen=True)
class _Done:
    fraction: float = 1.0


class NoiseWidget(Dock):
    """Add simulated noise to an image layer, as a new layer; estimate an image's noise level."""

    def __init__(self, napari_viewer) -> None:
        self._viewer = napari_viewer
        self.image = ComboBox(
            label="Image",
            choices=lambda _: image_choices(napari_viewer),
            tooltip="The image layer to add noise to (a new layer; this one is not modified), or whose "
            "noise to estimate.",
        )
        narrow(self.image, 24)  # a long layer name must not widen the dock
        self.kind = ComboBox(
            label="Noise",
            choices=list(NOISE_KINDS),
            value="gaussian",
            tooltip="The noise model: gaussian, rician (MRI magnitude), rayleigh, speckle (I + I n), "
            "poisson (photon counts), poisson_gaussian (camera), salt_pepper, mixed.",
        )
        self.sigma = FloatSpinBox(
            label="Sigma (0-255 scale)",
            min=0,
            max=1e6,
            step=1,
            value=25,
            tooltip="Noise standard deviation: on the 0-255 scale of the image's range when "
            "'relative' is checked (25 = about 10% of the range), else in image units.",
        )
        self.nu = FloatSpinBox(
            label="Nu (Rician offset)",
            min=0,
            max=1e6,
            step=1,
            value=5,
            tooltip="Rician: a constant added to the signal before the magnitude, same units as sigma.",
        )
        self.peak = FloatSpinBox(
            label="Peak photons",
            min=0.01,
            max=1e9,
            step=10,
            value=100,
            tooltip="Poisson: the expected photon count at the brightest pixel (photons); fewer is noisier.",
        )
        self.amount = FloatSpinBox(
            label="Amount",
            min=0,
            max=1,
            step=0.01,
            value=0.05,
            tooltip="Salt and pepper: the fraction of pixels set to the minimum or maximum (0-1).",
        )
        self.sigma_max = FloatSpinBox(
            label="Max sigma",
            min=0,
            max=1e6,
            step=5,
            value=75,
            tooltip="Mixed: sigma is drawn uniformly from 0 to this (0-255 scale), per image.",
        )
        self.relative = CheckBox(
            text="Sigma relative to the data range (papers' convention)",
            value=True,
            tooltip="Sigma on a 0-255 scale of the image's range (as papers report it), not in "
            "the image's own units.",
        )
        self.clip = CheckBox(
            text="Clip to the image's range",
            value=False,
            tooltip="Clip the noisy image to the clean image's min-max (like a saturated sensor).",
        )
        self.seed = SpinBox(
            label="Seed",
            min=0,
            max=2**31 - 1,
            value=0,
            tooltip="Random seed: the same seed gives the same noise.",
        )
        self.estimate_button = PushButton(
            text="Estimate noise of this image",
            tooltip="Estimate the Gaussian noise sigma of the image (wavelet MAD), in the units above, "
            "and whether the noise grows with intensity (photon noise; then its gain per photon).",
        )
        self.run_button = PushButton(text="Add noise", tooltip="Add the noise, as a new layer.")
        self.status = Label(label="")
        super().__init__(
            [
                self.image,
                self.kind,
                self.sigma,
                self.nu,
                self.peak,
                self.amount,
                self.sigma_max,
                self.relative,
                self.clip,
                self.seed,
                self.estimate_button,
                self.run_button,
                self.status,
            ]
        )
        self.kind.changed.connect(self._show_parameters)
        self.estimate_button.changed.connect(self.estimate)
        self.run_button.changed.connect(self.run)
        keep_fresh(napari_viewer, self)
        start_on_active(napari_viewer, self.image)
        self._show_parameters()

    def _show_parameters(self, *_) -> None:
        used = NOISE_PARAMETERS[self.kind.value]
        for name in ("sigma", "nu", "peak", "amount", "sigma_max"):
            getattr(self, name).visible = name in used

    def estimate(self) -> None:
        layer = self.image.value
        if layer is None:
            show_warning("Simulate noise: choose an image layer first")
            return
        array = layer_array(layer)
        sigma = estimate_noise(array, channel_axis=-1 if layer.rgb else None, relative=self.relative.value)
        self.sigma.value = round(sigma, 2)
        status = f"estimated sigma ~ {sigma:.2f} ({'0-255 scale' if self.relative.value else 'image units'})"
        try:
            model = estimate_noise_model(np.moveaxis(array, -1, 0) if layer.rgb else array)
        except ValueError:  # too small or constant: the sigma is all there is to say
            model = None
        if model is not None and model.gain > 0:
            status += (
                f"; the noise grows with intensity: Poisson-Gaussian, gain ~ {model.gain:.3g} per "
                "photon. Choose Noise: poisson_gaussian in Denoise."
            )
        self.status.value = status

    def run(self) -> None:
        layer = self.image.value
        if layer is None:
            show_warning("Simulate noise: choose an image layer first")
            return
        kind = self.kind.value
        params = {
            "sigma": self.sigma.value,
            "nu": self.nu.value,
            "peak": self.peak.value,
            "amount": self.amount.value,
            "sigma_max": self.sigma_max.value,
            "relative": self.relative.value,
            "clip": self.clip.value,
            "seed": self.seed.value,
        }
        data = layer_array(layer)
        source = layer

        def job():
            yield _Done(0.0)
            return add_noise(data, kind, **params)

        used = ", ".join(f"{k}={params[k]:g}" for k in sorted(NOISE_PARAMETERS[kind]))
        name = f"{source.name} [{kind} {used}]"

        def add(noisy) -> None:
            kwargs = copy_placement(source)
            kwargs.pop("contrast_limits")  # noise widens the range
            metadata = {"napari_adl_denoise": {"noise": kind, **params, "source_layer": source.name}}
            self._viewer.add_image(noisy, name=name, metadata=metadata, **kwargs)
            self.status.value = f"added '{name}'"

        start_job(job, f"Simulate {kind} noise", add)
