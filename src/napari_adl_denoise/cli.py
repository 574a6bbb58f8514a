"""The ``adl-denoise`` command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_USAGE = 2


def _tile(text: str) -> int | tuple[int, ...]:
    try:
        sizes = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N,N[,N], got {text!r}") from None
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"sizes must be positive (leave --tile out for automatic tiles), got {text!r}"
        )
    return sizes[0] if len(sizes) == 1 else sizes


def _weights(text: str) -> tuple[float, float, float]:
    from .inference import check_plane_weights

    try:
        return check_plane_weights(tuple(float(t) for t in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers Z,Y,X, e.g. 1,1,2, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    from . import __version__, list_methods
    from .inference import NOISE_MODELS
    from .methods import ENSEMBLE_PASSES
    from .noise import NOISE_KINDS, SIGMA_KINDS
    from .training.fine_tune import MODES, PRESETS

    parser = argparse.ArgumentParser(
        prog="adl-denoise", description="Denoise 2D images and 3D volumes (ADL and baselines)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "denoise",
        help="denoise an image or volume file",
        description="Denoise IN and write OUT. Formats by extension: .tif/.tiff, .nii/.nii.gz "
        "(affine and header kept), .png/.jpg (result rounded to the input's integer type), .npy, "
        ".zarr (read lazily, written block by block: for data larger than memory). TIFF, NIfTI, "
        "NPY and Zarr results are float32 on the input's intensity scale.",
    )
    run.add_argument("input", help="input file")
    run.add_argument("output", help="output file (format from its extension)")
    run.add_argument(
        "--method", default="adl", choices=list_methods(), help="denoising method (default: adl)"
    )
    run.add_argument(
        "--model",
        help="the method's model: a name (see `adl-denoise models`) or a .safetensors file "
        "(default: the method's bundled one for the data)",
    )
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    run.add_argument("--tile", type=_tile, help="tile size: N or one size per axis, e.g. 64,128,128")
    run.add_argument("--overlap", type=float, default=0.25, help="tile overlap fraction (default: 0.25)")
    run.add_argument(
        "--chunks",
        type=_tile,
        help="denoise block by block, N voxels (or one size per axis) a block, with the same result; "
        "with a .zarr output, memory is bounded by the block, not the image (default for a .zarr "
        "input: 256 for volumes, 1024 for 2D; learned methods)",
    )
    run.add_argument(
        "--spatial-dims",
        type=int,
        choices=(2, 3),
        help="2: slice by slice; 3: volume (default: from the data)",
    )
    run.add_argument("--channel-axis", type=int, help="axis of colour channels (PNG/JPEG colour is detected)")
    run.add_argument(
        "--plane-weights",
        type=_weights,
        metavar="Z,Y,X",
        help="a 2D model over a volume: how much the slices taken along each axis count, e.g. 1,0,0 "
        "for slice by slice along Z only (default: by each slice's voxels, a short axis least)",
    )
    run.add_argument(
        "--sigma",
        type=float,
        help="noise sigma on the [0, 1]-normalised scale (classical methods; default: estimated)",
    )
    run.add_argument(
        "--stages",
        type=int,
        choices=(1, 2),
        help="noise-attention: 1 writes the stage-I image (input minus the estimated noise), "
        "2 the two-stage result (default)",
    )
    run.add_argument(
        "--ensemble",
        type=int,
        choices=ENSEMBLE_PASSES,
        help="learned methods: also denoise this many flipped/rotated copies and average them, "
        "at as many times the time (default: 2 for 2D gray images, 1 for colour images and volumes; "
        "8 gains ~0.1 dB)",
    )
    run.add_argument(
        "--noise-map",
        metavar="FILE",
        help="also write the method's own estimate of the noise here (noise-attention: its "
        "first stage; image units, centred on zero)",
    )
    run.add_argument(
        "--noise-model",
        default="blind",
        choices=NOISE_MODELS,
        help="blind (default): the image as it is; poisson_gaussian: photon noise (fluorescence, "
        "low-dose X-ray/CT) made Gaussian by the generalised Anscombe transform first, its gain "
        "estimated unless --gain is given; auto: that transform when the noise grows with intensity",
    )
    run.add_argument(
        "--gain", type=float, help="poisson_gaussian: intensity units per photon (with --offset)"
    )
    run.add_argument(
        "--offset", type=float, help="poisson_gaussian with --gain: intensity of zero photons (default: 0)"
    )
    run.add_argument(
        "--read-noise",
        type=float,
        help="poisson_gaussian with --gain: Gaussian read-out noise sigma in intensity units (default: 0)",
    )

    noise = commands.add_parser(
        "noise",
        help="simulate noise on a clean image or volume",
        description="Add simulated noise to IN and write OUT (float32 unless OUT is PNG/JPEG). "
        "sigma and nu are on the 0-255 scale relative to the data range unless --absolute.",
    )
    noise.add_argument("input")
    noise.add_argument("output")
    noise.add_argument("--kind", default="gaussian", choices=list(NOISE_KINDS), help="default: gaussian")
    noise.add_argument("--sigma", type=float, default=25.0, help="noise level (default: 25)")
    noise.add_argument("--nu", type=float, default=0.0, help="Rician signal offset (default: 0)")
    noise.add_argument("--peak", type=float, default=100.0, help="Poisson photons at the brightest pixel")
    noise.add_argument("--amount", type=float, default=0.05, help="salt-and-pepper fraction")
    noise.add_argument("--seed", type=int, help="random seed (same seed, same noise)")
    noise.add_argument("--absolute", action="store_true", help="sigma and nu in the image's own units")
    noise.add_argument("--clip", action="store_true", help="clip to the clean image's range")

    metrics = commands.add_parser(
        "metrics",
        help="compare an image with a reference",
        description="PSNR, SSIM, MSE, VIFP (and DeltaE for RGB) of TEST against REF. The data range "
        "defaults to the reference's max - min, never to the dtype's range.",
    )
    metrics.add_argument("reference")
    metrics.add_argument("test")
    metrics.add_argument("--data-range", type=float, help="default: the reference's max - min")
    metrics.add_argument("--channel-axis", type=int, help="colour axis (PNG/JPEG colour is detected)")
    metrics.add_argument("--json", action="store_true", help="print JSON instead of a table")

    trainer = commands.add_parser(
        "train",
        help="train an ADL denoiser from a config file",
        description="Train an ADL denoiser (see training/README.md). Writes OUTPUT/checkpoint.pt "
        "(resume state) and OUTPUT/NAME.safetensors (the best model by validation PSNR). Works "
        "under `torchrun --nproc_per_node=K` for data-parallel training.",
    )
    trainer.add_argument("config", help="YAML or JSON training config")
    trainer.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    trainer.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    trainer.add_argument("--max-minutes", type=float, help="stop (checkpointed, resumable) after this long")

    tuner = commands.add_parser(
        "fine-tune",
        help="adapt a model to your own data: clean images, noisy/clean pairs or noisy images only",
        description="Fine-tune a model (any learned method's) on your data. --mode clean: clean "
        "images, noise is simulated on them; pairs: noisy images and, with --targets, their clean "
        "references in the same order; noisy: noisy images alone, learnt self-supervised "
        "(Neighbor2Neighbor; it removes noise independent from pixel to pixel, not stripes or "
        "correlated noise). The last fifth of each image is held out to choose the best weights, "
        "written to OUTPUT when the run ends or on Ctrl-C: a .safetensors file, or a plain name to "
        "keep the model among yours (listed by `adl-denoise models`, used with --model NAME).",
    )
    tuner.add_argument("output", help="a .safetensors file, or a name for your models folder")
    tuner.add_argument("inputs", nargs="+", help="images or volumes, all of one kind")
    tuner.add_argument(
        "--mode", choices=list(MODES), default="clean", help="what the inputs are (default: clean)"
    )
    tuner.add_argument(
        "--targets", nargs="+", help="--mode pairs: the clean reference of each input, same order"
    )
    tuner.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="cpu",
        help="cpu: about 3 min for a 2D image, 5 for a volume, on 2 cores; gpu: longer, on a GPU",
    )
    tuner.add_argument("--model", help="start from this model name or file (default: bundled for the data)")
    tuner.add_argument(
        "--adversarial",
        action="store_true",
        help="clean or pairs: add ADL's adversarial phase (off: it did not pay)",
    )
    tuner.add_argument(
        "--noise", choices=list(SIGMA_KINDS), help="--mode clean: noise to simulate (default: as trained)"
    )
    tuner.add_argument("--sigma-max", type=float, default=55.0, help="with --noise: sigma in [0, S]")
    tuner.add_argument(
        "--steps", type=int, help="steps (default: the preset's, in its time cap; yours run to the end)"
    )
    tuner.add_argument(
        "--max-minutes", type=float, help="stop and save after this long (default: the preset's)"
    )
    tuner.add_argument("--lr", type=float, default=1e-4, help="learning rate (default: 1e-4)")
    tuner.add_argument(
        "--resume",
        action="store_true",
        help="continue a run that was killed (same inputs and options): its state is kept beside "
        "OUTPUT until the run ends",
    )
    tuner.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: the preset's)")
    tuner.add_argument("--spatial-dims", type=int, choices=(2, 3), help="2: volumes slice by slice")
    tuner.add_argument("--channel-axis", type=int, help="axis of colour channels (PNG/JPEG: detected)")

    commands.add_parser("methods", help="list the denoising methods")
    commands.add_parser("models", help="list the models of the learned methods: bundled, then yours")
    return parser


def _check_output(output: str, *inputs: str) -> None:
    """Fail before the work, not after it: an unsupported extension, a missing or read-only
    folder, or a path that is one of the inputs (they are never overwritten)."""
    from .io import image_format

    image_format(output)
    path = Path(output)
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write to the output folder {folder}")
    for source in inputs:
        if path.exists() and Path(source).exists() and path.samefile(source):
            raise ValueError(
                f"output {output} is an input; choose another file (inputs are never overwritten)"
            )


def _denoise(args: argparse.Namespace) -> int:

    from ._chunked import iter_compute, iter_write
    from .inference import (
        COLOUR_ROUTES,
        check_dtype,
        check_values,
        colour_route,
        iter_denoise,
        join_alpha,
        layout,
        split_alpha,
    )
    from .io import image_format, read_image, write_image
    from .methods import get_method, plan_denoise

    _check_output(args.output, args.input)  # bad output names and options fail before any work
    if args.noise_map:
        _check_output(args.noise_map, args.input, args.output)
    noise_map = get_method(args.method).noise_map if args.noise_map else None
    if args.noise_map:
        if image_format(args.noise_map) in ("png", "jpeg"):
            raise ValueError("--noise-map needs a .tif, .nii(.gz) or .npy file: the noise is signed")
        if noise_map is None:
            raise ValueError(f"--noise-map: method {args.method!r} makes no noise estimate")
    noise_model = _noise_model_arg(args)
    blocks = args.chunks is not None or image_format(args.input) == "zarr"
    if blocks and not get_method(args.method).learned:
        raise ValueError(
            f"--method {args.method}: block by block (--chunks, .zarr input) only learned methods run"
        )
    if blocks and args.noise_map:
        raise ValueError("--noise-map is not available block by block (--chunks, .zarr input)")
    src = read_image(args.input)
    channel_axis = _colour_axis(src, args.channel_axis)
    data, alpha = split_alpha(src.data, channel_axis is not None and src.format in ("png", "jpeg"))
    if data.ndim == 2 and channel_axis == -1:  # a gray + alpha PNG: the gray image is denoised
        channel_axis = None
    given = {"sigma": args.sigma, "stages": args.stages, "ensemble": args.ensemble}
    options = {k: v for k, v in given.items() if v is not None}
    if blocks and alpha is not None and data.ndim == 2:
        raise ValueError("a gray + alpha PNG is denoised whole: leave out --chunks")
    kwargs = {
        "model": args.model,
        "device": args.device,
        "tile_shape": args.tile,
        "overlap": args.overlap,
        "channel_axis": channel_axis,
        "spatial_dims": args.spatial_dims,
        "noise_model": noise_model,
        "plane_weights": args.plane_weights,
    }
    if blocks:
        import dask.array as da

        from .inference import denoise

        lazy_kwargs = {**kwargs, "chunks": args.chunks, **options}
        # the whole image, alpha included: block by block keeps an RGBA alpha itself
        lazy_input = src.data if src.format == "zarr" else da.from_array(src.data)
        if image_format(args.output) == "zarr":  # never the whole result in memory
            _run(iter_write(lazy_input, args.output, args.method, **lazy_kwargs), args.method)
            print(f"wrote {args.output} ({args.method}, shape {src.data.shape})")
            return 0
        lazy = denoise(lazy_input, args.method, **lazy_kwargs)
        print(f"{args.method}: {lazy.npartitions} blocks of up to {lazy.chunksize}", file=sys.stderr)
        result = _run(iter_compute(lazy, method=args.method), args.method)
        write_image(args.output, result, like=src)
        print(f"wrote {args.output} ({args.method}, shape {result.shape})")
        return 0
    if get_method(args.method).learned:  # the model, tiles and memory, before the work
        check_dtype(data)  # a bad image is said before the plan, not after it
        check_values(data)
        sd, channels, axis = layout(data.shape, channel_axis, args.spatial_dims)
        shape = tuple(n for a, n in enumerate(data.shape) if a != axis)
        route = None  # denoise's choice for a colour image, told here (it measures it again)
        if channels == 3:
            route = colour_route(data, axis, args.method, args.model, sd, noise_model, device=args.device)
        job = plan_denoise(
            shape,
            sd,
            1 if route else channels,
            method=args.method,
            model=args.model,
            device=args.device,
            tile_shape=args.tile,
            overlap=args.overlap,
        )
        how = f"; {COLOUR_ROUTES[route]}" if route else ""
        print(f"{args.method}: {job.describe()}{how}", file=sys.stderr)
    result = _run(iter_denoise(data, args.method, **kwargs, **options), args.method)
    result = join_alpha(result, alpha)
    write_image(args.output, result, like=src)
    print(f"wrote {args.output} ({args.method}, shape {result.shape})")
    if noise_map is not None:
        noise = _run(noise_map(data, **kwargs), f"{args.method} noise")
        write_image(args.noise_map, noise, like=src)
        print(f"wrote {args.noise_map} (estimated noise, shape {noise.shape})")
    return 0


def _run(steps, description: str):
    """Drive a progress generator with a progress bar; its return value."""
    from tqdm import tqdm

    with tqdm(total=100, unit="%", desc=description, disable=None, leave=False) as bar:
        try:
            while True:
                bar.update(round(next(steps).fraction * 100) - bar.n)
        except StopIteration as stop:
            return stop.value


def _noise_model_arg(args: argparse.Namespace):
    """--noise-model with the camera's --gain, --offset and --read-noise when given."""
    from .noise import NoiseModel

    if args.gain is None:
        if args.offset is not None or args.read_noise is not None:
            raise ValueError("--offset and --read-noise describe a camera with --gain")
        return args.noise_model
    if args.noise_model != "poisson_gaussian" or not args.gain > 0:
        raise ValueError("--gain (> 0) applies to --noise-model poisson_gaussian")
    return NoiseModel(gain=args.gain, offset=args.offset or 0.0, sigma=args.read_noise or 0.0)


def _colour_axis(src, given: int | None) -> int | None:
    if given is None and src.format in ("png", "jpeg") and src.data.ndim == 3:
        return -1
    return given


def _noise(args: argparse.Namespace) -> int:
    from .io import read_image, write_image
    from .noise import add_noise

    _check_output(args.output, args.input)
    src = read_image(args.input)
    noisy = add_noise(
        src.data,
        args.kind,
        sigma=args.sigma,
        nu=args.nu,
        peak=args.peak,
        amount=args.amount,
        relative=not args.absolute,
        clip=args.clip,
        seed=args.seed,
    )
    write_image(args.output, noisy, like=src)
    print(f"wrote {args.output} ({args.kind} noise, shape {noisy.shape})")
    return 0


def _metrics(args: argparse.Namespace) -> int:
    import json

    from .io import read_image
    from .metrics import compare

    reference, test = read_image(args.reference), read_image(args.test)
    scores = compare(reference.data, test.data, args.data_range, _colour_axis(reference, args.channel_axis))
    if args.json:
        print(json.dumps(scores))
    else:
        for name, value in scores.items():
            print(f"{name:<11}{value:>12.4f}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from .training import load_config, train
    from .training.engine import STOP

    config = load_config(args.config)
    steps = train(config, resume=args.resume, device=args.device)
    deadline = time.monotonic() + 60 * args.max_minutes if args.max_minutes else None
    record = None
    with tqdm(total=config.phases.total, unit="step", disable=None) as bar:
        try:
            while True:
                record = next(steps)
                if record.rank != 0:
                    continue
                bar.n = record.step
                bar.set_postfix(phase=record.phase, loss=f"{sum(record.losses.values()):.3f}")
                if record.validation:
                    bar.write(_validation_line(record))
                if deadline and time.monotonic() > deadline:
                    if os.environ.get("WORLD_SIZE", "1") == "1":
                        # one process: the latest weights are scored and kept as `keep` says
                        with contextlib.suppress(StopIteration):
                            steps.send(STOP)
                    steps.close()
                    print(
                        f"stopped after {args.max_minutes} min at step {record.step}; continue with --resume"
                    )
                    return 0
        except StopIteration as stop:
            if record is None or record.rank == 0:
                print(f"wrote {stop.value}")
    return 0


def _validation_line(record) -> str:
    v = record.validation
    if "psnr" in v:
        scores = (
            f"val PSNR {v['psnr']:6.2f} SSIM {v['ssim']:.4f} "
            f"(noisy {v['noisy_psnr']:.2f}/{v['noisy_ssim']:.4f})"
        )
    else:  # noisy-only: no clean reference
        scores = (
            f"neighbour score {v['score']:6.2f} dB (noisy input {v['noisy_score']:.2f}; no clean reference)"
        )
    minutes = record.elapsed / 60
    return f"step {record.step:>7} {record.phase:<13} {scores}  lr {record.lr:.2e}  {minutes:6.1f} min"


def _fine_tune(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .io import read_image
    from .training import NoiseSpec, fine_tune
    from .training.engine import STOP
    from .training.fine_tune import output_path

    output_path(args.output)  # a bad output name fails before the inputs are read
    if (args.mode == "pairs") != bool(args.targets):
        raise ValueError("--targets goes with --mode pairs, and it needs them")
    if args.noise and args.mode != "clean":
        raise ValueError("--noise goes with --mode clean: the other modes learn the noise in your images")
    sources = [read_image(p) for p in [*args.inputs, *(args.targets or [])]]
    axes = {_colour_axis(s, args.channel_axis) for s in sources}
    if len(axes) > 1:
        raise ValueError("inputs mix colour PNG/JPEG images with other images: give one kind at a time")
    channel_axis = axes.pop()
    colour = channel_axis is not None
    arrays = [s.data[..., :3] if colour and s.format in ("png", "jpeg") else s.data for s in sources]
    images, targets = arrays[: len(args.inputs)], arrays[len(args.inputs) :] or None
    noise = [NoiseSpec(kind=args.noise, sigma=(0.0, args.sigma_max))] if args.noise else None
    steps = fine_tune(
        images,
        args.output,
        mode=args.mode,
        targets=targets,
        model=args.model,
        channel_axis=channel_axis,
        spatial_dims=args.spatial_dims,
        noise=noise,
        preset=args.preset,
        steps=args.steps,
        max_minutes=args.max_minutes,
        lr=args.lr,
        device=args.device,
        adversarial=args.adversarial,
        resume=args.resume,
    )
    stopping: list[bool] = []  # one entry per Ctrl-C: whether training had started then
    started = False

    def stop_soon(*_) -> None:  # the first Ctrl-C stops and saves the best weights so far
        signal.signal(signal.SIGINT, previous)  # a second one interrupts at once
        stopping.append(started)
        saving = "saving the best weights so far" if started else "nothing trained, nothing saved"
        print(f"\nstopping: {saving}", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, stop_soon)
    try:
        with tqdm(unit="step", disable=None) as bar:
            try:
                while True:
                    record = steps.send(STOP if stopping else None)
                    if stopping and not stopping[0]:  # stopped while loading: the starting model
                        steps.close()
                        return 130
                    started = True
                    bar.total = record.total
                    bar.n = record.step
                    bar.refresh()
                    if record.validation:
                        bar.write(_validation_line(record))
            except StopIteration as stop:
                print(f"wrote {stop.value}")
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0


def _methods(args: argparse.Namespace) -> int:
    from .methods import get_method, list_methods

    for name in list_methods():
        method = get_method(name)
        status = "" if method.available else f"  [needs `{method.requires}`]"
        print(f"{name:<13} {method.description}{status}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from .methods import method_for_kind
    from .weights import bundled_dir, list_models, user_models_dir

    models = list_models()
    if not any(m.bundled for m in models):
        print(f"no bundled models are installed (looked in {bundled_dir()})")
    rows = [(m, getattr(method_for_kind(m.config.kind, m.name), "name", m.config.kind)) for m in models]
    name_width = max((len(m.name) for m, _ in rows), default=0)
    method_width = max((len(method) for _, method in rows), default=0)
    for m, method in rows:
        yours = "" if m.bundled else "[yours] "
        print(f"{m.name:<{name_width}}  {method:<{method_width}}  {m.data_kind:<7}  {yours}{m.description}")
    print(f"your models folder: {user_models_dir()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad input, with a one-line message)."""
    from .methods import NoModelError

    args = _parser().parse_args(argv)
    try:
        handler = {
            "denoise": _denoise,
            "noise": _noise,
            "metrics": _metrics,
            "train": _train,
            "fine-tune": _fine_tune,
            "methods": _methods,
            "models": _models,
        }
        return handler[args.command](args)
    except (ValueError, NoModelError, OSError, MemoryError) as exc:
        print(f"adl-denoise: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("adl-denoise: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
