"""AOFlagger as the interference search behind ``flag_subband``'s interface (optional).

AOFlagger (Offringa et al. 2012; the ``aoflagger`` wheel on PyPI, GPLv3) is the field's
reference flagger. The engine does not need it (``kernels.flagging`` is the default); it is
here so that the engine's flags can be compared with AOFlagger's on the same data (tests,
benchmark) and so that an operator can choose it (``flag.backend = aoflagger``).

Per baseline, AOFlagger gets one image set of 2 x npol images (real and imaginary part of
each polarisation; width = integrations, height = channels) and the flags so far as its
input mask; its single output mask is applied to every polarisation, as the engine's is.
"""

from __future__ import annotations

import numpy as np

from engine.errors import ConfigError


def available() -> bool:
    """True when the aoflagger wheel imports."""
    try:
        import aoflagger  # noqa: F401
    except ImportError:
        return False
    return True


class AOFlaggerRows:
    """AOFlagger over every baseline of one subband, with the raw arrays of ``flag_rows``.

    strategy: a Lua strategy file ('' AOFlagger's generic default strategy).
    """

    def __init__(self, strategy: str = ""):
        try:
            import aoflagger
        except ImportError as e:
            raise ConfigError("flag.backend = aoflagger needs the aoflagger wheel "
                              "(pip install aoflagger; GPLv3)") from e
        self._ao = aoflagger.AOFlagger()
        path = strategy or self._ao.find_strategy_file(aoflagger.TelescopeId.Generic)
        self.strategy_path = str(path)
        self._strategy = self._ao.load_strategy_file(self.strategy_path)

    def __call__(self, vis, flags, order, nt: int, nbl: int) -> np.ndarray:
        """Flag ``flags`` (nrows, nchan, npol) in place; vis, order as ``flag_rows``.
        Returns the cells (time x channel) added per baseline, (nbl,) int64."""
        nrows, nchan, npol = vis.shape
        rows = np.asarray(order, dtype=np.int64).reshape(nt, nbl)
        images = self._ao.make_image_set(nt, nchan, 2 * npol)
        mask_in = self._ao.make_flag_mask(nt, nchan, False)
        added = np.zeros(nbl, dtype=np.int64)
        for b in range(nbl):
            r = rows[:, b]
            f = flags[r]  # (nt, nchan, npol)
            if f.all():
                continue
            v = vis[r]
            for p in range(npol):
                images.set_image_buffer(2 * p, np.ascontiguousarray(v[:, :, p].real.T,
                                                                    dtype=np.float32))
                images.set_image_buffer(2 * p + 1, np.ascontiguousarray(v[:, :, p].imag.T,
                                                                        dtype=np.float32))
            before = f.any(axis=2)  # (nt, nchan)
            mask_in.set_buffer(np.ascontiguousarray(before.T))
            out = np.asarray(self._strategy.run(images, mask_in).get_buffer()).T  # (nt, nchan)
            new = out & ~before
            if new.any():
                ti, ci = np.nonzero(new)
                flags[r[ti], ci, :] = True
                added[b] = int(new.sum())
        return added
