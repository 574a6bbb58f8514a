"""Images larger than memory: dask and zarr arrays are denoised block by block, lazily, and give
the in-memory result whatever their chunks."""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
import pytest
import zarr
from conftest import drain, guided_config
from skimage import data

import napari_adl_denoise as adl
from napari_adl_denoise import add_noise
from napari_adl_denoise._chunked import iter_compute, write_zarr
from napari_adl_denoise.inference import iter_denoise


def _close(lazy, expected):
    """Computed, equal to the in-memory result to float32 rounding of the image's intensities."""
    _same(lazy.compute(scheduler="synchronous"), expected)


def _same(result, expected):
    assert result.dtype == np.float32 and result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-4 * float(np.abs(expected).max()))


@pytest.fixture(scope="module")
def noisy_2d() -> np.ndarray:
    noisy = add_noise(data.camera()[:203, :181], "gaussian", sigma=25, seed=1)
    noisy[40:130, 30:120] = 0  # noise-free, across chunk edges: kept there as in memory
    return noisy


@pytest.fixture(scope="module")
def noisy_3d() -> np.ndarray:
    import nibabel as nib
    from nibabel.testing import data_path

    mri = np.asarray(nib.load(f"{data_path}/anatomical.nii").dataobj, dtype=np.float32)  # (33, 41, 25)
    noisy = add_noise(mri, "gaussian", sigma=15, seed=2)
    noisy[3:25, 8:30, 4:16] = 0  # noise-free, across chunk and slab edges
    return noisy


@pytest.mark.parametrize("chunks", [(64, 64), (100, 90), (203, 40)])
def test_a_dask_image_gives_the_in_memory_result_lazily_whatever_its_chunks(noisy_2d, chunks):
    before = noisy_2d.copy()
    lazy = adl.denoise(da.from_array(noisy_2d, chunks=(50, 50)), tile_shape=64, chunks=chunks)
    assert isinstance(lazy, da.Array) and lazy.numblocks[0] * lazy.numblocks[1] > 1
    _close(lazy, adl.denoise(noisy_2d, tile_shape=64))
    assert (lazy[42:128, 32:118] == 0).all().compute()
    np.testing.assert_array_equal(noisy_2d, before)


def test_a_volume_over_three_directions_and_through_the_3d_model_matches_in_memory(noisy_3d):
    volume = da.from_array(noisy_3d, chunks=(5, 20, 20))
    lazy = adl.denoise(volume, tile_shape=16, chunks=16)  # 2D model, three directions
    assert lazy.numblocks == (2, 2, 1)
    _close(lazy, adl.denoise(noisy_3d, tile_shape=16))
    weights = (0.2, 0.5, 0.3)  # weights of your own reach every block
    lazy = adl.denoise(volume, tile_shape=16, chunks=16, plane_weights=weights)
    _close(lazy, adl.denoise(noisy_3d, tile_shape=16, plane_weights=weights))
    lazy = adl.denoise(volume, tile_shape=16, chunks=16, ensemble=2)  # so do options
    _close(lazy, adl.denoise(noisy_3d, tile_shape=16, ensemble=2))
    lazy = adl.denoise(volume, model="adl-3d-gray", tile_shape=16, chunks=16)
    assert lazy.numblocks == (2, 2, 1)
    _close(lazy, adl.denoise(noisy_3d, model="adl-3d-gray", tile_shape=16))


def test_stacks_rgb_and_rgba_keep_their_layout_and_alpha():
    rgb = add_noise(data.astronaut()[100:180, 150:245], "gaussian", sigma=20, seed=3)
    _close(adl.denoise(da.from_array(rgb), tile_shape=32, chunks=40), adl.denoise(rgb, tile_shape=32))
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7.0, np.float32)], axis=-1)
    result = adl.denoise(da.from_array(rgba), tile_shape=32, chunks=40).compute()
    np.testing.assert_array_equal(result[..., 3], 7.0)
    stack = np.stack([rgb[..., 0], rgb[..., 1], rgb[..., 2]])  # three gray images along a time axis
    _close(
        adl.denoise(da.from_array(stack, chunks=(2, 40, 40)), spatial_dims=2, tile_shape=32, chunks=48),
        adl.denoise(stack, spatial_dims=2, tile_shape=32),
    )


def test_photon_noise_model_is_estimated_as_in_memory():
    clean = data.camera()[:128, :160].astype(np.float32)
    noisy = add_noise(clean, "poisson", peak=30, seed=4)
    lazy = adl.denoise(da.from_array(noisy), noise_model="auto", tile_shape=64, chunks=64)
    _close(lazy, adl.denoise(noisy, noise_model="auto", tile_shape=64))


def test_zarr_in_zarr_out_block_by_block_with_progress(noisy_3d, tmp_path):
    source = zarr.open(
        str(tmp_path / "in.zarr"), mode="w", shape=noisy_3d.shape, chunks=(5, 35, 25), dtype="f4"
    )
    source[:] = noisy_3d
    lazy = adl.denoise(source, tile_shape=16, chunks=(16, 24, 16))
    records, path = drain(iter_compute(lazy, tmp_path / "out.zarr"))
    assert len(records) == 1 + lazy.npartitions and records[-1].fraction == 1
    written = zarr.open(str(path), mode="r")
    _same(written[:], adl.denoise(noisy_3d, tile_shape=16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "out.zarr"]

    # iter_denoise computes a lazy image into memory, one progress record per block
    records, result = drain(iter_denoise(da.from_array(noisy_3d), tile_shape=16, chunks=(16, 24, 16)))
    assert isinstance(result, np.ndarray) and len(records) == 1 + lazy.npartitions
    np.testing.assert_array_equal(result, written[:])


def test_a_cancelled_or_failed_write_leaves_nothing_and_keeps_the_old_store(noisy_3d, tmp_path, monkeypatch):
    lazy = adl.denoise(da.from_array(noisy_3d), tile_shape=16, chunks=(16, 24, 16))
    target = tmp_path / "out.zarr"
    write_zarr(lazy, target)
    first = zarr.open(str(target), mode="r")[:]
    steps = iter_compute(lazy * 2, target)
    next(steps), next(steps)
    steps.close()  # cancelled after one block
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]
    np.testing.assert_array_equal(zarr.open(str(target), mode="r")[:], first)

    bad = noisy_3d.copy()
    bad[32, 40, 24] = np.nan  # in the last block
    with pytest.raises(ValueError, match="NaN"):  # seen in the intensity range, before any work
        adl.denoise(da.from_array(bad))
    monkeypatch.setattr(adl.inference, "_SAMPLE", 500)  # a subsample that misses it, as in a large image
    lazy = adl.denoise(da.from_array(np.concatenate([bad, bad], axis=1)), tile_shape=16, chunks=(16, 24, 16))
    with pytest.raises(ValueError, match="NaN"):  # then its block says so
        write_zarr(lazy, target)
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]


def test_bad_requests_get_one_line_before_any_work(noisy_2d):
    lazy = da.from_array(noisy_2d)
    with pytest.raises(ValueError, match="learned method"):
        adl.denoise(lazy, method="nlm")
    with pytest.raises(ValueError, match="chunks must be positive"):
        adl.denoise(lazy, chunks=0)
    with pytest.raises(ValueError, match="progress"):
        adl.denoise(lazy, progress=print)
    with pytest.raises(ValueError, match="dtype"):
        adl.denoise(da.from_array(np.zeros((8, 8), bool)))


def test_the_same_graph_runs_on_a_two_worker_cluster(noisy_3d):
    distributed = pytest.importorskip("distributed")
    lazy = adl.denoise(da.from_array(noisy_3d), tile_shape=16, chunks=(16, 24, 16))
    expected = adl.denoise(noisy_3d, tile_shape=16)
    environ = dict(os.environ)  # distributed leaves OMP_NUM_THREADS=1 and more in this process
    try:
        with (
            distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            result = client.compute(lazy).result()
    finally:
        os.environ.clear()
        os.environ.update(environ)
    _same(result, expected)


def test_the_cli_denoises_a_zarr_store_into_a_zarr_store_and_a_tiff_block_by_block(
    noisy_3d, tmp_path, capsys
):
    import tifffile

    from napari_adl_denoise.cli import main

    source = zarr.open(
        str(tmp_path / "in.zarr"), mode="w", shape=noisy_3d.shape, chunks=(8, 41, 25), dtype="f4"
    )
    source[:] = noisy_3d
    expected = adl.denoise(noisy_3d, tile_shape=16)
    assert (
        main(
            [
                "denoise",
                str(tmp_path / "in.zarr"),
                str(tmp_path / "out.zarr"),
                "--tile",
                "16",
                "--chunks",
                "16",
            ]
        )
        == 0
    )
    capsys.readouterr()
    _same(zarr.open(str(tmp_path / "out.zarr"), mode="r")[:], expected)

    tifffile.imwrite(tmp_path / "in.tif", noisy_3d)
    assert (
        main(
            ["denoise", str(tmp_path / "in.tif"), str(tmp_path / "out.tif"), "--tile", "16", "--chunks", "20"]
        )
        == 0
    )
    _same(tifffile.imread(tmp_path / "out.tif"), expected)
    assert main(["denoise", str(tmp_path / "in.zarr"), str(tmp_path / "x.zarr"), "--method", "nlm"]) == 2
    assert "only learned methods" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()


def test_a_volume_is_written_slab_by_slab_as_the_in_memory_default_gives_it(noisy_3d, tmp_path):
    from napari_adl_denoise._chunked import iter_write

    records, path = drain(iter_write(da.from_array(noisy_3d, chunks=10), tmp_path / "v.zarr", slab=10))
    assert {r.item for r in records} == set(range(4 + 5 + 3)) and records[-1].n_items == 12  # z, y, x slabs
    _same(zarr.open(str(path), mode="r")[:], adl.denoise(noisy_3d))  # the in-memory defaults
    assert (zarr.open(str(path), mode="r")[5:23, 10:28, 6:14] == 0).all()
    series = np.stack([noisy_3d, noisy_3d[::-1]])  # a stack of two volumes, from numpy
    records, path = drain(iter_write(series, tmp_path / "s.zarr", slab=16))
    _same(zarr.open(str(path), mode="r")[:], adl.denoise(series))
    records, path = drain(iter_write(noisy_3d, tmp_path / "w.zarr", slab=10, plane_weights=(1, 1, 2)))
    _same(zarr.open(str(path), mode="r")[:], adl.denoise(noisy_3d, plane_weights=(1, 1, 2)))
    # the 3D model (and anything but a 2D model over gray volumes) goes through the blocks
    records, path = drain(
        iter_write(noisy_3d, tmp_path / "m.zarr", model="adl-3d-gray", tile_shape=16, chunks=16)
    )
    _same(zarr.open(str(path), mode="r")[:], adl.denoise(noisy_3d, model="adl-3d-gray", tile_shape=16))
    steps = iter_write(noisy_3d, tmp_path / "c.zarr", slab=8)
    next(steps), next(steps)
    steps.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zarr", "s.zarr", "v.zarr", "w.zarr"]


def test_the_cli_keeps_the_alpha_of_an_rgba_png_block_by_block(tmp_path):
    import imageio.v3 as iio

    from napari_adl_denoise.cli import main

    rgb = np.clip(add_noise(data.astronaut()[:40, :48], "gaussian", sigma=20, seed=6), 0, 255).astype(
        np.uint8
    )
    alpha = np.full((40, 48, 1), 200, np.uint8)
    iio.imwrite(tmp_path / "in.png", np.concatenate([rgb, alpha], axis=-1))
    assert main(["denoise", str(tmp_path / "in.png"), str(tmp_path / "out.zarr"), "--chunks", "32"]) == 0
    written = zarr.open(str(tmp_path / "out.zarr"), mode="r")[:]
    assert written.shape == (40, 48, 4)
    np.testing.assert_array_equal(written[..., 3], 200)


def test_out_of_core_a_guided_network_gives_way_to_its_guide(noisy_3d, tiny_2d, tmp_path):
    """A guided 3D network reads whole slices of its guide, which blocks do not hold: asked for
    by name out of core it says so in one line, before any work."""
    from napari_adl_denoise.models import EfficientUnet
    from napari_adl_denoise.weights import save_model

    save_model(tiny_2d, tmp_path / "guide.safetensors")
    save_model(EfficientUnet(guided_config(tmp_path / "guide.safetensors")), tmp_path / "guided.safetensors")
    with pytest.raises(ValueError, match="over whole volumes in memory; out of core give model="):
        adl.denoise(da.from_array(noisy_3d, chunks=16), model=tmp_path / "guided.safetensors")
    assert adl.denoise(noisy_3d, model=tmp_path / "guided.safetensors").shape == noisy_3d.shape
