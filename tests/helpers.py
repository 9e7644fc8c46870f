"""Shared by the tests: the gradient-check tolerance, assertions that print the figures, and a Ctrl-C."""

import os
import signal

TOLERANCE = 1e-7  # relative error of a float64 gradient check (docs/design.md)


def assert_close(errors, tol=TOLERANCE):
    """errors: a list or dict of relative errors; fails naming each one above tol."""
    items = errors.items() if isinstance(errors, dict) else enumerate(errors)
    bad = {name: err for name, err in items if not err <= tol}
    assert not bad, ", ".join(f"{k}: relative error {v:.1e}" for k, v in bad.items()) + f" (tolerance {tol:g})"


def assert_bit_identical(a, b):
    """Two state dicts {name: array} with the same names, dtypes and values to the last bit."""
    import numpy as np

    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), f"{name} differs"


def ctrl_c_at(epoch, step):
    """A training callback (train(..., callbacks=[...])) that presses Ctrl-C, SIGINT to this process, after
    step `step` of epoch `epoch` (both from 1): the loop stops there, with a checkpoint."""

    def press(at_epoch, at_step):
        if (at_epoch, at_step) == (epoch, step):
            os.kill(os.getpid(), signal.SIGINT)

    return press
