"""iGPT (Chen et al., "Generative Pretraining from Pixels", ICML 2020): a GPT-2 decoder over the
palette ids of an image's pixels in raster order, trained to predict each pixel from those before it.

    p(x) = Π_i p(x_i | x_1, ..., x_{i-1})                     (Eq. 1, autoregressive)
    L_AR = E_x [-log p(x)]                                      (Eq. 2)

    h_0 = [SOS; W_tok x_1; ...; W_tok x_{T-1}] + W_pos         (the input: shifted right behind SOS)
    h_l = block_l(h_{l-1})                                      (pre-LN, causal MSA and MLP)
    logits = LN(h_L) W_head + b                                 (untied head over the K palette ids)

    model = IGPT.from_preset("cpu")           # or IGPT(image_size=16, vocab_size=512, dim=..., ...)
    logits = model(tokens)                    # ids (B, T) -> (B, T, K); logits[:, i] sees tokens[:, :i]
    model.backward(dlogits)                   # fills every parameter's .grad
    images = model.generate(prompt, num_tokens, temperature=1.0, top_k=None)

What the pretraining learned is read out in two ways (Sec. 3.3-3.4):

    f_l = mean_i LN(h_l)_i,  l = 0 ... L                       (the linear probe's features)
    class logits = f_L W_clf + b_clf                            (fine-tuning: IGPTClassifier)
    L = L_CLF + w L_GEN                                         (the joint objective, w = 1 in the paper)

    features = model.layer_features(tokens)   # (L + 1, B, D), see minivit.probe
    classifier = IGPTClassifier.from_preset("cpu", num_classes=10)
    logits, class_logits = classifier(tokens)
"""

from dataclasses import asdict, dataclass

import numpy as np

from .. import backend, ops
from ..nn import Block, Dropout, Embedding, LayerNorm, Linear, Module, new_parameter, trunc_normal
from .presets import Configured, check_heads, from_presets


@dataclass(frozen=True)
class IGPTConfig:
    image_size: int = 16  # T = image_size² tokens
    vocab_size: int = 512  # K palette colours
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_dim: int = 512
    dropout: float = 0.0

    def __post_init__(self):  # every way to an iGPT (keywords, a preset, a checkpoint) checks its shape here
        if self.image_size < 1 or self.vocab_size < 2:
            raise ValueError(f"image_size must be >= 1 and vocab_size >= 2, got {self.image_size} and {self.vocab_size}")
        check_heads(self.dim, self.heads)


PRESETS = {
    # For 2 CPU cores: 16×16 images (256 tokens), 4 causal blocks of width 128: 0.96 M parameters.
    "cpu": IGPTConfig(),
    # Paper-like for one GPU (CuPy): the paper's 32×32 (1,024 tokens) and palette of 512, 8 blocks of
    # width 512 (iGPT-S has 24): 26.3 M parameters.
    "gpu": IGPTConfig(image_size=32, dim=512, depth=8, heads=8, mlp_dim=2048),
}


def preset(name, **overrides):
    """A named IGPTConfig, with any field overridden: preset("cpu", image_size=8)."""
    return from_presets(PRESETS, name, "iGPT preset", **overrides)


class IGPT(Configured, Module):
    """Image GPT over palette tokens.

    Parameters (names as in state_dict()):
      tok_embed   Embedding(K, D)   W_tok, one row per palette colour
      sos         (1, 1, D)         the start-of-sequence input, in front of the first pixel
      pos_embed   (1, T, D)         W_pos, one row per raster position
      blocks.i    Block (causal)
      norm        LayerNorm(D)      the final LN
      head        Linear(D, K)      untied from W_tok
    """

    config_class = IGPTConfig
    preset = staticmethod(preset)

    def __init__(self, *fields, **config):
        """IGPT(the fields of IGPTConfig, by name or in its order), e.g. IGPT(image_size=8, vocab_size=16):
        those not given keep its defaults, and IGPTConfig checks them."""
        c = self.config = self.config_class(*fields, **config)
        self.num_tokens = c.image_size * c.image_size
        self.tok_embed = Embedding(c.vocab_size, c.dim)
        self.sos = new_parameter(trunc_normal((1, 1, c.dim)), decay=False)
        self.pos_embed = new_parameter(trunc_normal((1, self.num_tokens, c.dim)), decay=False)
        self.dropout = Dropout(c.dropout)
        self.blocks = [Block(c.dim, c.heads, c.mlp_dim, c.dropout, causal=True) for _ in range(c.depth)]
        self.norm = LayerNorm(c.dim)
        self.head = Linear(c.dim, c.vocab_size)

    def _check_tokens(self, tokens, what="tokens", limit=None):
        limit = self.num_tokens if limit is None else limit
        if not hasattr(tokens, "dtype") or tokens.dtype.kind not in "iu":
            raise ValueError(f"{what} must be an integer array of palette ids, got {getattr(tokens, 'dtype', tokens)}")
        if tokens.ndim != 2:
            raise ValueError(f"{what} must have shape (B, T), got {tokens.shape}")
        if tokens.shape[1] > limit:
            raise ValueError(f"{what} have {tokens.shape[1]} tokens, more than the {limit} this model can take "
                             f"(image_size {self.config.image_size}: T = {self.num_tokens})")  # fmt: skip
        k = self.config.vocab_size
        if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= k):
            raise ValueError(f"{what} must be palette ids in [0, {k}), got values from {int(tokens.min())} "
                             f"to {int(tokens.max())}")  # fmt: skip
        self._check_backend([tokens])

    def _embed(self, tokens, start):
        """The input vectors at positions start, start + 1, ...: SOS at position 0, elsewhere the
        embedding of the token one position earlier (the shift right), each plus its W_pos row.

        tokens: ids (B, t') the inputs are made of -> (B, t, D), t = t' + 1 from start 0 (SOS first), else t'
        """
        xp = backend.array_module(tokens)
        x = self.tok_embed(tokens)  # (B, t', D)
        if start == 0:
            sos = xp.broadcast_to(self.sos.data, (len(tokens), 1, self.config.dim))
            x = xp.concatenate([sos, x], axis=1)  # (B, t' + 1, D)
        return x + self.pos_embed.data[:, start : start + x.shape[1]]

    def forward(self, tokens):
        """tokens: ids (B, T') with T' ≤ T -> logits (B, T', K); logits[:, i] sees tokens[:, :i] only."""
        return self.head(self._trunk(tokens))  # (B, T', K)

    def backward(self, dlogits):
        """dlogits: (B, T', K); fills every parameter's grad. Token ids have no gradient: returns None."""
        self._trunk_backward(self.head.backward(dlogits))

    def _trunk(self, tokens):
        """tokens (B, T') -> LN(h_L) (B, T', D), the final LayerNorm's output that the heads read."""
        self._check_tokens(tokens)
        self._t = tokens.shape[1]
        x = self.dropout(self._embed(tokens[:, :-1], 0))  # (B, T', D): [SOS, x_1 ... x_{T'-1}] + W_pos
        for block in self.blocks:
            x = block(x)  # causal: position i mixes positions ≤ i only
        return self.norm(x)

    def _trunk_backward(self, dout):
        """dout: the gradient of LN(h_L) (B, T', D); fills the grads of everything below the heads."""
        dx = self.norm.backward(dout)
        for block in reversed(self.blocks):
            dx = block.backward(dx)
        dx = self.dropout.backward(dx)  # (B, T', D)
        self.pos_embed.grad[:, : self._t] += dx.sum(axis=0, keepdims=True)
        self.sos.grad += dx[:, :1].sum(axis=0, keepdims=True)
        self.tok_embed.backward(dx[:, 1:])  # position i + 1's input was token i's embedding

    def normalized_states(self, tokens):
        """LN_l(h_l) for l = 0 ... L: h_l is the input of block l, normalised by that block's own first
        LayerNorm (what its attention reads); the last is the final LayerNorm's output. Call in eval mode.

        tokens: ids (B, T') -> a list of L + 1 arrays (B, T', D)
        """
        self._check_tokens(tokens)
        x = self.dropout(self._embed(tokens[:, :-1], 0))  # (B, T', D): h_0
        states = []
        for block in self.blocks:
            states.append(block.norm1(x))
            x = block(x)
        return [*states, self.norm(x)]

    def layer_features(self, tokens):
        """The linear probe's features (Sec. 3.3): f_l = mean_i LN_l(h_l)_i over the T' positions, for
        l = 0 ... L (see normalized_states). tokens: ids (B, T') -> features (L + 1, B, D)"""
        xp = backend.array_module(tokens)
        return xp.stack([state.mean(axis=1) for state in self.normalized_states(tokens)])

    def decode(self, tokens, past=None):
        """Logits for the next positions, with a key/value cache (generation; forward only, eval mode).

        past None: tokens (B, t) are an image's first t ids; returns logits (B, t + 1, K) for the
        tokens at positions 0 ... t (SOS and the t tokens are the inputs).
        past from a previous call that covered n inputs: tokens (B, t) are the inputs at positions
        n ... n + t - 1, i.e. ids n - 1 ... n + t - 2 of the image; returns logits (B, t, K).
        returns logits, present (pass it as `past` to the next call)
        """
        start = 0 if past is None else past[0][0].shape[2]
        self._check_tokens(tokens, limit=self.num_tokens - start - (past is None))
        x = self._embed(tokens, start)
        present = []
        for block, kv in zip(self.blocks, past or [None] * len(self.blocks), strict=True):
            x, kv = block.decode(x, kv)
            present.append(kv)
        return self.head(self.norm(x)), present

    def generate(self, prompt, num_tokens, temperature=1.0, top_k=None, rng=None):
        """Sample num_tokens ids after each prompt, one position at a time with the key/value cache.

        prompt: ids (B, T0), T0 ≥ 0, on the model's backend; T0 + num_tokens ≤ T
        temperature: divides the logits (< 1 sharper, > 1 flatter); top_k: sample among the k most
        likely ids only (1: greedy); rng: a NumPy Generator (default minivit.backend.rng(numpy))
        returns ids (B, T0 + num_tokens)
        """
        self._check_tokens(prompt, "prompt")
        if num_tokens < 0 or prompt.shape[1] + num_tokens > self.num_tokens:
            raise ValueError(f"prompt of {prompt.shape[1]} tokens plus num_tokens {num_tokens} must be between 0 "
                             f"and the {self.num_tokens} tokens of an image")  # fmt: skip
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and not 1 <= top_k <= self.config.vocab_size:
            raise ValueError(f"top_k must be between 1 and {self.config.vocab_size}, got {top_k}")
        rng = backend.rng(np) if rng is None else rng
        xp = backend.array_module(prompt)
        was_training = self.training
        self.eval()
        out, past, new = prompt, None, prompt
        ### BEGIN SOLUTION
        for _ in range(num_tokens):
            logits, past = self.decode(new, past)
            new = xp.asarray(_sample(backend.to_numpy(logits[:, -1]), temperature, top_k, rng))[:, None]
            out = xp.concatenate([out, new.astype(prompt.dtype)], axis=1)
        ### END SOLUTION
        self.train(was_training)
        return out


@dataclass(frozen=True)
class IGPTClassifierConfig(IGPTConfig):
    num_classes: int = 10

    def __post_init__(self):
        super().__post_init__()
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {self.num_classes}")


def classifier_preset(name, num_classes=10, **overrides):
    """An iGPT preset with a classification head: classifier_preset("cpu", 10, dim=64)."""
    return IGPTClassifierConfig(**asdict(preset(name, **overrides)), num_classes=num_classes)


class IGPTClassifier(IGPT):
    """iGPT fine-tuned to classify (Sec. 3.4): the generative model plus a linear head on the average
    of the final LayerNorm's output over positions (f_L, the probe's last feature).

      clf_head    Linear(D, C)      zero at the start, so the first step's class logits are all 0
                                    and the pretrained trunk gets no random kick

    logits, class_logits = model(tokens)      # (B, T', K), (B, C)
    model.backward(dlogits, dclass_logits)    # dlogits None: the classification loss alone
    """

    config_class = IGPTClassifierConfig
    preset = staticmethod(classifier_preset)

    def __init__(self, *fields, **config):
        """IGPTClassifier(**fields of IGPTClassifierConfig): an IGPT's, and num_classes."""
        super().__init__(*fields, **config)
        self.clf_head = Linear(self.config.dim, self.config.num_classes)
        for p in self.clf_head.parameters():
            p.data[...] = 0

    def forward(self, tokens):
        """tokens: ids (B, T') -> next-token logits (B, T', K), class logits (B, C)"""
        h = self._trunk(tokens)  # (B, T', D)
        pooled, self._pool_cache = ops.mean_pool_forward(h)  # (B, D): f_L
        return self.head(h), self.clf_head(pooled)

    def backward(self, dlogits, dclass_logits):
        """dlogits (B, T', K) or None, dclass_logits (B, C); fills every parameter's grad."""
        dh = ops.mean_pool_backward(self.clf_head.backward(dclass_logits), self._pool_cache)  # (B, T', D)
        if dlogits is not None:
            dh += self.head.backward(dlogits)
        self._trunk_backward(dh)


def _sample(logits, temperature, top_k, rng):
    """One id per row of logits (B, K), from softmax(logits / temperature) over the top_k (NumPy)."""
    if top_k == 1:
        return logits.argmax(axis=1)
    logits = logits.astype(np.float64) / temperature
    if top_k is not None:
        kth = np.sort(logits, axis=1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probs, _ = ops.softmax_forward(logits)
    return np.array([rng.choice(len(p), p=p) for p in probs])
