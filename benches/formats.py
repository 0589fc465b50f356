#!/usr/bin/env python3
"""JPEG, WebP and AVIF side by side: sizes, encode times and fidelity (PSNR, SSIM) against the resized source.

    cargo build --release --example formats
    pip install pillow numpy                  # Pillow >= 11.3 reads AVIF (checked below)
    python3 benches/formats.py table          # Mirage's settings, corpus photos at 300 and 1200 px
    python3 benches/formats.py sweep          # rav1e speed x ravif quality on the 300 px references

`table` runs `target/release/examples/formats transform` (in process, one thread, median of --reps runs of
`mirage::transform::transform`: decode, resize, encode) for PNG, JPEG, WebP and AVIF at Mirage's defaults.
The PNG is the reference: the same decode and resize, losslessly stored, so PSNR and SSIM measure only the
lossy encoder. `sweep` encodes those PNG references with ravif alone at each speed and quality (AVIF encode
time only) and reports, per speed, the lowest quality that matches the JPEG's PSNR and SSIM, and its size.

PSNR is over R, G and B; SSIM is the mean SSIM of luma (BT.601) over 7x7 windows (the defaults of
scikit-image's `structural_similarity`, computed here with numpy). Timing is wall clock on a shared machine:
the load average is printed with the results.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image, features

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "target", "release", "examples", "formats")


def corpus_photos(extra):
    """The JPEG photos of benches/fixtures and of the shared corpus (one copy per name)."""
    seen = {}
    for folder in [os.path.join(ROOT, "benches", "fixtures")] + extra:
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.endswith(".jpg") and name not in seen:
                seen[name] = os.path.join(folder, name)
    return sorted(seen.values(), key=lambda path: os.path.getsize(path))


def run_example(args):
    out = subprocess.run([EXAMPLE] + args, check=True, capture_output=True, text=True, timeout=1800).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def psnr(reference, image):
    mse = np.mean((reference - image) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def window_mean(plane, size=7):
    """Mean over every size x size window that fits (valid region), by summed-area table."""
    table = np.pad(plane, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    total = table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    return total / (size * size)


def ssim(reference, image):
    luma = np.array([0.299, 0.587, 0.114])
    x, y = reference @ luma, image @ luma
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    n = 49
    mx, my = window_mean(x), window_mean(y)
    # Sample (co)variances, as scikit-image computes them.
    vx = (window_mean(x * x) - mx * mx) * n / (n - 1)
    vy = (window_mean(y * y) - my * my) * n / (n - 1)
    cxy = (window_mean(x * y) - mx * my) * n / (n - 1)
    value = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(value.mean())


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def table(args, work):
    rows = []
    for photo in corpus_photos(args.corpus):
        for width in args.widths:
            results = {r["format"]: r for r in run_example(["transform", photo, f"w={width}", work, str(args.reps)])}
            reference = pixels(results["png"]["out"])
            for name in ("jpeg", "webp", "avif"):
                image = pixels(results[name]["out"])
                assert image.shape == reference.shape, (name, image.shape, reference.shape)
                results[name]["psnr"] = psnr(reference, image)
                results[name]["ssim"] = ssim(reference, image)
            rows.append((os.path.basename(photo), width, results))
            print(f"# {os.path.basename(photo)} w={width} done, load {load_average()}", file=sys.stderr)
    print(f"load average (1, 5, 15 min) after the run: {load_average()}; reps {args.reps}\n")
    print("| photo | px | JPEG bytes | WebP bytes | AVIF bytes | AVIF/JPEG size | JPEG ms | WebP ms | AVIF ms |"
          " AVIF/JPEG time | PSNR JPEG / WebP / AVIF dB | SSIM JPEG / WebP / AVIF |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for name, width, r in rows:
        j, w, a = r["jpeg"], r["webp"], r["avif"]
        print(f"| {name} | {a['width']}x{a['height']} | {j['bytes']:,} | {w['bytes']:,} | {a['bytes']:,} | "
              f"{a['bytes'] / j['bytes']:.2f} | {j['ms']:.1f} | {w['ms']:.1f} | {a['ms']:.1f} | "
              f"{a['ms'] / j['ms']:.0f}x | {j['psnr']:.2f} / {w['psnr']:.2f} / {a['psnr']:.2f} | "
              f"{j['ssim']:.4f} / {w['ssim']:.4f} / {a['ssim']:.4f} |")


def sweep(args, work):
    print(f"load average before: {load_average()}", file=sys.stderr)
    speeds = ",".join(str(s) for s in args.speeds)
    qualities = ",".join(str(q) for q in args.qualities)
    summary = {}
    for photo in corpus_photos(args.corpus):
        width = args.widths[0]
        options = f"w={width},q={args.jpeg_quality}"
        results = {r["format"]: r for r in run_example(["transform", photo, options, work, "1"])}
        reference = pixels(results["png"]["out"])
        jpeg = results["jpeg"]
        jpeg_psnr, jpeg_ssim = psnr(reference, pixels(jpeg["out"])), ssim(reference, pixels(jpeg["out"]))
        name = os.path.basename(photo)
        print(f"\n{name} at {width} px: JPEG q{args.jpeg_quality} {jpeg['bytes']} bytes, PSNR {jpeg_psnr:.2f}, "
              f"SSIM {jpeg_ssim:.4f}")
        for r in run_example(["sweep", results["png"]["out"], work, str(args.reps), speeds, qualities]):
            image = pixels(r["out"])
            r["psnr"], r["ssim"] = psnr(reference, image), ssim(reference, image)
            matches = r["psnr"] >= jpeg_psnr and r["ssim"] >= jpeg_ssim
            print(f"  speed {r['speed']:2} q {r['quality']:5.1f}: {r['bytes']:7,} bytes "
                  f"({r['bytes'] / jpeg['bytes']:.2f} of JPEG), {r['ms']:7.1f} ms, PSNR {r['psnr']:.2f}, "
                  f"SSIM {r['ssim']:.4f}{'  >= JPEG' if matches else ''}")
            if matches:
                best = summary.setdefault((name, r["speed"]), r)
                if r["quality"] < best["quality"]:
                    summary[(name, r["speed"])] = r
            summary.setdefault(("jpeg", name), jpeg)
    print(f"\nLowest ravif quality at least as good as JPEG q{args.jpeg_quality} in both PSNR and SSIM "
          "(per photo and speed):")
    for key, r in sorted(summary.items()):
        if key[0] != "jpeg":
            jpeg = summary[("jpeg", key[0])]
            print(f"  {key[0]} speed {key[1]}: q {r['quality']}, {r['bytes'] / jpeg['bytes']:.2f} of the JPEG, "
                  f"{r['ms']:.1f} ms")
    print(f"load average after: {load_average()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["table", "sweep"])
    parser.add_argument("--reps", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--jpeg-quality", type=int, default=82, help="sweep: the JPEG to match (Mirage's default 82)")
    parser.add_argument("--widths", type=int, nargs="+", default=[300, 1200])
    parser.add_argument("--speeds", type=int, nargs="+", default=[6, 8, 9, 10])
    parser.add_argument("--qualities", type=float, nargs="+", default=[50, 55, 60, 65, 70, 75, 80, 85])
    parser.add_argument("--corpus", nargs="*", default=["/work/shared/bench/corpus",
                                                         os.path.join(ROOT, "..", "shared", "bench", "corpus")])
    args = parser.parse_args()
    if not features.check("avif"):
        sys.exit("this Pillow cannot read AVIF: pip install -U pillow")
    if not os.access(EXAMPLE, os.X_OK):
        sys.exit(f"{EXAMPLE} is missing: cargo build --release --example formats")
    with tempfile.TemporaryDirectory(prefix="mirage-formats-") as work:
        (table if args.mode == "table" else sweep)(args, work)


if __name__ == "__main__":
    main()
