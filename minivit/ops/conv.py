"""2-D convolution of NHWC images, as one matmul over gathered windows (im2col).

The paper's hybrid architecture (Sec. 3.1) forms the input sequence from a CNN's feature map
instead of raw image patches; minivit's convolutional stem is built from this op. Each output
pixel is a window of k×k×C inputs, flattened in (row, column, channel) order like a patch, times
the kernel reshaped to (k²C, F). So a convolution with kernel = stride = P and no padding is
exactly patchify followed by the patch embedding E of Eq. 1.
"""

from ..backend import array_module
from .linear import linear_backward, linear_forward


def _out_size(size, k, stride, padding):
    return (size + 2 * padding - k) // stride + 1


def _met_by(i, j, stride, ho, wo):
    """Index of the padded pixels that kernel entry (i, j) meets, one per output pixel: (B, H', W', C)."""
    return slice(None), slice(i, i + stride * ho, stride), slice(j, j + stride * wo, stride)


def conv2d_forward(x, w, b, stride=1, padding=0):
    """
    x: (B, H, W, C)   w: (k, k, C, F), the (H, W, in, out) layout of the paper's JAX code   b: (F,) or None
    returns out (B, H', W', F) with H' = (H + 2·padding - k) // stride + 1, and a cache
    """
    if x.ndim != 4:
        raise ValueError(f"conv2d: expected images (B, H, W, C), got an array of shape {x.shape}")
    if w.ndim != 4 or w.shape[0] != w.shape[1] or w.shape[2] != x.shape[3]:
        raise ValueError(f"conv2d: expected a kernel (k, k, {x.shape[3]}, F) for {x.shape[3]} channels, got {w.shape}")
    if stride < 1 or padding < 0:
        raise ValueError(f"conv2d: stride must be >= 1 and padding >= 0, got {stride} and {padding}")
    xp = array_module(x)
    n, h, wd, c = x.shape
    k = w.shape[0]
    ho, wo = _out_size(h, k, stride, padding), _out_size(wd, k, stride, padding)
    if ho < 1 or wo < 1:
        raise ValueError(f"conv2d: a {k}×{k} kernel does not fit a {h}×{wd} image padded by {padding}")
    padded = xp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    cols = xp.empty((n, ho, wo, k, k, c), dtype=x.dtype)  # every output pixel's window
    for i in range(k):
        for j in range(k):
            cols[:, :, :, i, j] = padded[_met_by(i, j, stride, ho, wo)]
    out, linear_cache = linear_forward(cols.reshape(n, ho, wo, k * k * c), w.reshape(k * k * c, -1), b)
    return out, (linear_cache, x.shape, w.shape, stride, padding)


def conv2d_backward(dout, cache):
    """
    dout: (B, H', W', F)
    returns dx (B, H, W, C), dw (k, k, C, F), db (F,) or None

    The matmul's backward (see linear) gives each window's gradient; a pixel that lies in several
    windows receives the sum of its gradients from all of them (col2im).
    """
    linear_cache, x_shape, w_shape, stride, padding = cache
    dcols, dw, db = linear_backward(dout, linear_cache)
    n, h, wd, c = x_shape
    k = w_shape[0]
    _, ho, wo, _ = dout.shape
    dcols = dcols.reshape(n, ho, wo, k, k, c)
    dpadded = array_module(dout).zeros((n, h + 2 * padding, wd + 2 * padding, c), dtype=dout.dtype)
    for i in range(k):
        for j in range(k):
            dpadded[_met_by(i, j, stride, ho, wo)] += dcols[:, :, :, i, j]
    return dpadded[:, padding : padding + h, padding : padding + wd], dw.reshape(w_shape), db
