"""grd.streamed on MNIST-1D: D of N examples read from disk batch by batch vs in memory.

Data: the ``mnist1d`` package's generator (``make_dataset``: built-in templates, no download;
the package imports ``requests`` at import time but makes no request). Generated once and
cached as ``.npy`` files in ``--cache`` (default /tmp), then memory-mapped: the streamed run
reads one batch at a time. Model: MLP 40-100-100-10 (tanh, softmax cross-entropy), float32.

Each mode runs in its own subprocess so that the peak resident memory (``ru_maxrss``) of
one does not hide the other. Measured: λ_max (Lanczos, ``num_matvecs`` products) and tr D
(exact), wall time, the number of passes, peak RSS, and the bytes of data resident.

    python benchmarks/bench_streamed.py --n 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def data_files(n: int, cache: Path):
    x_path, y_path = cache / f"grd_mnist1d_{n}_x.npy", cache / f"grd_mnist1d_{n}_y.npy"
    if not x_path.exists():
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples, args.train_split, args.seed = n, 1.0, 42
        t0 = time.perf_counter()
        d = make_dataset(args)
        print(f"generated N = {n} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        np.save(x_path, np.asarray(d["x"], np.float32))
        np.save(y_path, np.asarray(d["y"], np.int32))
    return x_path, y_path


def run(mode: str, n: int, batch: int, num_matvecs: int, cache: Path) -> dict:
    import jax
    import jax.numpy as jnp

    import grd

    x_path, y_path = data_files(n, cache)
    X = np.load(x_path, mmap_mode="r")
    Y = np.load(y_path, mmap_mode="r")
    sizes = (40, 100, 100, 10)
    keys = jax.random.split(jax.random.PRNGKey(0), len(sizes) - 1)
    params = [
        {"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)}
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]

    def loss_fn(p, ex):
        h = ex["x"]
        for layer in p[:-1]:
            h = jnp.tanh(h @ layer["w"] + layer["b"])
        logits = h @ p[-1]["w"] + p[-1]["b"]
        return -jax.nn.log_softmax(logits)[ex["y"]]

    passes = [0]
    if mode == "streamed":

        def make_iter():
            passes[0] += 1
            for i in range(0, n, batch):
                yield {"x": jnp.asarray(X[i : i + batch]), "y": jnp.asarray(Y[i : i + batch])}

        data = grd.streamed(make_iter, progress=False)
        resident = batch * (40 * 4 + 4)
        kw = {}
    else:
        data = {"x": jnp.asarray(np.asarray(X)), "y": jnp.asarray(np.asarray(Y))}
        resident = n * (40 * 4 + 4)
        kw = {"chunk_size": batch}
    t0 = time.perf_counter()
    lam = float(grd.lambda_max(loss_fn, params, data, num_matvecs=num_matvecs, **kw))
    t_lam = time.perf_counter() - t0
    p_lam = passes[0]
    t0 = time.perf_counter()
    tr = float(grd.diffusion_trace(loss_fn, params, data, **kw))
    t_tr = time.perf_counter() - t0
    return {
        "mode": mode,
        "lam_max": lam,
        "trace": tr,
        "t_lam": t_lam,
        "t_trace": t_tr,
        "passes_lam": p_lam,
        "passes_trace": passes[0] - p_lam,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "resident_data_mb": resident / 2**20,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--num-matvecs", type=int, default=10)
    ap.add_argument("--cache", type=Path, default=Path("/tmp"))
    ap.add_argument("--mode", choices=["streamed", "memory"])
    a = ap.parse_args()
    if a.mode:
        print(json.dumps(run(a.mode, a.n, a.batch, a.num_matvecs, a.cache)))
        return
    data_files(a.n, a.cache)
    rows = []
    for mode in ("streamed", "memory"):
        cmd = [sys.executable, __file__, "--mode", mode, "--n", str(a.n), "--batch", str(a.batch),
               "--num-matvecs", str(a.num_matvecs), "--cache", str(a.cache)]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    s, m = rows
    body = [
        f"N = {a.n} MNIST-1D examples (40 features), MLP 40-100-100-10 (d = 15 210), float32; "
        f"batches of {a.batch}; Lanczos with {a.num_matvecs} products. Wall times include "
        "compilation; the machine was shared (load average above 10), so times are indicative.",
        "",
        "| mode | λ_max | tr D | λ_max time (s) | passes | tr D time (s) | passes | peak RSS (MB) "
        "| data resident (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        body.append(
            f"| {r['mode']} | {r['lam_max']:.6g} | {r['trace']:.6g} | {r['t_lam']:.1f} | "
            f"{r['passes_lam'] or '–'} | {r['t_trace']:.1f} | {r['passes_trace'] or '–'} | "
            f"{r['peak_rss_mb']:.0f} | {r['resident_data_mb']:.2f} |"
        )
    rel_lam = abs(s["lam_max"] - m["lam_max"]) / m["lam_max"]
    rel_tr = abs(s["trace"] - m["trace"]) / m["trace"]
    body += [
        "",
        f"Relative difference streamed vs in memory: λ_max {rel_lam:.1e}, tr D {rel_tr:.1e} "
        "(float32, different summation order).",
    ]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import write_results

    path = write_results("streamed", "grd.streamed on MNIST-1D", "\n".join(body))
    print(path.read_text())


if __name__ == "__main__":
    main()
