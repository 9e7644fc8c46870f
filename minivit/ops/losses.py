"""Softmax cross-entropy, the classification loss of the ViT head."""

from ..backend import array_module


def cross_entropy_forward(logits, labels, label_smoothing=0.0):
    """
    logits: (B, K)
    labels: (B,) integer class ids in [0, K), or (B, K) target probabilities (e.g. from mixup)
    label_smoothing: ε; the target becomes (1 - ε) y + ε / K
    returns loss (a 0-d array, mean over the batch), cache

        loss = -(1/B) Σ_b Σ_k target_bk log softmax(logits_b)_k
    """
    xp = array_module(logits)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy expects logits of shape (B, K), got {logits.shape}")
    bsz, k = logits.shape
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if labels.ndim == 1:
        if labels.shape[0] != bsz:
            raise ValueError(f"expected {bsz} labels (one per logit row), got {labels.shape[0]}")
        if labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")
        if bsz and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise ValueError(
                f"labels must be class ids in [0, {k}), got values from {int(labels.min())} to {int(labels.max())}"
            )
        target = xp.zeros_like(logits)
        target[xp.arange(bsz), labels] = 1.0
    elif labels.shape == logits.shape:
        target = labels.astype(logits.dtype, copy=True)
    else:
        raise ValueError(f"labels must be (B,) class ids or (B, K) = {logits.shape} probabilities, got {labels.shape}")
    if label_smoothing:
        target *= 1.0 - label_smoothing
        target += label_smoothing / k

    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))  # (B, K)
    loss = -(target * log_probs).sum() / bsz
    return loss, (log_probs, target)


def cross_entropy_backward(cache):
    """
    returns dlogits (B, K), the gradient of the mean loss
    """
    log_probs, target = cache  # log softmax(z) (B, K), the target distribution t (B, K)
    xp = array_module(log_probs)
    ### BEGIN SOLUTION
    # d/dz [-Σ_k t_k log softmax(z)_k] = softmax(z) - t   (Σ_k t_k = 1), divided by B for the mean.
    dlogits = xp.exp(log_probs)
    dlogits -= target
    dlogits /= log_probs.shape[0]
    return dlogits
    ### END SOLUTION
