"""iGPT sampling with and without the key/value cache: the time of a completion grid.

    python benchmarks/generate.py                  # the cpu preset, a 4×8 grid: 4 images, 8 completions each

Completing the bottom half of an image samples T/2 tokens one at a time. With the cache
(`IGPT.generate`, ops.attention_decode) each token costs one single-token step through the blocks;
without it, each token needs a forward over the whole prefix (here: greedy, one full forward per
token). Both are run greedy (top_k=1) on the same random-weight model and prompts, so they must
produce identical tokens; the script checks that, then prints each side's seconds, alternated
--rounds times (cache, no cache, cache, ...), and the ratio of the medians.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402

import minivit  # noqa: E402
from minivit.models.igpt import PRESETS  # noqa: E402


def without_cache(model, prompt, num_tokens):
    """Greedy sampling with one full forward per new token (what the cache avoids)."""
    xp = minivit.backend.array_module(prompt)
    out = prompt
    for _ in range(num_tokens):
        logits = model(xp.concatenate([out, out[:, :1]], axis=1))  # the appended token is not seen by the last logits
        out = xp.concatenate([out, logits[:, -1].argmax(axis=1)[:, None].astype(out.dtype)], axis=1)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--image-size", type=int, help="override the preset's image size (T = image_size² tokens)")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--completions", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--backend", default="numpy", choices=minivit.backend.BACKENDS)
    args = p.parse_args()

    minivit.backend.use(args.backend)
    minivit.backend.seed(0)
    overrides = {"image_size": args.image_size} if args.image_size else {}
    model = minivit.IGPT.from_preset(args.preset, **overrides).eval()
    t, k = model.num_tokens, model.config.vocab_size
    xp = minivit.backend.xp()
    rng = np.random.default_rng(0)
    prompt = xp.asarray(np.repeat(rng.integers(0, k, (args.images, t // 2)), args.completions, axis=0))
    print(f"iGPT preset {args.preset}: {model.num_parameters():,} parameters, T = {t} tokens; "
          f"{args.images}×{args.completions} grid: {len(prompt)} sequences, {t - t // 2} new tokens each; "
          f"backend {minivit.backend.name()}")  # fmt: skip
    sync = xp.cuda.Device().synchronize if args.backend == "cupy" else lambda: None
    times = {"cache": [], "no cache": []}
    results = {}
    for _ in range(args.rounds):
        for name, run in (("cache", lambda: model.generate(prompt, t - t // 2, top_k=1)),
                          ("no cache", lambda: without_cache(model, prompt, t - t // 2))):  # fmt: skip
            sync()
            began = time.perf_counter()
            results[name] = run()
            sync()
            times[name].append(time.perf_counter() - began)
        print("  ".join(f"{name}: {times[name][-1]:7.2f} s" for name in times))
    same = bool((minivit.backend.to_numpy(results["cache"]) == minivit.backend.to_numpy(results["no cache"])).all())
    medians = {name: statistics.median(v) for name, v in times.items()}
    print(f"median: with the cache {medians['cache']:.2f} s, without {medians['no cache']:.2f} s: "
          f"{medians['no cache'] / medians['cache']:.1f}× faster with it; identical tokens: {same}")
    if not same:
        sys.exit("the cached and uncached generations differ")


if __name__ == "__main__":
    main()
