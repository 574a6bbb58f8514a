"""CAREamics' Noise2Void from scratch on a noisy stack, within a wall-clock budget; run by
``bench_fine_tune.py`` with a Python that has ``careamics`` installed (it pins its own torch).

    python _careamics_n2v.py FOLDER OUT defaults|tuned SECONDS

FOLDER holds ``stack.npy`` (S, Y, X: trained on and denoised) and ``test.npy`` (Y, X: denoised
only); OUT receives both results and ``info.json`` (configuration, seconds, steps).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
from careamics import CAREamist
from careamics.config import create_n2v_config
from lightning.pytorch.callbacks import Callback, Timer


class Steps(Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_train_batch_end(self, *args) -> None:
        self.steps += 1


def main() -> None:
    folder, out, variant, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    torch.set_num_threads(2)
    out.mkdir(parents=True)
    stack, test = np.load(folder / "stack.npy"), np.load(folder / "test.npy")
    if variant == "defaults":  # create_n2v_config's defaults; patch and batch as in its guides
        options = {"patch_size": [64, 64], "batch_size": 16}
    else:  # tuned for minutes on a CPU: N2V2 (no checkerboard), smaller batches, more steps
        options = {"patch_size": [64, 64], "batch_size": 8, "use_n2v2": True, "num_epochs": 1000}
    config = create_n2v_config(experiment_name=f"n2v_{variant}", data_type="array", axes="SYX", **options)
    counter = Steps()
    careamist = CAREamist(
        config,
        work_dir=out / "work",
        callbacks=[Timer(duration=timedelta(seconds=seconds), interval="step"), counter],
        enable_progress_bar=False,
    )
    start = time.perf_counter()
    careamist.train(train_data=stack)
    elapsed = time.perf_counter() - start

    def predict(array: np.ndarray, axes: str) -> np.ndarray:
        result = careamist.predict(array, axes=axes, tile_size=(256, 256), tile_overlap=(48, 48))
        result = result[0] if isinstance(result, tuple) else result
        return np.squeeze(
            np.concatenate([np.asarray(r) for r in result]) if isinstance(result, list) else result
        )

    np.save(out / "stack.npy", predict(stack, "SYX").reshape(stack.shape))
    np.save(out / "test.npy", predict(test, "YX").reshape(test.shape))
    described = ", ".join(f"{k} {v}" for k, v in options.items() if k != "num_epochs")
    (out / "info.json").write_text(
        json.dumps({"config": described, "seconds": elapsed, "steps": counter.steps})
    )


if __name__ == "__main__":
    main()
