"""The training/ folder: data assembly and the recipe configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from napari_adl_denoise.models import EfficientUnet
from napari_adl_denoise.training import inflate_weights, load_config
from napari_adl_denoise.weights import list_models

ROOT = Path(__file__).resolve().parents[1]


def test_assembled_sets_hold_out_validation_images(tmp_path):
    out = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "training" / "assemble_data.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "2d-gray" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert files == set(manifest)
    for kind in ("2d-gray", "2d-rgb", "3d"):
        train = {Path(f).name for f in files if f.startswith(f"{kind}/train/")}
        val = {Path(f).name for f in files if f.startswith(f"{kind}/val/")}
        assert train and val and not train & val
    sources = set(manifest.values())
    assert not any("skin" in s or "nuclei" in s or "tomo" in s or "image_10426" in s for s in sources)


@pytest.mark.parametrize("name", ["paper-adl-2d-gray", "paper-adl-2d-rgb", "paper-adl-3d-gray"])
def test_recipe_configs_are_valid_and_follow_the_paper(name):
    config = load_config(ROOT / "training" / "configs" / f"{name}.yaml")
    assert config.name == name
    assert config.noise[0].kind == "gaussian" and config.noise[0].sigma == (0, 55)
    assert config.optim.lr == 1e-4
    if name.endswith("3d-gray"):
        assert {n.kind for n in config.noise} == {"gaussian", "rician", "rayleigh"}
        assert config.model.enhancer_kernel == 3


CPU_RECIPES = sorted(p.stem for p in (ROOT / "training" / "configs").glob("adl-*.yaml"))


@pytest.mark.parametrize("name", CPU_RECIPES)
def test_cpu_recipes_are_the_compute_efficient_choice(name):
    config = load_config(ROOT / "training" / "configs" / f"{name}.yaml")
    assert config.name == name
    assert config.model.filter_base in (8, 16, 24) and config.model.enhancer_kernel == 3
    assert config.model.norm == "none" and config.model.output_activation == "residual"
    assert config.noise[0].kind == "gaussian" and config.noise[0].sigma == (0, 55)
    assert config.model.in_channels == (3 if "rgb" in name else 1)
    assert config.model.spatial_dims == (3 if "3d" in name else 2)
    if config.model.spatial_dims == 3 and not config.model.guide:
        assert {n.kind for n in config.noise} == {"gaussian", "rician", "rayleigh"}
    if config.model.guide:  # a guided network learns its 2D guide's noise
        guide = load_config(ROOT / "training" / "configs" / f"{config.model.guide}.yaml")
        assert {n.kind for n in config.noise} <= {n.kind for n in guide.noise}
    if config.init and not config.init.startswith("runs/"):  # bundled (not a run's output): it fits
        inflate_weights(config.init, EfficientUnet(config.model))


@pytest.mark.parametrize("model", list_models(user=False), ids=lambda m: m.name)
def test_each_bundled_model_names_the_recipe_that_trained_it(model):
    config = load_config(ROOT / "training" / "configs" / f"{model.card['training_config']['name']}.yaml")
    assert config.model == model.config
    assert model.card["recipe"].endswith(f"training/configs/{config.name}.yaml")


@pytest.mark.parametrize("name", ["adaptive-cnn-2d-gray", "paper-adaptive-cnn-2d-gray"])
def test_adaptive_cnn_recipes_follow_the_papers_three_phases(name):
    config = load_config(ROOT / "training" / "configs" / f"{name}.yaml")
    model, phases, loss = config.model, config.phases, config.loss
    assert config.name == name and model.kind == "adaptive_cnn" and model.spatial_dims == 2
    full = name.startswith("paper")
    assert model.feature_channels == ((32, 40, 48, 56, 64) if full else (16, 20, 24, 28, 32))
    assert model.reconstruction_channels == (128 if full else 64)
    assert (model.damping_layers, model.reconstruction_layers, model.lp, model.dropout) == (3, 3, 0.1, 0.7)
    assert min(phases.clean_to_clean, phases.denoiser_warmup, phases.adversarial) > 0
    assert phases.discriminator_steps == 2 and loss.adversarial_ramp == 0.99
    assert loss.mse == 1 and loss.l1 == loss.atw == loss.histogram == 0 and loss.lp > 0
    assert config.optim.adversarial_lr == 1e-5


@pytest.mark.parametrize(
    "name", ["noise-attention-2d-gray-stage1", "noise-attention-2d-gray", "paper-noise-attention-2d-gray"]
)
def test_noise_attention_recipes_follow_the_paper(name):
    """Algorithm 1's noise, both stages' objectives, Adam 5e-4 (0.9, 0.99); the paper-size
    recipe has Table VII's width and depth and its batch of 24."""
    config = load_config(ROOT / "training" / "configs" / f"{name}.yaml")
    model, loss = config.model, config.loss
    assert config.name == name and model.kind == "noise_attention" and model.attention
    assert [(n.kind, n.sigma) for n in config.noise] == [("mixed", (0, 75))]
    assert (loss.stage, loss.l1) == (1, 1) and loss.mse == loss.atw == loss.histogram == loss.adversarial == 0
    assert config.optim.lr == 5e-4 and config.optim.betas == (0.9, 0.99)
    full = name.startswith("paper")
    assert (model.features, model.blocks, model.growth) == ((32, 3, 8) if full else (16, 1, 8))
    assert config.data.batch_size == (24 if full else 16)
    assert config.init == (
        "runs/noise-attention-2d-gray-stage1/noise-attention-2d-gray-stage1.safetensors"
        if name == "noise-attention-2d-gray"
        else None
    )


@pytest.mark.parametrize(
    "name", ["idresnet-2d-rgb", "idgan-2d-rgb", "paper-idresnet-2d-rgb", "paper-idgan-2d-rgb"]
)
def test_idresnet_and_idgan_recipes_follow_the_paper(name):
    """Phase 1 is MSE only; phase 2 starts from phase 1's weights with the detail loss (MSE
    0.001 on the [-1, 1] scale, content, adversarial 0.001 in the log form) against an SRGAN
    discriminator, alternating from the first step and keeping its latest weights."""
    config = load_config(ROOT / "training" / "configs" / f"{name}.yaml")
    model, loss, phases = config.model, config.loss, config.phases
    full = name.startswith("paper")
    assert model.kind == "idresnet" and model.in_channels == 3 and not model.image_residual
    assert (model.features, model.blocks, model.outer_kernel) == ((64, 32, 9) if full else (32, 12, 9))
    assert config.discriminator.kind == "srgan_discriminator" and config.data.batch_size == 16
    assert loss.l1 == loss.atw == loss.histogram == 0
    if "idresnet" in name:
        assert (loss.mse, loss.content, loss.adversarial, phases.adversarial) == (1, 0, 0, 0)
        assert config.init is None and config.keep == "best"
    else:
        assert (loss.mse, loss.adversarial, loss.gan) == (0.004, 0.001, "log")
        assert loss.content == (0.0061 if full else 0.5) and loss.feature_net
        assert phases.denoiser_warmup == phases.discriminator_warmup == 0 and phases.adversarial > 0
        assert (
            config.init
            == f"runs/{name.replace('idgan', 'idresnet')}/{name.replace('idgan', 'idresnet')}.safetensors"
        )
        assert config.keep == "last" and config.optim.lr == 1e-4
