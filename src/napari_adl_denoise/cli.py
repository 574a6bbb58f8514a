"""The ``adl-denoise`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

EXIT_USAGE = 2


def _tile(text: str) -> int | tuple[int, ...]:
    try:
        sizes = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N,N[,N], got {text!r}") from None
    return sizes[0] if len(sizes) == 1 else sizes


def _parser() -> argparse.ArgumentParser:
    from . import __version__, list_methods

    parser = argparse.ArgumentParser(
        prog="adl-denoise", description="Denoise 2D images and 3D volumes (ADL and baselines)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "denoise",
        help="denoise an image or volume file",
        description="Denoise IN and write OUT. Formats by extension: .tif/.tiff, .nii/.nii.gz "
        "(affine and header kept), .png/.jpg (result rounded to the input's integer type), .npy. "
        "TIFF, NIfTI and NPY results are float32 on the input's intensity scale.",
    )
    run.add_argument("input", help="input file")
    run.add_argument("output", help="output file (format from its extension)")
    run.add_argument(
        "--method", default="adl", choices=list_methods(), help="denoising method (default: adl)"
    )
    run.add_argument(
        "--model",
        help="ADL model: a bundled name or a .safetensors file (default: bundled model for the data)",
    )
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    run.add_argument("--tile", type=_tile, help="tile size: N or one size per axis, e.g. 64,128,128")
    run.add_argument("--overlap", type=float, default=0.25, help="tile overlap fraction (default: 0.25)")
    run.add_argument(
        "--spatial-dims",
        type=int,
        choices=(2, 3),
        help="2: slice by slice; 3: volume (default: from the data)",
    )
    run.add_argument("--channel-axis", type=int, help="axis of colour channels (PNG/JPEG colour is detected)")
    run.add_argument(
        "--sigma",
        type=float,
        help="noise sigma on the [0, 1]-normalised scale (classical methods; default: estimated)",
    )

    commands.add_parser("methods", help="list the denoising methods")
    commands.add_parser("models", help="list the bundled ADL models")
    return parser


def _denoise(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .inference import iter_denoise
    from .io import image_format, read_image, write_image

    image_format(args.output)  # reject a bad output name before any work
    src = read_image(args.input)
    data, alpha = src.data, None
    channel_axis = args.channel_axis
    if channel_axis is None and src.format in ("png", "jpeg") and data.ndim == 3:
        if data.shape[-1] == 4:  # denoise colour, keep transparency as it is
            data, alpha = data[..., :3], data[..., 3:]
        channel_axis = -1
    options = {"sigma": args.sigma} if args.sigma is not None else {}
    steps = iter_denoise(
        data,
        args.method,
        model=args.model,
        device=args.device,
        tile_shape=args.tile,
        overlap=args.overlap,
        channel_axis=channel_axis,
        spatial_dims=args.spatial_dims,
        **options,
    )
    with tqdm(total=100, unit="%", desc=f"{args.method}", disable=None, leave=False) as bar:
        try:
            while True:
                bar.update(round(next(steps).fraction * 100) - bar.n)
        except StopIteration as stop:
            result = stop.value
    if alpha is not None:
        result = np.concatenate([result, alpha.astype(result.dtype)], axis=-1)
    write_image(args.output, result, like=src)
    print(f"wrote {args.output} ({args.method}, shape {result.shape})")
    return 0


def _methods() -> int:
    from .methods import get_method, list_methods

    for name in list_methods():
        method = get_method(name)
        status = "" if method.available else f"  [needs `{method.requires}`]"
        print(f"{name:<9} {method.description}{status}")
    return 0


def _models() -> int:
    from .weights import bundled_dir, list_models

    models = list_models()
    if not models:
        print(f"no bundled ADL models are installed (looked in {bundled_dir()})")
    for m in models:
        c = m.config
        kind = f"{c.spatial_dims}D {'RGB' if c.in_channels == 3 else 'gray'}"
        print(f"{m.name:<14} {kind:<8} {m.description}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad input, with a one-line message)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "denoise":
            return _denoise(args)
        return _methods() if args.command == "methods" else _models()
    except (ValueError, LookupError, OSError, MemoryError) as exc:
        print(f"adl-denoise: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("adl-denoise: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
