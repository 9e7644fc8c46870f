"""Embedding lookup: row `ids` of a table (iGPT's token embedding)."""

from ..backend import array_module


def embedding_forward(ids, weight):
    """
    ids: integer array of any shape (...) with values in [0, V)   weight: (V, D)
    returns out (..., D), cache
    """
    if ids.dtype.kind not in "iu":
        raise ValueError(f"embedding ids must be integers, got dtype {ids.dtype}")
    v = weight.shape[0]
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= v):
        raise ValueError(f"embedding ids must be in [0, {v}), got values from {int(ids.min())} to {int(ids.max())}")
    return weight[ids], (ids, weight.shape)


def embedding_backward(dout, cache):
    """
    dout: (..., D)
    returns dweight (V, D)
    """
    ids, shape = cache  # the ids looked up (...), the table's shape (V, D)
    xp = array_module(dout)
    ### BEGIN SOLUTION
    # out[i] = weight[ids[i]] copies one row, so each row's gradient is the sum of dout over
    # every position that looked it up: a scatter-add (ids may repeat, so not a plain assignment).
    dweight = xp.zeros(shape, dtype=dout.dtype)
    xp.add.at(dweight, ids.reshape(-1), dout.reshape(-1, shape[1]))
    return dweight
    ### END SOLUTION
