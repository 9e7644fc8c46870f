"""The assignment sets, in one place: what each one blanks, how it is graded, and for how many points.

An Item is one thing a student writes. Its `code` maps each marked region it blanks to the one-line
hint the student's stub raises:

    "minivit/ops/layernorm.py::layernorm_backward"  the `### BEGIN SOLUTION` region of that function
                                                    (a method is "Class.method")
    "notebooks/01_patches.ipynb"                    the regions named after the item in that notebook
                                                    (markdown: `<!-- BEGIN SOLUTION name -->`)

An item is graded in Parts, each with its own points, where the math splits (GELU's exact and tanh
forms; attention without a mask, causal, relative). A part names its `check` (a function of
checks.py: the outputs the grader compares with the reference solution's) and the pytest `tests`
(node ids, narrowed by the -k expression `keyword`) that give the same verdict where the reference
is not at hand: in the student's folder, as feedback.

A set's folder blanks its own items and those of every later set (not handed out yet); the earlier
sets' solutions stay, so a student always builds on working code. To add a set or an item, add it
here, mark its regions and write its checks; tests/test_assignment.py checks that every marked
region belongs to an item and every part's check and tests exist.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    name: str
    points: int
    check: str  # a function of checks.py
    tests: tuple  # pytest node ids (the student's feedback at home)
    keyword: str | None = None
    code: tuple = ()  # the item's regions whose answers this part grades (default: all of them)


@dataclass(frozen=True)
class Item:
    name: str  # the name notebook markers use
    title: str
    code: dict  # region -> the hint its stub raises
    parts: tuple

    @property
    def points(self):
        return sum(part.points for part in self.parts)

    def regions(self, part):
        """The code regions (path::function) whose answers `part` grades; the reference stands in for the rest."""
        return tuple(r for r in self.code if "::" in r and (not part.code or r in part.code))


@dataclass(frozen=True)
class AssignmentSet:
    name: str
    title: str
    items: tuple
    notebooks: tuple = ()


GRADIENT = "tests/test_ops_gradcheck.py::"
NB02 = "notebooks/02_backprop.ipynb"
ROUND_TRIP = "tests/test_nn.py::test_patchify_order_and_round_trip"

SETS = {
    s.name: s
    for s in (
        AssignmentSet("A1", "Patches and the linear embedding (Sec. 3.1, Eq. 1)", (
            Item("patches", "patchify / unpatchify: the image as a sequence of flattened patches", {
                "minivit/ops/patches.py::patchify": "patchify: images (B, H, W, C) -> (B, N, P*P*C), patches in "
                    "raster order, each flattened (row, column, channel); one reshape, one swap of axes, one reshape",
                "minivit/ops/patches.py::unpatchify": "unpatchify: patches (B, N, P*P*C) -> images (B, H, W, C), "
                    "the inverse of patchify",
                "notebooks/01_patches.ipynb": "cut the image into its patch matrix (N, P*P*C): reshape, "
                    "transpose, reshape; name the result x_p (the cells below use it)",
            }, (
                Part("patchify", 5, "patchify", (ROUND_TRIP,
                     "tests/test_nn.py::test_a_convolution_with_kernel_and_stride_p_is_the_patch_embedding"),
                     code=("minivit/ops/patches.py::patchify",)),
                Part("unpatchify", 5, "unpatchify", (ROUND_TRIP, GRADIENT + "test_patchify"),
                     code=("minivit/ops/patches.py::unpatchify",)),
            )),
            Item("linear", "linear_backward: the gradients of x W + b", {
                "minivit/ops/linear.py::linear_backward": "linear_backward: dx (..., D_in), dw (D_in, D_out), "
                    "db (D_out,) or None without a bias; see x as rows (M, D_in)",
            }, (Part("linear_backward", 10, "linear_backward", (GRADIENT + "test_linear",)),)),
        ), ("notebooks/01_patches.ipynb", NB02)),
        AssignmentSet("A2", "LayerNorm and GELU", (
            Item("layernorm", "layernorm_backward", {
                "minivit/ops/layernorm.py::layernorm_backward": "layernorm_backward: dx (..., D), dgamma (D,), "
                    "dbeta (D,) from dout and the cache (x̂, r, γ); x̂ depends on x through the mean and r too",
            }, (Part("layernorm_backward", 15, "layernorm_backward", (GRADIENT + "test_layernorm",)),)),
            Item("gelu", "gelu_backward, exact and tanh forms", {
                "minivit/ops/gelu.py::gelu_backward": "gelu_backward: dx (the shape of dout), for the exact "
                    "x Φ(x) and for the tanh form (cache: x, s = Φ(x) or tanh(u), approximate)",
            }, (
                Part("exact", 5, "gelu_exact", (GRADIENT + "test_gelu",), "exact"),
                Part("tanh", 5, "gelu_tanh", (GRADIENT + "test_gelu",), "tanh"),
            )),
        ), (NB02,)),
        AssignmentSet("A3", "Softmax, multi-head attention and the loss", (
            Item("softmax", "softmax_backward", {
                "minivit/ops/softmax.py::softmax_backward": "softmax_backward: dx (the shape of dout) from dout "
                    "and the output y, along `axis`; no Jacobian matrix needed",
            }, (Part("softmax_backward", 10, "softmax_backward", (GRADIENT + "test_softmax",)),)),
            Item("attention", "attention_core_backward, with the causal mask and relative attention", {
                "minivit/ops/attention.py::attention_core_backward": "attention_core_backward: dqkv (B, T, 3D) "
                    "from dheads (B, T, D) [and drel (2T - 1, D) when cache.rel is set, else None]; work per "
                    "head (B, H, T, Dh) and reuse softmax_backward",
            }, (
                Part("full", 8, "attention_full", (GRADIENT + "test_attention",), "full"),
                Part("causal", 6, "attention_causal", (GRADIENT + "test_attention",), "causal"),
                Part("relative", 6, "attention_relative", (GRADIENT + "test_relative_attention",)),
            )),
            Item("cross_entropy", "cross_entropy_backward", {
                "minivit/ops/losses.py::cross_entropy_backward": "cross_entropy_backward: dlogits (B, K) of the "
                    "mean loss, from log softmax(z) and the target t",
            }, (Part("cross_entropy_backward", 10, "cross_entropy_backward", (GRADIENT + "test_cross_entropy",)),)),
        ), (NB02,)),
        AssignmentSet("A4", "The ViT end to end, and its optimiser", (
            Item("block", "Block.forward / backward: Eq. 2-3, pre-LN with residuals", {
                "minivit/nn/transformer.py::Block.forward": "Block.forward: z' = MSA(LN(z)) + z, then "
                    "MLP(LN(z')) + z' (Eq. 2-3), with self.norm1, self.attn, self.norm2, self.mlp",
                "minivit/nn/transformer.py::Block.backward": "Block.backward: dx (B, T, D) from dout (B, T, D), "
                    "through both residual branches in reverse order",
            }, (
                Part("forward", 6, "block_forward", ("tests/test_modules_gradcheck.py::test_module",), "block",
                     code=("minivit/nn/transformer.py::Block.forward",)),
                Part("backward", 9, "block_backward", ("tests/test_modules_gradcheck.py::test_module",), "block",
                     code=("minivit/nn/transformer.py::Block.backward",)),
            )),
            Item("vit", "ViT.features / backward: the class token or mean pooling, LN and the head (Eq. 4)", {
                "minivit/models/vit.py::ViT.features": "ViT.features: the pre-logits y (B, D) from images (forward "
                    "applies the head to them): _embed_patches, _encode, then y = LN(z_L^0) (pool 'cls') or LN then "
                    "the mean over tokens (pool 'mean')",
                "minivit/models/vit.py::ViT.backward": "ViT.backward: dimages (B, H, W, C) from dlogits (B, K), "
                    "the forward in reverse: head, pooling, LN, _encode_backward, _embed_patches_backward",
                "minivit/models/masked_patches.py::MaskedPatchViT.forward": "MaskedPatchViT.forward (not graded; "
                    "for masked patch prediction): your ViT.features, with each patch replaced as corruption.source "
                    "says (embedding_forward), the [mask] embedding where corruption.kind is MASKED, and LN and the "
                    "head on every patch token",
                "minivit/models/masked_patches.py::MaskedPatchViT.backward": "MaskedPatchViT.backward (not graded): "
                    "the forward in reverse, as your ViT.backward",
            }, (
                Part("forward", 7, "vit_forward", ("tests/test_modules_gradcheck.py::test_vit_end_to_end_through_the_loss",),
                     code=("minivit/models/vit.py::ViT.features",)),
                Part("backward", 8, "vit_backward", ("tests/test_modules_gradcheck.py::test_vit_end_to_end_through_the_loss",),
                     code=("minivit/models/vit.py::ViT.features", "minivit/models/vit.py::ViT.backward")),
            )),
            Item("adamw", "AdamW.update: Adam with decoupled weight decay", {
                "minivit/optim.py::AdamW.update": "AdamW.update: update m and v in place, decay p.data if p.decay, "
                    "then the bias-corrected Adam step (the update rule of the paper, Loshchilov & Hutter 2019)",
            }, (Part("update", 10, "adamw_update", ("tests/test_optim.py::test_adamw_first_step_and_decay_groups",
                "tests/test_optim.py::test_adamw_constant_gradient_steps_are_bias_corrected",
                "tests/test_optim.py::test_adamw_weight_decay_is_decoupled_from_the_gradient")),)),
        ), ("notebooks/03_train_cifar10.ipynb",)),
        AssignmentSet("A5", "iGPT: the palette, the token embedding and cached generation", (
            Item("palette", "k-means: the centre update of Lloyd's iteration", {
                "minivit/data/palette.py::Palette.fit": "k-means update: move each centre (K, 3) to the mean of "
                    "the pixels assigned to it (ids (M,), counts (K,) of them per centre), leaving a centre with "
                    "no pixels where it is",
            }, (Part("update", 10, "kmeans", ("tests/test_palette.py::test_kmeans_recovers_well_separated_clusters",
                "tests/test_palette.py::test_fit_is_deterministic_by_seed",
                "tests/test_palette.py::test_more_centres_than_colours_leaves_no_nan")),)),
            Item("embedding", "embedding_backward: the scatter-add of a lookup", {
                "minivit/ops/embedding.py::embedding_backward": "embedding_backward: dweight (V, D) from dout "
                    "(..., D) and the ids looked up (ids may repeat)",
            }, (Part("embedding_backward", 10, "embedding_backward", (GRADIENT + "test_embedding",
                "tests/test_modules_gradcheck.py::test_embedding_module")),)),
            Item("generation", "cached generation: a key/value cache and the sampling loop", {
                "minivit/ops/attention.py::attention_decode": "attention_decode: put the cached keys and values "
                    "(past) before the new ones, then attend causally; heads (B, H, t, Dh)",
                "minivit/nn/transformer.py::Block.decode": "Block.decode: forward's Eq. 2-3 with "
                    "self.attn.decode(x, past), returning (out, present)",
                "minivit/models/igpt.py::IGPT.generate": "IGPT.generate: num_tokens times, decode only the new "
                    "token with the cache `past`, sample the next id from the last logits (_sample), append it",
            }, (
                Part("cache", 8, "decode", ("tests/test_igpt.py::test_cached_logits_equal_the_full_forward",),
                     code=("minivit/ops/attention.py::attention_decode", "minivit/nn/transformer.py::Block.decode")),
                Part("sampling", 7, "generate", ("tests/test_igpt.py::test_greedy_generation_is_step_by_step_argmax",
                     "tests/test_igpt.py::test_sampling"), code=("minivit/models/igpt.py::IGPT.generate",)),
            )),
        ), ("notebooks/05_igpt.ipynb",)),
    )
}  # fmt: skip
