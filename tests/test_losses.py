from __future__ import annotations

import pytest
import torch

from napari_adl_denoise.training.losses import (
    adversarial_loss,
    atw_details,
    atw_loss,
    denoiser_loss,
    discriminator_loss,
    histogram_loss,
    soft_histogram,
)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_atw_details_of_a_constant_vanish_and_sum_back(spatial_dims):
    shape = (1, 2) + (40,) * spatial_dims if spatial_dims == 2 else (1, 2) + (24,) * 3
    assert all(d.abs().max() < 1e-6 for d in atw_details(torch.full(shape, 3.0)))
    x = torch.rand(shape)
    details = atw_details(x, levels=3)
    assert len(details) == 3
    # telescoping: x = sum of details + the last smooth image; the smooth residual is smoother than x
    residual = x - sum(details)
    assert residual.std() < x.std()


def test_atw_hand_computed_impulse_1d_profile():
    # a centred impulse: level-1 detail at the centre is 1 - (6/16)^2 (separable 2D smoothing)
    x = torch.zeros(1, 1, 33, 33)
    x[0, 0, 16, 16] = 1.0
    (d1,) = atw_details(x, levels=1)
    assert d1[0, 0, 16, 16].item() == pytest.approx(1 - (6 / 16) ** 2)
    assert d1[0, 0, 16, 17].item() == pytest.approx(-(6 / 16) * (4 / 16))
    # level 2 smooths c1 with taps 2 pixels apart: per axis c2(0) = 6/16*6/16 + 2*(4/16)*(1/16)
    (_, d2) = atw_details(x, levels=2)
    assert d2[0, 0, 16, 16].item() == pytest.approx((6 / 16) ** 2 - (44 / 256) ** 2)


def test_atw_loss_sums_every_level():
    x = torch.rand(2, 1, 64, 64)
    y = torch.rand(2, 1, 64, 64)
    per_level = [
        torch.nn.functional.l1_loss(a, b) for a, b in zip(atw_details(x), atw_details(y), strict=True)
    ]
    assert len(per_level) == 4
    assert atw_loss(x, y).item() == pytest.approx(sum(per_level).item())
    assert atw_loss(x, x).item() == 0


def test_soft_histogram_is_normalised_and_matches_hard_counts():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    hist = soft_histogram(x, bins=16)
    assert hist.shape == (2, 3, 16)
    torch.testing.assert_close(hist.sum(-1), torch.full((2, 3), 16.0))
    # values sitting on bin centres: the soft histogram is the hard counts blurred by the
    # one-bin-wide Gaussian kernel, exp(-k^2 / 2) for a neighbour k bins away
    counts = torch.tensor([0, 5, 1, 0, 0, 9, 0, 2, 0, 0, 0, 0, 3, 0, 0, 7])
    centres = (torch.arange(16) + 0.5) / 16
    on_centres = centres.repeat_interleave(counts).view(1, 1, -1)
    offsets = torch.arange(16).view(-1, 1) - torch.arange(16).view(1, -1)
    expected = torch.exp(-0.5 * offsets.double() ** 2) @ counts.double()
    expected = 16 * expected / expected.sum()
    torch.testing.assert_close(
        soft_histogram(on_centres, bins=16)[0, 0].double(), expected, rtol=1e-5, atol=1e-5
    )


def test_histogram_loss_gradient_moves_the_histogram_toward_the_reference():
    torch.manual_seed(0)
    reference = torch.rand(1, 1, 32, 32) * 0.6 + 0.1
    output = (reference + 0.15).clone().requires_grad_(True)  # the same texture, too bright
    loss = histogram_loss(output, reference, bins=16)
    loss.backward()
    assert output.grad.abs().sum() > 0
    before = (soft_histogram(output, 16) - soft_histogram(reference, 16)).abs().sum()
    opt = torch.optim.Adam([output], lr=0.01)
    for _ in range(30):
        opt.zero_grad()
        histogram_loss(output, reference, bins=16).backward()
        opt.step()
    after = (soft_histogram(output, 16) - soft_histogram(reference, 16)).abs().sum()
    assert after < 0.5 * before
    assert output.mean() < reference.mean() + 0.1  # pulled back toward the reference


def test_histogram_loss_value_is_log_cosh():
    a = torch.zeros(1, 1, 16, 16)
    b = torch.ones(1, 1, 16, 16)
    diff = soft_histogram(a, 8) - soft_histogram(b, 8)
    expected = torch.log(torch.cosh(diff)).mean()
    assert histogram_loss(a, b, bins=8).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_multiscale_denoiser_loss_compares_each_head_with_the_area_downsampled_target(spatial_dims):
    size = (32,) * spatial_dims if spatial_dims == 2 else (16, 16, 16)
    target = torch.rand(2, 1, *size)
    pool = torch.nn.functional.avg_pool2d if spatial_dims == 2 else torch.nn.functional.avg_pool3d
    perfect = (target, pool(target, 2), pool(target, 4))
    total, parts = denoiser_loss(perfect, target)
    assert total.item() == pytest.approx(0, abs=1e-6)
    outputs = tuple(torch.rand_like(t, requires_grad=True) for t in perfect)
    total, parts = denoiser_loss(outputs, target, atw=0, histogram=0)
    expected = sum(torch.nn.functional.l1_loss(o, r) for o, r in zip(outputs, perfect, strict=True))
    assert total.item() == pytest.approx(expected.item())
    total.backward()
    assert all(o.grad is not None and o.grad.abs().sum() > 0 for o in outputs)
    assert set(parts) == {"l1", "atw", "histogram"}
    total, parts = denoiser_loss(outputs, target, l1=0, atw=0, histogram=0, mse=1)
    expected = sum(torch.nn.functional.mse_loss(o, r) for o, r in zip(outputs, perfect, strict=True))
    assert total.item() == pytest.approx(expected.item()) and parts["mse"] == pytest.approx(expected.item())


def test_hinge_losses_hand_computed():
    real = (torch.tensor([[2.0, 0.5]]), torch.tensor([[-1.0]]))
    fake = (torch.tensor([[-2.0, 0.0]]), torch.tensor([[1.0]]))
    # real maps: mean(relu(1-2), relu(1-0.5)) = 0.25 and relu(1+1) = 2
    # fake maps: mean(relu(1-2), relu(1+0)) = 0.5 and relu(1+1) = 2
    assert discriminator_loss(real, fake).item() == pytest.approx(0.25 + 0.5 + 2 + 2)
    assert adversarial_loss(fake).item() == pytest.approx(1.0 - 1.0)
