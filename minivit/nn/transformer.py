"""The Transformer encoder block of the paper (Eq. 2-3): pre-LN MSA and MLP, each with a residual."""

from .. import ops
from .layers import GELU, Dropout, LayerNorm, Linear
from .module import Module, new_parameter, trunc_normal


class MultiHeadAttention(Module):
    """MSA on (B, T, D); after a forward, `self.attn` holds its weights (B, H, T, T).

    relative = T > 0: 1-D relative position attention over sequences of exactly T tokens, with a learned
    key per offset, `rel` (2T - 1, D) (Appendix D.4; see ops.attention_forward).
    """

    def __init__(self, dim, heads, dropout=0.0, causal=False, relative=0):
        self.heads = heads
        self.causal = causal
        self.qkv = Linear(dim, 3 * dim)  # U_qkv, [q | k | v] column blocks
        self.proj = Linear(dim, dim)  # U_msa
        self.dropout = Dropout(dropout)
        if relative:
            self.rel = new_parameter(trunc_normal((2 * relative - 1, dim)), decay=False)
        self.attn = None

    def forward(self, x):
        """x: (B, T, D) -> (B, T, D)"""
        rel = self.rel.data if hasattr(self, "rel") else None
        out, self._cache = ops.attention_forward(
            x, self.qkv.weight.data, self.qkv.bias.data, self.proj.weight.data, self.proj.bias.data,
            self.heads, self.causal, rel,
        )
        self.attn = self._cache.attn
        return self.dropout(out)

    def decode(self, x, past=None):
        """Generation (causal, forward only): x (B, t, D), the next t tokens after those whose keys and
        values are `past`; returns out (B, t, D) and present, the keys and values of all of them."""
        return ops.attention_decode(x, self.qkv.weight.data, self.qkv.bias.data, self.proj.weight.data,
                                    self.proj.bias.data, self.heads, past)  # fmt: skip

    def backward(self, dout):
        dout = self.dropout.backward(dout)
        dx, dw_qkv, db_qkv, dw_out, db_out, *drel = ops.attention_backward(dout, self._cache)
        if drel:
            self.rel.grad += drel[0]
        self.qkv.weight.grad += dw_qkv
        self.qkv.bias.grad += db_qkv
        self.proj.weight.grad += dw_out
        self.proj.bias.grad += db_out
        return dx


class MLP(Module):
    """Two dense layers with a GELU between (Sec. 3.1), dropout after each."""

    def __init__(self, dim, hidden_dim, dropout=0.0):
        self.fc1 = Linear(dim, hidden_dim)
        self.act = GELU()
        self.drop1 = Dropout(dropout)
        self.fc2 = Linear(hidden_dim, dim)
        self.drop2 = Dropout(dropout)

    def forward(self, x):
        """x: (B, T, D) -> (B, T, D)"""
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))

    def backward(self, dout):
        dout = self.fc2.backward(self.drop2.backward(dout))
        return self.fc1.backward(self.act.backward(self.drop1.backward(dout)))


class Block(Module):
    """
    z' = MSA(LN(z)) + z        (Eq. 2)
    z  = MLP(LN(z')) + z'      (Eq. 3)
    """

    def __init__(self, dim, heads, mlp_dim, dropout=0.0, causal=False, relative=0):
        self.norm1 = LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, dropout, causal, relative)
        self.norm2 = LayerNorm(dim)
        self.mlp = MLP(dim, mlp_dim, dropout)

    def forward(self, x):
        """x: (B, T, D) -> (B, T, D)"""
        ### BEGIN SOLUTION
        # The branches return fresh arrays that nothing else holds, so the residual adds in place.
        z = self.attn(self.norm1(x))
        z += x
        out = self.mlp(self.norm2(z))
        out += z
        return out
        ### END SOLUTION

    def decode(self, x, past=None):
        """The block for generation, with attention's key/value cache: x (B, t, D) -> (B, t, D), present."""
        ### BEGIN SOLUTION
        z, present = self.attn.decode(self.norm1(x), past)
        z += x
        out = self.mlp(self.norm2(z))
        out += z
        return out, present
        ### END SOLUTION

    def backward(self, dout):
        """dout: (B, T, D) -> dx (B, T, D); fills the block's parameters' grads."""
        ### BEGIN SOLUTION
        # A residual y = x + f(x) passes dout straight through and adds f's backward.
        dz = self.norm2.backward(self.mlp.backward(dout))
        dz += dout
        dx = self.norm1.backward(self.attn.backward(dz))
        dx += dz
        return dx
        ### END SOLUTION
