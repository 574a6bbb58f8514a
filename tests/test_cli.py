from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest
import tifffile
from nibabel.testing import data_path
from skimage import data as skdata

from napari_adl_denoise import add_noise, denoise, save_model
from napari_adl_denoise.cli import main


@pytest.fixture
def noisy_png(tmp_path):
    rng = np.random.default_rng(0)
    rgb = np.clip(rng.normal(128, 40, (40, 56, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "in.png"
    iio.imwrite(path, rgb)
    return path


def test_png_rgb_keeps_colour_and_integer_type(noisy_png, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert main(["denoise", str(noisy_png), str(out), "--method", "tv"]) == 0
    result = iio.imread(out)
    assert result.shape == (40, 56, 3) and result.dtype == np.uint8
    assert result.std() < iio.imread(noisy_png).std()
    assert "wrote" in capsys.readouterr().out


def test_colour_noise_the_channels_share_is_named_and_denoised_as_the_api_does(tmp_path, capsys):
    clean = skdata.astronaut()[:96, :128].astype(np.float32)
    shared = np.random.default_rng(0).normal(0, 25, clean.shape[:-1] + (1,)).astype(np.float32)
    for name, noisy, told in (
        ("shared", clean + shared, True),
        ("own", add_noise(clean, sigma=25, seed=0), False),
    ):
        tifffile.imwrite(tmp_path / f"{name}.tif", noisy)
        assert (
            main(
                [
                    "denoise",
                    str(tmp_path / f"{name}.tif"),
                    str(tmp_path / f"{name}-out.tif"),
                    "--channel-axis",
                    "-1",
                ]
            )
            == 0
        )
        err = capsys.readouterr().err
        assert ("noise the colour channels share" in err) is told and ("adl-2d-gray-real" in err) is told
        expected = denoise(noisy, channel_axis=-1)
        np.testing.assert_array_equal(tifffile.imread(tmp_path / f"{name}-out.tif"), expected)


def test_png_16_bit_colour_and_gray_with_alpha_keep_their_depth_and_alpha(noisy_png, tmp_path):
    from napari_adl_denoise.io import read_image, write_image

    rgb16 = iio.imread(noisy_png).astype(np.uint16) * 257 + 3  # values no 8-bit image can hold
    write_image(tmp_path / "rgb16.png", rgb16, like=read_image(noisy_png).__class__(rgb16, "png"))
    assert read_image(tmp_path / "rgb16.png").data.dtype == np.uint16
    np.testing.assert_array_equal(read_image(tmp_path / "rgb16.png").data, rgb16)
    assert main(["denoise", str(tmp_path / "rgb16.png"), str(tmp_path / "out16.png"), "--method", "tv"]) == 0
    result = read_image(tmp_path / "out16.png").data
    assert result.dtype == np.uint16 and result.shape == rgb16.shape and result.max() > 255

    gray = iio.imread(noisy_png)[..., 0]
    alpha = np.tile(np.linspace(0, 255, 56).astype(np.uint8), (40, 1))
    iio.imwrite(tmp_path / "la.png", np.stack([gray, alpha], axis=-1))
    assert main(["denoise", str(tmp_path / "la.png"), str(tmp_path / "out-la.png"), "--method", "tv"]) == 0
    result = iio.imread(tmp_path / "out-la.png")
    assert result.shape == (40, 56, 2)
    np.testing.assert_array_equal(result[..., 1], alpha)  # the alpha as it was, the gray denoised
    assert result[..., 0].std() < gray.std()


def test_png_rgba_denoises_the_colour_and_keeps_alpha_exactly(noisy_png, tmp_path):
    rgb = iio.imread(noisy_png)
    alpha = np.tile(np.linspace(0, 255, 56).astype(np.uint8), (40, 1))[..., None]
    iio.imwrite(tmp_path / "rgba.png", np.concatenate([rgb, alpha], axis=-1))
    assert main(["denoise", str(tmp_path / "rgba.png"), str(tmp_path / "out.png"), "--method", "tv"]) == 0
    result = iio.imread(tmp_path / "out.png")
    assert result.shape == (40, 56, 4)
    np.testing.assert_array_equal(result[..., 3:], alpha)
    assert result[..., :3].std() < rgb.std()


def test_nifti_keeps_affine_header_and_spacing(tmp_path):
    src = nib.load(f"{data_path}/anatomical.nii")
    out = tmp_path / "out.nii.gz"
    assert main(["denoise", f"{data_path}/anatomical.nii", str(out), "--method", "wavelet"]) == 0
    result = nib.load(out)
    assert result.shape == src.shape
    np.testing.assert_array_equal(result.affine, src.affine)
    assert result.header.get_zooms() == src.header.get_zooms()
    assert result.get_data_dtype().str[1:] == "f4"  # float32, in the source header's byte order
    assert result.header["descrip"] == src.header["descrip"]


@pytest.fixture
def series(tmp_path):
    """A 4D NIfTI time series (x, y, z, t), as scanners write fMRI and diffusion data."""
    data = np.random.default_rng(0).normal(100, 10, (20, 24, 16, 3)).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    img.header.set_zooms((2.0, 2.0, 3.0, 1.5))
    nib.save(img, tmp_path / "series.nii.gz")
    return tmp_path / "series.nii.gz"


def test_a_4d_nifti_is_denoised_volume_by_volume_and_keeps_its_layout(series, tmp_path):
    out = tmp_path / "out.nii.gz"
    assert main(["denoise", str(series), str(out), "--method", "wavelet"]) == 0
    source, result = nib.load(series), nib.load(out)
    assert result.shape == (20, 24, 16, 3) and result.header.get_zooms() == (2.0, 2.0, 3.0, 1.5)
    np.testing.assert_array_equal(result.affine, source.affine)
    volumes = np.asanyarray(source.dataobj)
    each = np.stack([denoise(volumes[..., t], "wavelet") for t in range(3)], axis=-1)
    np.testing.assert_allclose(np.asanyarray(result.dataobj), each, atol=1e-4)


def test_tiff_and_npy_with_model_and_tiles(tiny_3d, tmp_path):
    volume = np.random.default_rng(0).random((17, 24, 30)).astype(np.float32)
    tifffile.imwrite(tmp_path / "v.tif", volume)
    np.save(tmp_path / "v.npy", volume)
    weights = save_model(tiny_3d, tmp_path / "tiny3d.safetensors")
    for name in ("v.tif", "v.npy"):
        out = tmp_path / f"out-{name}"
        assert (
            main(["denoise", str(tmp_path / name), str(out), "--model", str(weights), "--tile", "16,16,24"])
            == 0
        )
        result = tifffile.imread(out) if name.endswith(".tif") else np.load(out)
        assert result.shape == volume.shape and result.dtype == np.float32


def test_ensemble_reaches_the_network(tmp_path):
    image = add_noise(skdata.camera()[:64, :72], "gaussian", sigma=20, seed=0)
    np.save(tmp_path / "i.npy", image)
    assert main(["denoise", str(tmp_path / "i.npy"), str(tmp_path / "o.npy"), "--ensemble", "8"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), denoise(image, ensemble=8), atol=1e-5)


def test_plane_weights_reach_the_three_direction_average(tmp_path, capsys):
    volume = add_noise(np.tile(skdata.camera()[::8, ::8], (9, 1, 1)), "gaussian", sigma=20, seed=0)  # 9x64x64
    np.save(tmp_path / "v.npy", volume)
    out = tmp_path / "o.npy"
    assert main(["denoise", str(tmp_path / "v.npy"), str(out), "--plane-weights", "2,0,0"]) == 0
    np.testing.assert_allclose(np.load(out), denoise(volume, plane_weights=(1, 0, 0)), atol=1e-5)
    assert not np.allclose(np.load(out), denoise(volume), atol=1e-3)  # the default weighs all three
    with pytest.raises(SystemExit) as info:
        main(["denoise", str(tmp_path / "v.npy"), str(out), "--plane-weights", "1,1"])
    assert info.value.code == 2 and "expected three numbers Z,Y,X" in capsys.readouterr().err
    for tile in ("0", "64,0"):  # automatic tiles: leave --tile out (the dock's 0)
        with pytest.raises(SystemExit) as info:
            main(["denoise", str(tmp_path / "v.npy"), str(out), "--tile", tile])
        assert info.value.code == 2 and "leave --tile out for automatic tiles" in capsys.readouterr().err


def test_stack_slice_by_slice(tmp_path):
    np.save(tmp_path / "s.npy", np.random.default_rng(0).random((3, 20, 20)))
    assert (
        main(
            [
                "denoise",
                str(tmp_path / "s.npy"),
                str(tmp_path / "o.npy"),
                "--method",
                "tv",
                "--spatial-dims",
                "2",
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "o.npy").shape == (3, 20, 20)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["denoise", "{tmp}/absent.tif", "{tmp}/o.tif", "--method", "tv"], "no such file"),
        (["denoise", "{tmp}/in.png", "{tmp}/o.bmp", "--method", "tv"], "unsupported file type 'o.bmp'"),
        (["denoise", "{tmp}/bad.tif", "{tmp}/o.tif", "--method", "tv"], "cannot read"),
        (["denoise", "{tmp}/in.png", "{tmp}/no/dir/o.png", "--method", "tv"], "output folder does not exist"),
        (["denoise", "{tmp}/in.png", "{tmp}/in.png", "--method", "tv"], "is an input; choose another file"),
        (["noise", "{tmp}/in.png", "{tmp}/in.png"], "is an input; choose another file"),
        (["noise", "{tmp}/in.png", "{tmp}/no/dir/o.png"], "output folder does not exist"),
        (
            ["denoise", "{tmp}/in.png", "{tmp}/o.png", "--model", "{tmp}/absent.safetensors"],
            "model file not found",
        ),
        # said before the model's plan line, so the whole answer is that one line
        (["denoise", "{tmp}/nan.npy", "{tmp}/o.npy"], "image contains NaN or infinite values"),
    ],
)
def test_bad_paths_and_formats_exit_2_with_one_line(args, message, noisy_png, tmp_path, capsys):
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    np.save(tmp_path / "nan.npy", np.full((32, 32), np.nan, np.float32))
    before = noisy_png.read_bytes()
    code = main([a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert noisy_png.read_bytes() == before  # the input is never overwritten


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("garbage", "Cannot work out file type"),
        ("negative", "its header gives a negative size, (-5, 8, 8)"),
        ("huge", "its header asks for 100582.8 GiB of data but the file holds"),
    ],
)
@pytest.mark.parametrize("command", ["denoise", "noise", "metrics"])
def test_a_damaged_nifti_gives_one_line_in_every_command(damage, message, command, tmp_path, capsys):
    good = tmp_path / "good.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), good)
    bad = tmp_path / "bad.nii"
    raw = bytearray(good.read_bytes())
    if damage == "garbage":
        raw = bytearray(b"not a nifti" * 50)
    else:
        struct.pack_into("<hhh", raw, 42, *((-5, 8, 8) if damage == "negative" else (30000,) * 3))
    bad.write_bytes(bytes(raw))
    args = {"denoise": [str(bad), str(tmp_path / "o.nii"), "--method", "tv"],
            "noise": [str(bad), str(tmp_path / "o.nii")],
            "metrics": [str(good), str(bad)]}[command]  # fmt: skip
    assert main([command, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_console_script_lists_methods_and_models():
    script = str(Path(sys.executable).parent / "adl-denoise")
    methods = subprocess.run([script, "methods"], capture_output=True, text=True, check=True).stdout
    assert methods.splitlines()[0].startswith("adl ") and "nlm" in methods
    models = subprocess.run(
        [sys.executable, "-m", "napari_adl_denoise.cli", "models"], capture_output=True, text=True
    )
    assert models.returncode == 0 and models.stdout.strip()
    rows = models.stdout.splitlines()[:-1]  # the last line names your models folder
    kinds = [re.search(r" [23]D (gray|RGB) ", row) for row in rows]
    assert all(kinds) and len({k.start() for k in kinds}) == 1  # the columns line up


def test_unknown_method_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["denoise", "a.tif", "b.tif", "--method", "magic"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_noise_then_metrics_round_trip(tmp_path, capsys):
    from skimage import data

    clean = tmp_path / "clean.tif"
    tifffile.imwrite(clean, data.camera())
    noisy = tmp_path / "noisy.tif"
    assert main(["noise", str(clean), str(noisy), "--kind", "gaussian", "--sigma", "25", "--seed", "3"]) == 0
    again = tmp_path / "again.tif"
    assert main(["noise", str(clean), str(again), "--sigma", "25", "--seed", "3"]) == 0
    np.testing.assert_array_equal(tifffile.imread(noisy), tifffile.imread(again))
    capsys.readouterr()
    assert main(["metrics", str(clean), str(noisy), "--json"]) == 0
    import json

    scores = json.loads(capsys.readouterr().out)
    assert 19.5 < scores["psnr"] < 21 and scores["data_range"] == 255  # sigma 25/255: 20.2 dB
    assert set(scores) >= {"psnr", "ssim", "mse", "vifp"}
    assert main(["metrics", str(clean), str(noisy), "--data-range", "1000"]) == 0
    table = capsys.readouterr().out
    assert "psnr" in table and "data_range" in table and "1000.0000" in table


def test_metrics_shape_mismatch_and_bad_noise_parameter_exit_2(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.zeros((8, 8)))
    np.save(tmp_path / "b.npy", np.zeros((8, 9)))
    assert main(["metrics", str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]) == 2
    assert "shapes differ" in capsys.readouterr().err
    assert main(["noise", str(tmp_path / "a.npy"), str(tmp_path / "c.npy"), "--sigma", "-3"]) == 2
    assert "sigma must be" in capsys.readouterr().err


def test_headless_demo_writes_results_and_a_table(tmp_path, capsys):
    from napari_adl_denoise.demo import main as demo

    demo(["--output", str(tmp_path)])
    out = capsys.readouterr().out
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "aero-noisy.tif" in names and "mri-noisy.nii.gz" in names and len(names) == 6
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["aero"], ["coffee"], ["mri"])]
    assert len(rows) == 3
    for row in rows:  # noisy PSNR < denoised PSNR
        assert float(row[2]) < float(row[5])
    mri = nib.load(tmp_path / "mri-noisy.nii.gz")
    assert mri.header.get_zooms() == (2.0, 2.0, 2.0)
