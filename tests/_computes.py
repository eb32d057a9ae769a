"""Record what each Dask compute asks for and returns, on the threaded scheduler."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.threaded
import numpy as np


@dataclass
class Computes:
    """One entry per compute, in order: keys asked for, bytes of the results returned."""

    keys: list[int] = field(default_factory=list)
    returned: list[int] = field(default_factory=list)

    def clear(self) -> None:
        """Forget the computes recorded so far."""
        self.keys.clear()
        self.returned.clear()


@contextmanager
def recorded_computes() -> Iterator[Computes]:
    """Run the block's computes on the threaded scheduler, recording each one."""
    record = Computes()

    def get(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        out = dask.threaded.get(dsk, keys, **kwargs)
        record.keys.append(len(keys))
        results = (o for o in dask.core.flatten(out) if o is not None)
        record.returned.append(sum(np.asarray(o).nbytes for o in results))
        return out

    with dask.config.set(scheduler=get):
        yield record
