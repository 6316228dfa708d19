"""(e) In-place interpolation of a ViT-B/32-size state dict against a memcpy of the same bytes (goal <= 1.5).

A randomly initialised open_clip ``ViT-B-32`` (both towers, ~151M parameters, ~605 MB in fp32; no weights are
downloaded). Timed: :func:`wiseft.methods.interpolate.interpolate_into` (alpha = 0.3) into the model; a copy of the same
bytes into the same tensors (the memcpy floor: interpolation must read two endpoints and write once, so 1.5x is
the bandwidth floor); and the reference implementation's interpolation (a new state dict, then
``load_state_dict``). Peak extra memory is the process's resident-set growth during each call, sampled every
millisecond.

Usage: ``python -m benchmarks.interpolate_bench [--threads 1] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import warnings

import open_clip
import torch

from benchmarks.common import set_threads, timed
from wiseft.methods.interpolate import interpolate_into

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def peak_extra(fn) -> tuple[float, int]:
    """``(seconds, peak resident-set growth in bytes)`` of one call."""
    base, peak, stop = rss(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    seconds = timed(fn)
    stop.set()
    thread.join()
    return seconds, max(peak[0], rss()) - base


def reference_interpolation(model, theta_0, theta_1, alpha) -> None:
    """wise_ft.py's ``_merge`` then ``load_state_dict``: a third state dict per alpha."""
    theta = {k: (1 - alpha) * theta_0[k] + alpha * theta_1[k] for k in theta_0}
    model.load_state_dict(theta)
    del theta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    set_threads(args.threads)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32")
    theta_0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    theta_1 = {k: v + 0.01 if v.is_floating_point() else v.clone() for k, v in theta_0.items()}
    dst = [t.data for t in model.state_dict(keep_vars=True).values() if t.is_floating_point()]
    src = [theta_1[k] for k, t in model.state_dict().items() if t.is_floating_point()]
    nbytes = sum(t.numel() * t.element_size() for t in dst)
    calls = {
        "memcpy": lambda: torch._foreach_copy_(dst, src),
        "interpolate_into": lambda: interpolate_into(model, theta_0, theta_1, 0.3),
        "reference": lambda: reference_interpolation(model, theta_0, theta_1, 0.3),
    }
    for fn in calls.values():  # warm-up: touch every page once
        fn()
    rounds = [{name: peak_extra(fn) for name, fn in calls.items()} for _ in range(args.repeat)]
    t = {name: min(r[name][0] for r in rounds) for name in calls}
    mem = {name: max(r[name][1] for r in rounds) for name in calls}
    expected = torch.lerp(theta_0["visual.proj"], theta_1["visual.proj"], 0.3)
    interpolate_into(model, theta_0, theta_1, 0.3)
    assert torch.equal(model.state_dict()["visual.proj"], expected)
    print(f"ViT-B-32 state dict: {sum(t.numel() for t in dst) / 1e6:.1f}M floats, {nbytes / 2**20:.0f} MiB, "
          f"{len(dst)} tensors, threads={args.threads}, best of {args.repeat}")
    for name in calls:
        print(f"{name:>17}: {t[name] * 1e3:7.1f} ms   peak extra memory {mem[name] / 2**20:7.1f} MiB")
    print(f"(e) interpolate_into / memcpy = {t['interpolate_into'] / t['memcpy']:.2f}   (goal <= 1.5); "
          f"peak extra {mem['interpolate_into'] / nbytes:.3f} model copies "
          f"(reference: {t['reference'] / t['memcpy']:.2f}x memcpy, {mem['reference'] / nbytes:.2f} copies)")


if __name__ == "__main__":
    main()
