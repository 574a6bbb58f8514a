from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from napari_adl_denoise import denoise
from napari_adl_denoise.models import (
    DiscriminatorConfig,
    EfficientUnet,
    EfficientUnetConfig,
    EfficientUnetDiscriminator,
)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_2d_gray_config_has_4_72m_parameters():
    count = n_params(EfficientUnet(EfficientUnetConfig()))
    assert abs(count - 4.72e6) / 4.72e6 < 0.02, count


def test_default_widths_and_kernels():
    assert EfficientUnetConfig().widths == (96, 128, 160, 192)
    assert DiscriminatorConfig().widths == (48, 64, 80, 96)
    assert EfficientUnetConfig(spatial_dims=2).enhancer_kernel == 7
    assert EfficientUnetConfig(spatial_dims=3).enhancer_kernel == 3
    assert EfficientUnetConfig(in_channels=3).out_channels == 3


@pytest.mark.parametrize(
    "bad",
    [
        {"spatial_dims": 4},
        {"in_channels": 2},
        {"filter_base": 0},
        {"enhancer_kernel": 4},
        {"norm": "group"},
        {"depth": 3},
    ],
)
def test_invalid_config_is_rejected(bad):
    with pytest.raises(ValidationError):
        EfficientUnetConfig(**bad)


CONFIGS = [
    EfficientUnetConfig(spatial_dims=sd, in_channels=c, filter_base=4, norm=n, output_activation=a)
    for sd, c, n, a in itertools.product((2, 3), (1, 3), ("batch", "none"), ("sigmoid", "none", "residual"))
]


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: f"{c.spatial_dims}d-c{c.in_channels}-{c.norm}-{c.output_activation}"
)
def test_every_config_denoises_odd_sizes(config):
    shape = (33, 47) if config.spatial_dims == 2 else (17, 33, 41)
    net = EfficientUnet(config).eval()
    rng = np.random.default_rng(0)
    image = rng.random((*shape, 3) if config.in_channels == 3 else shape).astype(np.float32)
    out = denoise(
        image,
        model=net,
        channel_axis=-1 if config.in_channels == 3 else None,
        spatial_dims=config.spatial_dims,
    )
    assert out.shape == image.shape and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_the_callers_network_is_left_as_it_was():
    net = EfficientUnet(EfficientUnetConfig(filter_base=4)).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    denoise(np.random.default_rng(0).random((24, 24)), model=net)
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_multiscale_heads_and_discriminator_shapes(spatial_dims):
    size = (16, 24, 32)[-spatial_dims:]
    x = torch.rand(2, 1, *size)
    full, half, quarter = EfficientUnet(EfficientUnetConfig(spatial_dims=spatial_dims, filter_base=4))(
        x, multiscale=True
    )
    assert full.shape == x.shape
    assert half.shape[2:] == tuple(s // 2 for s in size)
    assert quarter.shape[2:] == tuple(s // 4 for s in size)
    maps = EfficientUnetDiscriminator(DiscriminatorConfig(spatial_dims=spatial_dims, filter_base=4))(x)
    assert [m.shape[2:] for m in maps] == [tuple(s // f for s in size) for f in (8, 1, 2, 4)]
    assert all(m.shape[:2] == (2, 1) for m in maps)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_residual_output_is_the_input_minus_the_heads_noise_estimate(spatial_dims):
    net = EfficientUnet(
        EfficientUnetConfig(spatial_dims=spatial_dims, filter_base=4, output_activation="residual")
    )
    for head in (net.head_full, net.head_half, net.head_quarter):
        torch.nn.init.zeros_(head.to_image.weight)  # no noise estimated: the input comes back
    x = torch.rand(1, 1, *(16,) * spatial_dims)
    pool = torch.nn.functional.avg_pool2d if spatial_dims == 2 else torch.nn.functional.avg_pool3d
    full, half, quarter = net(x, multiscale=True)
    torch.testing.assert_close(full, x)
    torch.testing.assert_close(half, pool(x, 2))
    torch.testing.assert_close(quarter, pool(x, 4))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("output", ["none", "residual"])
def test_norm_none_is_truly_bias_free(spatial_dims, output):
    """Without biases or norms the network is positively homogeneous: f(a x) = a f(x)."""
    config = EfficientUnetConfig(
        spatial_dims=spatial_dims, filter_base=4, norm="none", output_activation=output
    )
    net = EfficientUnet(config).eval()
    assert not [n for n, _ in net.named_parameters() if "bias" in n]
    x = torch.rand(1, 1, *(16,) * spatial_dims)
    with torch.no_grad():
        torch.testing.assert_close(net(3.0 * x), 3.0 * net(x), rtol=1e-4, atol=1e-5)


def test_forward_rejects_sizes_not_multiple_of_8():
    with pytest.raises(ValueError, match="multiples of 8"):
        EfficientUnet(EfficientUnetConfig(filter_base=4))(torch.rand(1, 1, 20, 24))
