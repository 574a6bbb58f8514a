from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from skimage import data

from napari_adl_denoise import methods
from napari_adl_denoise.models import EfficientUnet, EfficientUnetConfig


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> Path:
    """A folder of three real images as TIFF files, for training configs to read."""
    folder = tmp_path_factory.mktemp("images")
    for name in ("camera", "coins", "moon"):
        tifffile.imwrite(folder / f"{name}.tif", getattr(data, name)())
    return folder


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, so none passes or fails by chance."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def user_models(tmp_path_factory, monkeypatch):
    """The user models folder, empty and private to the test (never the real one)."""
    folder = tmp_path_factory.mktemp("user-models") / "models"
    monkeypatch.setenv("NAPARI_ADL_DENOISE_MODELS", str(folder))
    return folder


def drain(steps):
    """Run a progress generator to its end: (every record it yielded, its return value)."""
    records = []
    try:
        while True:
            records.append(next(steps))
    except StopIteration as stop:
        return records, stop.value


def train_tiny(spatial_dims: int = 2, steps: int = 120, seed: int = 0) -> EfficientUnet:
    """A tiny Efficient-Unet trained briefly with L1 on camera patches: a real, local denoiser."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    clean = data.camera().astype(np.float32)[None] / 255
    net = EfficientUnet(EfficientUnetConfig(spatial_dims=spatial_dims, filter_base=4))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    size = 48 if spatial_dims == 2 else 16
    for _ in range(steps):
        batch = []
        for _ in range(4):
            y, x = rng.integers(0, clean.shape[-1] - size, 2)
            patch = clean[:, y : y + size, x : x + size]
            if spatial_dims == 3:  # a smooth 3D volume from a 2D patch
                patch = np.stack([np.roll(patch, k, axis=-1) for k in range(size)], axis=1)
            batch.append(patch)
        target = torch.from_numpy(np.stack(batch))
        noisy = target + 0.1 * torch.randn_like(target)
        loss = (net(noisy) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def guided_config(guide: Path) -> EfficientUnetConfig:
    """A tiny guided 3D network's config, refining the 2D model saved at ``guide``."""
    return EfficientUnetConfig(
        spatial_dims=3,
        filter_base=4,
        enhancer_kernel=3,
        norm="none",
        output_activation="residual",
        guide=str(guide),
    )


@pytest.fixture(scope="session")
def tiny_2d() -> EfficientUnet:
    return train_tiny(2)


@pytest.fixture(scope="session")
def tiny_3d() -> EfficientUnet:
    return train_tiny(3, steps=40)


@pytest.fixture
def camera() -> np.ndarray:
    return data.camera()


@pytest.fixture
def identity_method():
    """A registered method that returns its input, to test the layout and scaling around methods."""

    @methods.register_method("identity-test", "returns its input")
    def factory(ctx):
        def run(item):
            yield 0, 1
            yield 1, 1
            return item.copy()

        return run

    yield "identity-test"
    del methods._registry._REGISTRY["identity-test"]
