"""Training-step throughput of minivit against the same ViT in PyTorch eager.

    python benchmarks/train_step.py

One step is forward + cross-entropy + backward + AdamW update on a float32 batch of random images
(default: the "tiny" preset, batch 128, 2 threads). The sides: "minivit" (on NumPy its ops run
their CPU kernels, minivit/kernels, as in training), "plain" (minivit with the kernels off:
MINIVIT_KERNELS=0, every op its plain math) and "torch". Each side runs in its own worker process
(this script re-invoked with --worker) that builds its model once; after --warmup steps per side
the parent alternates them, --rounds times --steps steps (minivit, torch, minivit, torch, ...),
so only one side computes at a time and both see the same machine noise. Both workers get the
same environment: the thread count and, unless --no-malloc-tuning, glibc malloc thresholds
that keep big buffers mapped between steps. Without torch installed, minivit runs alone.

It prints a header (model, batch, threads, malloc setting, numpy and its BLAS, torch, the
analytic FLOPs of a step), one line per round (each side's median images/s that round, the cores
it kept busy, and their ratio), then per side the median / min / max images/s over all timed steps, the GFLOP/s that
median implies and the worker's peak RSS, and finally each minivit side's ratio to torch, both
as the ratio of the two medians and as the median of the per-round ratios.

"Cores busy" is the worker's CPU seconds over wall seconds during its steps, idle threads that
spin-wait included. Compare a side's figure across rounds: a round where it drops well below that
side's usual lost CPUs to something outside the benchmark (other work, or the hypervisor of a VM),
and its ratio says little about the code.

    --backend cupy    runs minivit on the GPU (and torch on CUDA when it has CUDA)
    --torch-sdpa      gives torch F.scaled_dot_product_attention instead of matmul + softmax
    --model igpt      times iGPT's pretraining step instead (preset "cpu": 16×16 images, 256 tokens,
                      batch 64 is the igpt-cpu recipe's): token ids in, next-token cross-entropy
"""

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402

import minivit  # noqa: E402
from minivit.models.igpt import PRESETS as IGPT_PRESETS  # noqa: E402

SIDES = ("minivit", "plain", "torch")
MALLOC_THRESHOLD = 1 << 30  # bytes: MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="vit", choices=("vit", "igpt"), help="which model's training step")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--preset", help="the model's preset: ViT tiny (default), mini; iGPT cpu (default), gpu")
    p.add_argument("--threads", type=int, default=2, help="BLAS / OpenMP / torch threads for both sides")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="timed steps per side per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side before the first round")
    p.add_argument("--sides", default="minivit,torch", help="comma-separated, from: " + ", ".join(SIDES))
    p.add_argument("--backend", default="numpy", choices=minivit.backend.BACKENDS, help="minivit's backend")
    p.add_argument("--torch-sdpa", action="store_true", help="torch attention via F.scaled_dot_product_attention")
    p.add_argument("--no-malloc-tuning", action="store_true", help="leave glibc's malloc thresholds at their defaults")
    p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.preset = args.preset or {"vit": "tiny", "igpt": "cpu"}[args.model]
    presets = minivit.PRESETS if args.model == "vit" else IGPT_PRESETS
    if args.preset not in presets:
        p.error(f"--preset for --model {args.model} takes one of {sorted(presets)}, got {args.preset!r}")
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = sorted(set(args.sides) - set(SIDES))
    if unknown or not args.sides:
        p.error(f"--sides takes a comma-separated list from {SIDES}, got {unknown or 'nothing'}")
    return args


def block_flops(t, d, m):
    """Forward matmul FLOPs of one Transformer block on T tokens of width D with MLP width M."""
    return 2 * t * d * 3 * d + 2 * 2 * t * t * d + 2 * t * d * d + 2 * 2 * t * d * m


def step_flops(cfg, batch):
    """Matmul FLOPs of one training step, a multiply-add counted as 2.

    Per image, with N = (image/patch)² patches, T = N + 1 tokens (N with mean pooling),
    width D, MLP width M, K classes and patch vectors of P²C values, the forward's matmuls are

        patch embed   2·N·P²C·D
        each block    2·T·D·3D (qkv) + 2·2·T²·D (q kᵀ, A v; all heads) + 2·T·D² (proj) + 2·2·T·D·M (MLP)
        head          2·D·K

    (iGPT: T = image_size² tokens, no patch embedding (a lookup), the head on every token: 2·T·D·K,
    and the causal attention computed over all T² scores, as both sides do.)
    and a step is 3 × that: the backward has two matmuls (dX and dW) per forward matmul.
    LayerNorm, softmax, GELU, the loss and the optimizer are elementwise and left out.
    """
    d, m = cfg.dim, cfg.mlp_dim
    if isinstance(cfg, minivit.IGPTConfig):
        t = cfg.image_size**2
        return 3 * batch * (cfg.depth * block_flops(t, d, m) + 2 * t * d * cfg.vocab_size)
    n = (cfg.image_size // cfg.patch_size) ** 2
    t = n + (cfg.pool == "cls")
    forward = 2 * n * cfg.patch_size**2 * cfg.in_channels * d + cfg.depth * block_flops(t, d, m) + 2 * d * cfg.num_classes
    return 3 * forward * batch


def model_config(args):
    return minivit.preset(args.preset) if args.model == "vit" else minivit.models.igpt.preset(args.preset)


def random_batch(cfg, batch):
    """The same inputs and targets for both sides: float32 images (B, H, W, C) in [0, 1) and int64
    labels, or for iGPT int64 token ids (B, T), which are their own targets."""
    rng = np.random.default_rng(0)
    if isinstance(cfg, minivit.IGPTConfig):
        ids = rng.integers(0, cfg.vocab_size, (batch, cfg.image_size**2))
        return ids, ids
    images = rng.random((batch, cfg.image_size, cfg.image_size, cfg.in_channels), dtype=np.float32)
    labels = rng.integers(0, cfg.num_classes, batch)
    return images, labels


# -- workers: build one model, then time steps on request -------------------------------------


def emit(message):
    print(json.dumps(message), flush=True)


def serve(step, sync, info):
    """Announce `info`, then answer "run K" with K steps' wall and CPU seconds and "quit" with the peak RSS."""
    emit(info)
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "run":
            for _ in range(int(rest[0])):
                sync()
                start, cpu_start = time.perf_counter(), time.process_time()
                step()
                sync()
                emit({"step_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu_start})
        elif command == "quit":
            emit({"peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})
            return


def numpy_blas():
    """Which BLAS numpy calls (with its live thread count when threadpoolctl is installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        try:
            blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        except (TypeError, KeyError):  # numpy < 1.26 has no mode="dicts"
            return "unknown (see numpy.show_config())"
        config = " ".join(blas.get("openblas configuration", "").split())
        return f"{blas['name']} {blas['version']}" + (f" ({config})" if config else "")
    return "; ".join(
        f"{lib['internal_api']} {lib['version']} ({lib['num_threads']} threads, {lib.get('architecture')})"
        for lib in threadpool_info()
        if lib["user_api"] == "blas"
    )


def minivit_worker(args):
    minivit.kernels.set_enabled(args.worker == "minivit")
    minivit.backend.use(args.backend)
    minivit.backend.seed(0)
    cfg = model_config(args)
    model = (minivit.ViT if args.model == "vit" else minivit.IGPT).from_config(cfg)
    opt = minivit.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    inputs, targets = random_batch(cfg, args.batch_size)
    x, y = minivit.backend.to_device(inputs), minivit.backend.to_device(targets).reshape(-1)

    def step():
        logits = model(x)  # (B, K), or iGPT's (B, T, K)
        loss, cache = minivit.ops.cross_entropy_forward(logits.reshape(len(y), -1), y)
        model.backward(minivit.ops.cross_entropy_backward(cache).reshape(logits.shape))
        opt.step()
        model.zero_grad()
        return float(loss)

    xp = minivit.backend.xp()
    sync = xp.cuda.Device().synchronize if minivit.backend.name() == "cupy" else lambda: None
    path = "CPU kernels (minivit/kernels)" if minivit.kernels.enabled() and args.backend == "numpy" else "plain ops"
    info = f"numpy {np.__version__}, BLAS: {numpy_blas()}; backend {minivit.backend.name()}; ops: {path}"
    serve(step, sync, {"params": model.num_parameters(), "info": info})


def torch_blocks(cfg, sdpa, causal=False):
    """minivit's pre-LN blocks in torch: fused qkv, exact GELU, LayerNorm eps 1e-6."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    dim, heads = cfg.dim, cfg.heads

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(dim, 3 * dim)  # [q | k | v] column blocks, as in minivit
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(x).view(b, t, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)  # (B, H, T, Dh) each
            if sdpa:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            else:
                scores = q @ k.transpose(-1, -2) * (dim // heads) ** -0.5
                if causal:
                    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1), -math.inf)
                out = torch.softmax(scores, dim=-1) @ v
            return self.proj(out.transpose(1, 2).reshape(b, t, dim))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = Attention()
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(dim, cfg.mlp_dim), nn.GELU(), nn.Linear(cfg.mlp_dim, dim))

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    return nn.Sequential(*(Block() for _ in range(cfg.depth)))


def init_like_minivit(model):
    """minivit's init: weights, tokens and positions ~ N(0, 0.02²) in ±2σ, biases 0."""
    from torch import nn

    for name, param in model.named_parameters():
        if param.ndim >= 2:
            nn.init.trunc_normal_(param, std=0.02, a=-0.04, b=0.04)
        elif name.endswith("bias"):
            nn.init.zeros_(param)
    return model


def build_torch_vit(cfg, sdpa):
    """minivit's ViT in torch: pre-LN blocks, fused qkv, exact GELU, class-token pooling."""
    import torch
    from torch import nn

    if cfg.pool != "cls" or cfg.dropout:
        raise ValueError("the torch ViT here covers pool='cls' without dropout")
    dim = cfg.dim

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            p, c = cfg.patch_size, cfg.in_channels
            num_patches = (cfg.image_size // p) ** 2
            self.patch_embed = nn.Linear(p * p * c, dim)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
            self.blocks = torch_blocks(cfg, sdpa)
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.head = nn.Linear(dim, cfg.num_classes)

        def forward(self, images):
            """images (B, H, W, C), patches flattened in (row, column, channel) order like minivit's"""
            b, h, w, c = images.shape
            p = cfg.patch_size
            x = images.reshape(b, h // p, p, w // p, p, c).permute(0, 1, 3, 2, 4, 5).reshape(b, -1, p * p * c)
            x = self.patch_embed(x)
            x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + self.pos_embed
            return self.head(self.norm(self.blocks(x))[:, 0])

    return init_like_minivit(ViT())


def build_torch_igpt(cfg, sdpa):
    """minivit's iGPT in torch: token embedding, SOS, the input shifted right, causal blocks, untied head."""
    import torch
    from torch import nn

    class IGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_embed = nn.Embedding(cfg.vocab_size, cfg.dim)
            self.sos = nn.Parameter(torch.zeros(1, 1, cfg.dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, cfg.image_size**2, cfg.dim))
            self.blocks = torch_blocks(cfg, sdpa, causal=True)
            self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
            self.head = nn.Linear(cfg.dim, cfg.vocab_size)

        def forward(self, ids):
            """ids (B, T) -> logits (B, T, K)"""
            x = torch.cat([self.sos.expand(len(ids), -1, -1), self.tok_embed(ids[:, :-1])], dim=1) + self.pos_embed
            return self.head(self.norm(self.blocks(x)))

    return init_like_minivit(IGPT())


def torch_worker(args):
    import torch
    from torch.nn import functional as F

    device = "cuda" if args.backend == "cupy" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        emit({"skip": f"torch {torch.__version__} has no CUDA device"})
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = model_config(args)
    model = (build_torch_vit if args.model == "vit" else build_torch_igpt)(cfg, args.torch_sdpa).to(device)
    decay = [p for p in model.parameters() if p.ndim == 2]  # Linear weights, as minivit's decay=True
    no_decay = [p for p in model.parameters() if p.ndim != 2]  # biases, norms, cls token, pos embedding
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3
    )
    inputs, targets = random_batch(cfg, args.batch_size)
    x, y = torch.from_numpy(inputs).to(device), torch.from_numpy(targets).to(device).reshape(-1)

    def step():
        loss = F.cross_entropy(model(x).reshape(len(y), -1), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.item()

    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    attention = "F.scaled_dot_product_attention" if args.torch_sdpa else "matmul + softmax"
    info = f"torch {torch.__version__} on {device}, {torch.get_num_threads()} threads, attention: {attention}"
    serve(step, sync, {"params": sum(p.numel() for p in model.parameters()), "info": info})


# -- parent: start the workers, alternate them, report ------------------------------------------


class Worker:
    """One side's worker process, spoken to over its stdin / stdout."""

    def __init__(self, side, env):
        self.side = side
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *sys.argv[1:], "--worker", side],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
        )
        self.hello = self.read()

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.side} worker exited with code {self.proc.wait()} (its error is above)")
        return json.loads(line)

    def send(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def run(self, steps):
        """(wall seconds, CPU seconds) of each of `steps` steps."""
        self.send(f"run {steps}")
        return [(m["step_s"], m["cpu_s"]) for m in (self.read() for _ in range(steps))]

    def quit(self):
        """Peak RSS in MiB."""
        self.send("quit")
        peak_kib = self.read()["peak_rss_kib"]
        self.proc.wait()
        return peak_kib / 1024

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def worker_env(args):
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    env.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # what `import minivit` sets when it loads NumPy first
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        if args.no_malloc_tuning:
            env.pop(var, None)
        else:
            env[var] = str(MALLOC_THRESHOLD)
    return env


def benchmark(args):
    sides = list(args.sides)
    if "torch" in sides and find_spec("torch") is None:
        print("torch is not installed: running minivit alone (pip install torch==2.13.0 to compare)")
        sides.remove("torch")
    if not sides:
        sys.exit("nothing to run")

    cfg = model_config(args)
    flops = step_flops(cfg, args.batch_size)
    malloc = (
        "glibc defaults (--no-malloc-tuning)"
        if args.no_malloc_tuning
        else f"MALLOC_MMAP_THRESHOLD_={MALLOC_THRESHOLD} MALLOC_TRIM_THRESHOLD_={MALLOC_THRESHOLD}"
    )
    print(f"train step: {args.model} preset {args.preset} {cfg}")
    print(f"batch {args.batch_size}, float32, AdamW (lr 1e-3, weight decay 0.05 on weights)")
    print(f"threads: {args.threads} (OPENBLAS/OMP/MKL_NUM_THREADS, torch.set_num_threads; OPENBLAS_THREAD_TIMEOUT={worker_env(args)['OPENBLAS_THREAD_TIMEOUT']}), both workers")
    print(f"malloc: {malloc}, both workers")
    print(f"FLOPs per step (3 × forward matmuls): {flops / 1e9:.1f} GFLOP")

    env = worker_env(args)
    workers = {}
    try:
        for side in sides:
            worker = Worker(side, env)
            if "skip" in worker.hello:
                print(f"{side}: skipped, {worker.hello['skip']}")
                worker.kill()
                continue
            workers[side] = worker
            print(f"{side}: {worker.hello['params']:,} parameters; {worker.hello['info']}")
        print(f"warmup {args.warmup} steps per side, then {args.rounds} rounds × {args.steps} steps per side, "
              "sides alternating\n")

        for worker in workers.values():
            worker.run(args.warmup)
        times = {side: [] for side in workers}  # times[side][round] = that round's step seconds
        compared = [side for side in workers if side != "torch"] if "torch" in workers else []
        print("round  " + "".join(f"{side + ' img/s (cores busy)':>30}" for side in workers)
              + "".join(f"{side + ' / torch':>17}" for side in compared))  # fmt: skip
        for r in range(args.rounds):
            row = {}
            for side, worker in workers.items():
                wall, cpu = zip(*worker.run(args.steps))
                times[side].append(wall)
                row[side] = args.batch_size / statistics.median(wall), sum(cpu) / sum(wall)
            ratios = "".join(f"{row[side][0] / row['torch'][0]:17.3f}" for side in compared)
            print(f"{r + 1:5d}  " + "".join(f"{ips:23.1f} ({busy:.2f})" for ips, busy in row.values()) + ratios)
        peak_mib = {side: worker.quit() for side, worker in workers.items()}
    finally:
        for worker in workers.values():
            worker.kill()

    print(f"\n{'side':8} {'median img/s':>13} {'min':>8} {'max':>8} {'GFLOP/s':>9} {'peak RSS':>10}")
    medians = {}
    for side, rounds in times.items():
        ips = [args.batch_size / t for round_times in rounds for t in round_times]
        medians[side] = statistics.median(ips)
        gflops = medians[side] * flops / args.batch_size / 1e9
        print(f"{side:8} {medians[side]:13.1f} {min(ips):8.1f} {max(ips):8.1f} {gflops:9.1f} "
              f"{peak_mib[side]:7.0f} MiB")
    print()
    for side in compared:
        per_round = [statistics.median(t) / statistics.median(m) for m, t in zip(times[side], times["torch"])]
        print(f"{side} / torch: {medians[side] / medians['torch']:.3f} (ratio of medians), "
              f"{statistics.median(per_round):.3f} (median of per-round ratios)")


def main():
    args = parse_args()
    if args.worker in ("minivit", "plain"):
        minivit_worker(args)
    elif args.worker == "torch":
        torch_worker(args)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
