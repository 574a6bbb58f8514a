"""Bundle a trained model into the package: fp16 weights, a full model card, a Markdown card.

Reads the best model of a run (``runs/<name>/<name>.safetensors``), measures it blind on the
held-out validation images of its kind at sigma = 15, 25 and 50 in float32 and float16, and
writes ``src/napari_adl_denoise/weights/<name>.safetensors`` (float16 unless that costs more
than 0.05 dB) with the card in its metadata: config, parameter count, the training images and
their sources, noise model, steps, wall time, hardware and the validation PSNR/SSIM per sigma;
``<name>.md`` beside it shows the same for people, followed by ``--notes`` (a Markdown file:
the choices the paper left open, with their reasons), which the card keeps too. ``--average
OTHER FRACTION`` bundles the weight average ``FRACTION * model + (1 - FRACTION) * OTHER`` of two
runs of one lineage (a "model soup"), recorded in the card.

    python training/bundle.py runs/adl-2d-gray/adl-2d-gray.safetensors
    python training/bundle.py runs/adaptive-cnn-2d-gray/adaptive-cnn-2d-gray.safetensors \
        --notes training/configs/adaptive-cnn-2d-gray.md
    python training/bundle.py runs/noise-attention-2d-gray/noise-attention-2d-gray.safetensors \
        --notes training/configs/noise-attention-2d-gray.md
    python training/bundle.py runs/idgan-2d-rgb/idgan-2d-rgb.safetensors \
        --notes training/configs/idresnet-2d-rgb.md
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
from pathlib import Path

import numpy as np
import torch
from ablation import SIGMAS, evaluate, load_val_images, val_files

from napari_adl_denoise.methods import method_for_kind
from napari_adl_denoise.methods._learned import default_passes
from napari_adl_denoise.models import parse_config
from napari_adl_denoise.weights import bundled_dir, load_model, save_model

HERE = Path(__file__).parent
FP16_TOLERANCE_DB = 0.05


def kind_of(config) -> str:
    if config.spatial_dims == 3:
        return "3d"
    return "2d-rgb" if config.in_channels == 3 else "2d-gray"


def validate(model, kind: str, data: Path) -> dict:
    """Mean PSNR/SSIM of the denoised held-out images, blind, per sigma."""
    images = load_val_images(data, kind)
    rgb = kind == "2d-rgb"
    method = method_for_kind(model.config.kind).name
    noisy, denoised = evaluate(None, "noisy", images, rgb=rgb), evaluate(model, method, images, rgb=rgb)
    scores: dict = {
        str(s): {
            "psnr": round(denoised[s][0], 3),
            "ssim": round(denoised[s][1], 4),
            "noisy_psnr": round(noisy[s][0], 3),
        }
        for s in SIGMAS
    }
    scores["images"] = [p.name for p in val_files(data, kind)]
    scores["passes"] = default_passes(model.config.spatial_dims, model.config.in_channels)
    return scores


def training_images(card: dict, data: Path) -> list[str]:
    """The files the run's glob patterns matched, each with its source package."""
    manifest = json.loads((data / "manifest.json").read_text())
    files = sorted(
        {Path(f).resolve() for pattern in card.get("training_data", []) for f in glob.glob(pattern)}
    )
    if not files:
        raise SystemExit(
            f"the run's training images {card.get('training_data')} are not here: run from its folder"
        )
    keys = [str(f.relative_to(data)) if f.is_relative_to(data) else "" for f in files]
    return [f"{f.name}: {manifest.get(key, 'unknown source')}" for f, key in zip(files, keys, strict=True)]


def network(card: dict) -> str:
    """One line on the network, by family."""
    cfg = card["model_config"]
    where = f"{card['parameters']:,} parameters: spatial_dims {cfg['spatial_dims']}"
    where += f", channels {cfg['in_channels']}"
    if cfg.get("kind", "efficient_unet") == "efficient_unet":
        guided = (
            f"; refines `{cfg['guide']}` over three slicing directions (the noisy volume, that model's "
            "three results and their plane-weighted mean in, a correction of the mean out)"
            if cfg.get("guide")
            else ""
        )
        return (
            f"- Efficient-Unet, {where}, filter_base {cfg['filter_base']}, enhancer kernel "
            f"{cfg['enhancer_kernel']}, norm {cfg['norm']}, output {cfg['output_activation']}{guided}"
        )
    if cfg["kind"] == "noise_attention":
        return (
            f"- Two-stage noise-attention network, {where}; each stage {cfg['blocks']} gated RRDB(s) "
            f"of {cfg['features']} channels (growth {cfg['growth']}), noise attention block "
            f"{'on' if cfg['attention'] else 'off'}, stage II refining the stage-I image: "
            f"{cfg['refine_residual']}, stage I trained on its own objective only: {cfg['detach_estimate']}"
        )
    if cfg["kind"] == "idresnet":
        disc = card["training_config"]["discriminator"]
        line = (
            f"- IDResNet generator, {where}; {cfg['blocks']} residual blocks of {cfg['features']} "
            f"channels without batch norm, {cfg['outer_kernel']}x{cfg['outer_kernel']} outer "
            f"convolutions, PReLU, output {cfg['output_activation']} on the [-1, 1] scale, "
            f"noise-predicting: {cfg['image_residual']}"
        )
        if card["training_config"]["phases"]["adversarial"] and disc.get("kind") == "srgan_discriminator":
            line += (
                f"; trained against an SRGAN discriminator (filter base {disc['filter_base']}, dense "
                f"{disc['dense']})"
            )
        return line
    return (
        f"- Multi-scale adaptive CNN, {where}; feature layer of {cfg['feature_channels']} channels "
        f"with kernels {cfg['feature_kernels']}, {cfg['damping_layers']} damping layers of "
        f"{sum(cfg['feature_channels'])} channels, {cfg['reconstruction_layers']} reconstruction "
        f"layers of {cfg['reconstruction_channels']} channels, lp p = {cfg['lp']}, dropout "
        f"{cfg['dropout']} in the clean-to-clean phase"
    )


def markdown(name: str, card: dict) -> str:
    val = card["validation_per_sigma"]
    phases = card["training_config"]["phases"]
    lines = [
        f"# {name}",
        "",
        card.get("description", ""),
        "",
        network(card),
        f"- Weights stored as {card['storage_dtype']} ({card['fp16_psnr_change_db']:+.3f} dB against float32 "
        "on the validation images)",
        f"- Trained {card['steps']} steps in {card['wall_time_s'] / 3600:.2f} h on {card['hardware']}",
        f"- Noise (blind): {json.dumps(card['noise'])}",
        f"- Loss weights: {json.dumps(card['training_config']['loss'])}",
        f"- Phases (steps): {json.dumps(phases)}",
        f"- Training images ({len(card['training_images'])}): " + "; ".join(card["training_images"]),
    ]
    init = card["training_config"].get("init")
    if init:
        same = load_model(init).config == parse_config(card["training_config"]["model"])
        how = (
            "continued from its weights"
            if same
            else "grown into this network by `inflate_weights` (2D to 3D, wider, gray to RGB in "
            "opponent colour space, or unguided to guided)"
        )
        lines.append(
            f"- Started from `{init}` (see its card), {how}, so its training images and time come on top "
            "of these"
        )
    passes = val.get("passes")
    passes = f", {passes} self-ensemble pass{'es' if passes > 1 else ''}" if passes else ""
    lines += [
        "",
        f"Validation, blind, on held-out {', '.join(val['images'])} (Gaussian noise, 0-255 scale{passes}):",
        "",
        "| sigma | noisy PSNR | PSNR | SSIM |",
        "|---|---|---|---|",
    ]
    for sigma in SIGMAS:
        row = val[str(sigma)]
        lines.append(f"| {sigma} | {row['noisy_psnr']:.2f} | {row['psnr']:.2f} | {row['ssim']:.3f} |")
    lines += [
        "",
        f"Reproduce: `{card['recipe']}` to step {card['steps']}, in sessions with `--resume "
        f'--max-minutes N` as needed (training/README.md, "Training log: {name}", lists each '
        "session's length, threads and learning rate)",
        "",
    ]
    if card.get("notes"):
        lines += [card["notes"].strip(), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the run's best model (.safetensors)")
    parser.add_argument("--name", help="bundled name (default: the file's stem)")
    parser.add_argument("--recipe", help="command that reproduces it (default: the training config)")
    parser.add_argument("--hardware", help="describe the training hardware (default: the run's card)")
    parser.add_argument("--notes", type=Path, help="Markdown appended to the card: the choices made")
    parser.add_argument(
        "--average",
        nargs=2,
        metavar=("OTHER", "FRACTION"),
        help="bundle FRACTION * model + (1 - FRACTION) * OTHER (.safetensors of the same network)",
    )
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--output", type=Path, default=bundled_dir())
    args = parser.parse_args()

    name = args.name or args.model.stem
    loaded = load_model(args.model)
    if args.average:
        other, fraction = load_model(args.average[0]), float(args.average[1])
        if other.config != loaded.config or not 0 < fraction < 1:
            raise SystemExit("--average needs a model of the same network and a fraction in (0, 1)")
        mine, theirs = loaded.model.state_dict(), other.model.state_dict()
        floats = {k: v for k, v in mine.items() if v.is_floating_point()}
        mixed = {k: fraction * v + (1 - fraction) * theirs[k] for k, v in floats.items()}
        loaded.model.load_state_dict({**mine, **mixed})
        loaded.card["averaged_with"] = {
            "model": other.name,
            "steps": other.card.get("steps"),
            "other_fraction": round(1 - fraction, 4),
        }
    kind = kind_of(loaded.config)
    fp32 = validate(loaded.model, kind, args.data)
    half = copy.deepcopy(loaded)
    half.model.load_state_dict({k: v.half().float() for k, v in loaded.model.state_dict().items()})
    fp16 = validate(half.model, kind, args.data)
    change = float(np.mean([fp16[str(s)]["psnr"] - fp32[str(s)]["psnr"] for s in SIGMAS]))
    use_half = change > -FP16_TOLERANCE_DB
    card = {
        **loaded.card,
        "name": name,
        "model_config": loaded.config.model_dump(mode="json"),
        "training_images": training_images(loaded.card, args.data.resolve()),
        "validation_per_sigma": fp16 if use_half else fp32,
        "fp16_psnr_change_db": round(change, 4),
        "recipe": args.recipe
        or f"adl-denoise train training/configs/{loaded.card['training_config']['name']}.yaml",
    }
    if args.hardware:
        card["hardware"] = args.hardware
    if args.notes:
        card["notes"] = args.notes.read_text()
    card["storage_dtype"] = "float16" if use_half else "float32"
    args.output.mkdir(parents=True, exist_ok=True)
    target = args.output / f"{name}.safetensors"
    save_model(
        half.model if use_half else loaded.model,
        target,
        card,
        dtype=torch.float16 if use_half else torch.float32,
    )
    tmp = target.with_suffix(".md.tmp")
    tmp.write_text(markdown(name, card))
    tmp.replace(target.with_suffix(".md"))
    print(markdown(name, card))
    print(f"wrote {target} ({target.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
