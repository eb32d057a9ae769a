"""Process exit without the interpreter's last garbage collection."""

import gc

__all__ = ["skip_final_collection"]


def skip_final_collection() -> None:
    """Let this process exit without collecting every object it ever imported.

    At exit the interpreter runs full collections over every tracked object: a process
    that imported Dask, Zarr and numba takes 0.46 s to exit (0.92 s with Prefect), the
    CLI's own exit and each worker's as its cluster closes. Here
    garbage is collected once, so that pending finalizers run, and the survivors are
    frozen (`gc.freeze`): exit then skips them, and the process ends in 0.03 s. Only
    for a process whose work is done and about to exit: frozen cycles are never
    collected.
    """
    gc.collect()
    gc.freeze()
