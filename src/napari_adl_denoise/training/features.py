"""Feature networks for the content loss of IDGAN's detail loss (``seeds/003``, eq. 7).

The paper compares VGG19's ``phi_5,4`` maps (after the 4th convolution's ReLU before the 5th max
pooling) of the denoised and the clean image. VGG19's ImageNet weights cannot be downloaded at
run time, so :func:`load_feature_network` takes either

* a **VGG19 weights file** the user provides: a ``.safetensors`` file or a torchvision ``.pth``
  (loaded with ``weights_only=True``, so a file cannot run code; zip-format files memory-mapped,
  the legacy format torchvision's own VGG19 file uses read whole), with torchvision's
  ``features.<i>.weight`` / ``features.<i>.bias`` names (the classifier's weights are ignored).
  In a safetensors file each tensor's name, shape and dtype is checked before it is read. Images
  go in as torchvision's VGG expects: [0, 1] RGB normalised by the ImageNet mean and deviation,
  gray repeated to three channels; or
* the **substitute**: a denoiser we already have, by model name or file, whose Efficient-Unet
  encoder (input block, two strided blocks and the bridge, 1/8 scale) gives the features. The
  bundled ADL models were trained on natural and medical images; their bridge maps are the
  deepest features we own. They read the plugin's [0, 1] intensities directly.

Either network is frozen and in eval mode; the content loss sends its gradient through it to the
denoiser only. The loss is the mean over every feature value (channels too), as SRGAN's
implementation, for which the paper's weight 0.0061 (SRGAN's 1/12.75^2) was set; that weight
assumed VGG features of 0-255 Caffe-style inputs. Features of other networks, or of torchvision's
standardised inputs, have another scale: weigh the content term so that it starts at the scale
of the [-1, 1] MSE, the rule behind SRGAN's factor (the recipes say what they measured).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["VGG19_CONVS", "content_loss", "load_feature_network"]

VGG19_CONVS: tuple[tuple[int, int, int], ...] = (
    (0, 3, 64), (2, 64, 64),
    (5, 64, 128), (7, 128, 128),
    (10, 128, 256), (12, 256, 256), (14, 256, 256), (16, 256, 256),
    (19, 256, 512), (21, 512, 512), (23, 512, 512), (25, 512, 512),
    (28, 512, 512), (30, 512, 512), (32, 512, 512), (34, 512, 512),
)  # fmt: skip
"""(index in torchvision's ``vgg19().features``, in channels, out channels) of the 3x3
convolutions up to conv5_4, whose ReLU (index 35) gives ``phi_5,4``."""

_POOLS = (4, 9, 18, 27)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class _Vgg19Features(nn.Module):
    """VGG19 to the ReLU after conv5_4, laid out like torchvision's ``features`` (so its
    state-dict keys are ``<i>.weight``)."""

    def __init__(self) -> None:
        super().__init__()
        convs = {i: (cin, cout) for i, cin, cout in VGG19_CONVS}
        layers: list[nn.Module] = []
        for i in range(36):
            if i in convs:
                layers.append(nn.Conv2d(*convs[i], 3, padding=1))
            elif i in _POOLS:
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(nn.ReLU(inplace=False))
        self.layers = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).reshape(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.layers((x - self.mean) / self.std)


class _EncoderFeatures(nn.Module):
    """An Efficient-Unet denoiser's encoder to its bridge."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.Sequential(backbone.enc1, backbone.enc2, backbone.enc3, backbone.bridge)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def _read_vgg19(path: Path) -> dict[str, torch.Tensor]:
    """The conv weights of a VGG19 file, checked name by name, shape by shape."""
    expected = {}
    for i, cin, cout in VGG19_CONVS:
        expected[f"{i}.weight"] = (cout, cin, 3, 3)
        expected[f"{i}.bias"] = (cout,)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                keys = set(f.keys())
                prefix = "features." if any(k.startswith("features.") for k in keys) else ""
                shapes = {
                    k: tuple(f.get_slice(prefix + k).get_shape()) for k in expected if prefix + k in keys
                }
                _check_shapes(path, expected, shapes)
                for key in expected:
                    dtype = f.get_slice(prefix + key).get_dtype()
                    if dtype not in ("F16", "BF16", "F32", "F64"):
                        raise ValueError(f"{path}: features.{key} is {dtype}, not floating point")
                tensors = {k: f.get_tensor(prefix + k) for k in expected}
        except SafetensorError as exc:
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None
    else:
        import pickle
        import zipfile

        try:  # zip-format files are memory-mapped; the legacy format is read whole
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except pickle.UnpicklingError as exc:
            _, _, detail = str(exc).partition("WeightsUnpickler error:")
            lines = [line.strip() for line in (detail or str(exc)).splitlines() if line.strip()]
            reason = lines[0][:100] if lines else type(exc).__name__
            raise ValueError(
                f"{path}: refused by the safe loader, which runs no code from files ({reason})"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{path}: not a PyTorch weights file ({first[:120]})") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: holds a {type(loaded).__name__}, not a state dict of VGG19 weights")
        prefix = "features." if any(str(k).startswith("features.") for k in loaded) else ""
        shapes = {
            k: tuple(loaded[prefix + k].shape)
            for k in expected
            if isinstance(loaded.get(prefix + k), torch.Tensor)
        }
        _check_shapes(path, expected, shapes)
        tensors = {k: loaded[prefix + k] for k in expected}
    for key, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise ValueError(f"{path}: features.{key} is {tensor.dtype}, not floating point")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{path}: features.{key} holds NaN or infinite values")
    return {k: v.float() for k, v in tensors.items()}


def _check_shapes(path: Path, expected: dict[str, tuple], shapes: dict[str, tuple]) -> None:
    missing = [k for k in expected if k not in shapes]
    if missing:
        raise ValueError(
            f"{path}: not VGG19 weights: no features.{missing[0]} "
            f"({len(missing)} of the {len(expected)} tensors to conv5_4 missing)"
        )
    for key, shape in expected.items():
        if shapes[key] != shape:
            raise ValueError(
                f"{path}: not VGG19 weights: features.{key} has shape {shapes[key]}, expected {shape}"
            )


def load_feature_network(source: str | Path, in_channels: int, spatial_dims: int = 2) -> nn.Module:
    """The frozen feature network of the content loss (see the module docstring).

    Parameters
    ----------
    source : str or Path
        A VGG19 weights file (``.safetensors``, ``.pth``, ``.pt``), or a denoiser's model name
        or ``.safetensors`` file whose Efficient-Unet encoder becomes the substitute.
    in_channels : {1, 3}
        The images' channels (gray images are repeated for VGG19).
    spatial_dims : {2, 3}
        VGG19 is 2D only; a substitute must have these dimensions.

    Raises
    ------
    ValueError
        One line naming the problem: a malformed or unsafe file, a model that is not an
        Efficient-Unet, or dimensions and channels that do not match.
    """
    path = Path(source)
    vgg = path.suffix in (".pth", ".pt") or (path.suffix == ".safetensors" and _is_foreign(path))
    if vgg:
        if not path.is_file():
            raise FileNotFoundError(f"no such feature network file: {path}")
        if spatial_dims != 2:
            raise ValueError("VGG19 features are 2D; a 3D model's content loss needs a 3D substitute model")
        net: nn.Module = _Vgg19Features()
        net.layers.load_state_dict(_read_vgg19(path))
    else:
        from ..weights import load_model

        loaded = load_model(source)
        config = loaded.config
        if config.kind != "efficient_unet":
            raise ValueError(
                f"{source}: the substitute feature network must be an Efficient-Unet (ADL) model, "
                f"not {config.kind}"
            )
        if (config.spatial_dims, config.in_channels) != (spatial_dims, in_channels):
            raise ValueError(
                f"{source}: a {config.spatial_dims}D model of {config.in_channels} channel(s) cannot "
                f"give features of {spatial_dims}D images of {in_channels} channel(s)"
            )
        net = _EncoderFeatures(loaded.model.backbone)
    net.eval()
    net.requires_grad_(False)
    return net


def _is_foreign(path: Path) -> bool:
    """A safetensors file that is not one of our models (no model metadata): VGG19's."""
    from safetensors import SafetensorError, safe_open

    from ..weights import FORMAT

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") != FORMAT
    except SafetensorError:
        return True  # _read_vgg19 says what is wrong with it


def content_loss(features: nn.Module, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 7: the mean squared distance between the feature maps of ``output`` and ``target``."""
    with torch.no_grad():
        reference = features(target)
    return torch.nn.functional.mse_loss(features(output), reference)
