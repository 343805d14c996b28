"""Pure numba kernels: arrays in, arrays out; no I/O, no Ray, no CASA."""
