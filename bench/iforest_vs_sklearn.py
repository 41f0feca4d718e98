#!/usr/bin/env python3
"""Isolation Forest speed and accuracy: iotstream's forest, natively and as `.wasm`
(`iotstream bench-forest`), beside scikit-learn's `IsolationForest`, on the same CSVs, in one run.

The script creates its own virtual environment (bench/.venv) from bench/requirements.txt (PyPI)
on first use, then re-runs itself inside it. Both sides fit on all rows and score all rows with
scikit-learn's defaults (100 trees, max_samples=min(256, n)), one thread, seeds 0-4; both times
exclude reading the CSV. It is a benchmark, not a test: it prints a table and asserts nothing.

    python3 bench/iforest_vs_sklearn.py [--iotstream target/release/iotstream] [--data DIR]
"""
import argparse
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venv"


def ensure_venv():
    python = VENV / "bin" / "python"
    if pathlib.Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(HERE / "requirements.txt")], check=True)
    os.execv(str(python), [str(python), *sys.argv])


def main():
    ensure_venv()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import numpy as np
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iotstream", default=str(ROOT / "target/release/iotstream"))
    ap.add_argument("--data", default=str(ROOT / "plugins/isolation-forest/tests/data/odds"))
    ap.add_argument("--wasm", default=str(ROOT / "dist/tools/forest-bench.wasm"))
    args = ap.parse_args()
    import json
    out = subprocess.run(
        [args.iotstream, "bench-forest", "--data", args.data, "--wasm", args.wasm, "--log", "warn"],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout
    ours = {t["data"]: t for t in (json.loads(line) for line in out.splitlines() if line.startswith("{"))}
    print(f"{'data set':<12} {'rows':>6} {'ours native':>12} {'ours wasm':>10} {'sklearn':>10}   (samples/s)  {'ours AUC':>9} {'sklearn AUC':>12}")
    for csv in sorted(pathlib.Path(args.data).glob("*.csv")):
        data = np.loadtxt(csv, delimiter=",", skiprows=1)
        x, y = data[:, :-1], data[:, -1]
        theirs_ms, theirs_auc = [], []
        for seed in range(5):
            started = time.perf_counter()
            model = IsolationForest(n_estimators=100, random_state=seed, n_jobs=1).fit(x)
            scores = -model.score_samples(x)
            theirs_ms.append((time.perf_counter() - started) * 1000.0)
            theirs_auc.append(roc_auc_score(y, scores))
        o = ours[csv.stem]
        sklearn_rate = len(y) / (float(np.mean(theirs_ms)) / 1000.0)
        print(f"{csv.stem:<12} {len(y):>6} {o['native_samples_per_s']:>12.0f} {o['wasm_samples_per_s']:>10.0f} {sklearn_rate:>10.0f}"
              f"                {o['auc']:>9.4f} {np.mean(theirs_auc):>12.4f}")


if __name__ == "__main__":
    main()
