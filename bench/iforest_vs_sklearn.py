#!/usr/bin/env python3
"""Isolation Forest speed and accuracy: iotstream's forest (native, `iotstream iforest`) beside
scikit-learn's `IsolationForest`, on the same CSVs, in the same run.

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
    args = ap.parse_args()
    print(f"{'data set':<12} {'rows':>6} {'ours ms':>9} {'sklearn ms':>11} {'speed-up':>9} {'ours AUC':>9} {'sklearn AUC':>12}")
    for csv in sorted(pathlib.Path(args.data).glob("*.csv")):
        data = np.loadtxt(csv, delimiter=",", skiprows=1)
        x, y = data[:, :-1], data[:, -1]
        ours_ms, ours_auc, theirs_ms, theirs_auc = [], [], [], []
        for seed in range(5):
            out = subprocess.run(
                [args.iotstream, "iforest", "--input", str(csv), "--seed", str(seed), "--out", os.devnull],
                check=True, capture_output=True, text=True,
            ).stdout
            fields = dict(part.split("=") for part in out.split())
            ours_ms.append(float(fields["fit_score_ms"]))
            ours_auc.append(float(fields["auc"]))
            started = time.perf_counter()
            model = IsolationForest(n_estimators=100, random_state=seed, n_jobs=1).fit(x)
            scores = -model.score_samples(x)
            theirs_ms.append((time.perf_counter() - started) * 1000.0)
            theirs_auc.append(roc_auc_score(y, scores))
        o, t = float(np.mean(ours_ms)), float(np.mean(theirs_ms))
        print(f"{csv.stem:<12} {len(y):>6} {o:>9.1f} {t:>11.1f} {t / o:>8.1f}x {np.mean(ours_auc):>9.4f} {np.mean(theirs_auc):>12.4f}")


if __name__ == "__main__":
    main()
