"""A run's options, declared once: the CLI, the flows and the SLURM front end read them here.

`OPTIONS` names each option with its type, default, check and help; `add_options` makes
a front end's argparse options from it, and `Run.from_values` turns the values a front
end received (keyword arguments of a flow, or parsed arguments) into the one `Run` value
that the engine (`kmdist.pipeline.Plan`) executes. This module imports nothing heavy, so
``kmdist --help`` and ``python flows/segment.py --help`` answer at once.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kmdist.palette import check_n_colors

__all__ = [
    "CLUSTER_OPTIONS",
    "OPTIONS",
    "ColorSpace",
    "Init",
    "Method",
    "OnExists",
    "Option",
    "Run",
    "SegmentOptions",
    "add_options",
    "option_defaults",
]

OnExists = Literal["error", "skip", "overwrite"]
Method = Literal["auto", "exact", "minibatch"]
ColorSpace = Literal["rgb", "lab"]
Init = Literal["auto", "wu", "k-means++", "random"]


@dataclass(frozen=True)
class SegmentOptions:
    """How to learn and assign colours; the same for every image of a run."""

    n_colors: int = 16
    method: Method = "auto"
    color_space: ColorSpace = "rgb"
    random_state: int | None = 0
    init: Init = "auto"
    n_init: int = 3
    max_iter: int | None = None
    tol: float | None = None
    eps: float | None = None
    chunks: int | tuple[int, int] | None = None
    max_pixels: int = 1 << 30
    # Identifies this run in writer claims: a retried task of the same run (possibly on
    # another host) takes its images over instead of waiting for its own claim to lapse.
    run: str = field(default_factory=lambda: uuid.uuid4().hex)

    def uses_histogram(self, image: Any) -> bool:
        """Whether `image` (Dask or NumPy) is 8-bit RGB and mini-batch is not asked for."""
        from kmdist.palette import is_rgb8

        return is_rgb8(image) and self.method != "minibatch"

    def palette_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `learn_palette` / `palette_from_histogram`."""
        kw: dict[str, Any] = {
            "color_space": self.color_space,
            "random_state": self.random_state,
            "init": self.init,
            "n_init": self.n_init,
            "tol": self.tol,
            "eps": self.eps,
        }
        if self.max_iter is not None:
            kw["max_iter"] = self.max_iter
        return kw


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


@dataclass(frozen=True)
class Option:
    """One option of a run, as every front end shows it.

    Attributes
    ----------
    name : str
        The flows' parameter name, and the attribute of parsed arguments.
    flags : tuple of str
        The command-line flags (``-k``, ``--method``).
    default : object
        The default everywhere, but for `flow_default` in the flows.
    help : str
        One line, the same in ``--help`` and the flows' parameter documentation.
    parse : callable, optional
        Turns the command line's text into the value (argparse's ``type``); also checks.
    choices : tuple of str, optional
        The values allowed.
    group : str, optional
        Options of one group exclude each other on the command line.
    metavar : str, optional
        The value's name in ``--help``.
    flow_default : object, optional
        The flows' default where it differs (see `resume`).
    """

    name: str
    flags: tuple[str, ...]
    default: Any
    help: str
    parse: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    group: str | None = None
    metavar: str | None = None
    flow_default: Any = ...

    @property
    def is_flag(self) -> bool:
        """A switch: no value follows it on the command line."""
        return isinstance(self.default, bool) or self.name == "processes"

    def default_for(self, front: Literal["cli", "flow"]) -> Any:
        """Return the default in the CLI or in the flows."""
        return self.default if front == "cli" or self.flow_default is ... else self.flow_default


OPTIONS: tuple[Option, ...] = (
    Option("k", ("-k",), 16, "number of colours, 1 to 65,535", int, metavar="N"),
    Option(
        "method",
        ("--method",),
        "auto",
        "exact: k-means on the colour histogram (8-bit RGB); minibatch: mini-batch k-means "
        "on pixels; auto: exact where it applies",
        choices=("auto", "exact", "minibatch"),
    ),
    Option(
        "color_space",
        ("--color-space",),
        "rgb",
        "cluster in the image's values or in CIELAB; palettes are reported in RGB",
        choices=("rgb", "lab"),
    ),
    Option(
        "shared_palette",
        ("--shared-palette",),
        False,
        "one palette for all images (merged histograms): same colour, same label",
        group="palette",
    ),
    Option(
        "palette",
        ("--palette",),
        None,
        "label every image with a saved palette: FILE.json or STORE[:NAME]",
        group="palette",
        metavar="FILE|STORE[:NAME]",
    ),
    Option("seed", ("--seed",), 0, "random seed: same input, k and seed, same result", int),
    Option(
        "init",
        ("--init",),
        "auto",
        "how the first colours are chosen; auto: Wu's quantiser then k-means++ for images "
        "of at most 256x256 pixels, k-means++ above",
        choices=("auto", "wu", "k-means++", "random"),
    ),
    Option("attempts", ("--attempts",), 3, "seedings tried; the best is kept", _positive_int),
    Option(
        "max_iter",
        ("--max-iter",),
        None,
        "most Lloyd iterations (none: until converged)",
        _positive_int,
        metavar="N",
    ),
    Option(
        "tol",
        ("--tol",),
        None,
        "relative shift tolerance, scikit-learn's tol (none: 1e-4 for images of at most "
        "256x256 pixels, 0 above; --tol 0 --init k-means++ is kmdist 0.1's palette)",
        float,
    ),
    Option("eps", ("--eps",), None, "stop when no colour moves more than this (cv2's EPS)", float),
    Option(
        "chunks",
        ("--chunks",),
        None,
        "chunk side in pixels (none: the source's tiles, 2048 for PNG/JPEG)",
        _positive_int,
        metavar="N",
    ),
    Option(
        "max_pixels",
        ("--max-pixels",),
        None,
        "refuse PNG/JPEG/... that must be decoded whole beyond N pixels (none: 2**30)",
        _positive_int,
        metavar="N",
    ),
    Option(
        "dask_address",
        ("--scheduler", "--dask-address"),
        None,
        "Dask scheduler address (none: $DASK_SCHEDULER_ADDRESS, else a LocalCluster)",
        metavar="ADDRESS",
    ),
    Option(
        "n_workers",
        ("--workers",),
        None,
        "LocalCluster workers (none: one per core)",
        _positive_int,
        metavar="N",
    ),
    Option(
        "processes",
        ("--processes", "--threads"),
        None,
        "LocalCluster workers as processes or as threads of this process (none: threads "
        "for one image of at most 2**30 samples, processes otherwise)",
    ),
    Option(
        "overwrite",
        ("--overwrite",),
        False,
        "replace complete outputs",
        group="exists",
    ),
    Option(
        "resume",
        ("--resume",),
        False,
        "skip complete outputs (the flows' default: a rerun finishes the rest)",
        group="exists",
        flow_default=True,
    ),
    Option(
        "preview_dir",
        ("--preview",),
        None,
        "write a preview PNG per image into this folder",
        metavar="DIR",
    ),
    Option(
        "follow_symlinks",
        ("--follow-symlinks",),
        False,
        "follow symbolic links to folders while listing",
    ),
    Option(
        "verbose",
        ("-v", "--verbose"),
        False,
        "show Dask's own log lines, a failed task's traceback among them",
    ),
)
"""Every option of a run, in the order ``--help`` shows them."""

CLUSTER_OPTIONS = frozenset({"dask_address", "n_workers", "processes"})
"""Options about the Dask cluster, which a front end that brings its own (SLURM) sets."""

_BY_NAME = {o.name: o for o in OPTIONS}


def option_defaults(front: Literal["cli", "flow"] = "cli") -> dict[str, Any]:
    """Return every option's default in a front end, by name."""
    return {o.name: o.default_for(front) for o in OPTIONS}


def add_options(
    parser: argparse.ArgumentParser,
    *,
    front: Literal["cli", "flow"] = "cli",
    leave_out: Iterable[str] = (),
) -> None:
    """Add the options (all but `leave_out`) to `parser`, with their help and defaults."""
    groups: dict[str, Any] = {}
    skip = set(leave_out)
    for opt in OPTIONS:
        if opt.name in skip:
            continue
        where: Any = parser
        if opt.group is not None:
            if opt.group not in groups:
                groups[opt.group] = parser.add_mutually_exclusive_group()
            where = groups[opt.group]
        default = opt.default_for(front)
        if opt.name == "processes":
            kind = parser.add_mutually_exclusive_group()
            for flag, value in (("--processes", True), ("--threads", False)):
                kind.add_argument(
                    flag,
                    dest="processes",
                    action="store_const",
                    const=value,
                    default=None,
                    help=opt.help if value else "(see --processes)",
                )
            continue
        if isinstance(default, bool):
            action: Any = argparse.BooleanOptionalAction if default else "store_true"
            where.add_argument(
                *opt.flags, dest=opt.name, action=action, default=default, help=opt.help
            )
            continue
        shown = "" if default is None else f" (default {default})"
        where.add_argument(
            *opt.flags,
            dest=opt.name,
            type=opt.parse,
            choices=opt.choices,
            default=default,
            metavar=opt.metavar,
            help=opt.help + shown,
        )


@dataclass(frozen=True)
class Run:
    """One run: what to segment, where, how; built once by a front end, then executed.

    Attributes
    ----------
    inputs : tuple of str
        Files, folders, glob patterns, archives or storage URLs.
    output : str
        The output store.
    options : SegmentOptions
        How every image's palette is learned and its pixels labelled.
    shared_palette : bool
        One palette for all images, learned from their merged histograms.
    palette : str or None
        A saved palette to label every image with (``FILE.json`` or ``STORE[:NAME]``).
    on_exists : {"error", "skip", "overwrite"}
        What to do with an image already complete in `output`.
    preview_dir : str or None
        Where to write a preview PNG per image.
    follow_symlinks : bool
        Follow links to folders while listing.
    dask_address, n_workers, processes, verbose
        The Dask cluster (see `kmdist.dask_client`).
    """

    inputs: tuple[str, ...]
    output: str
    options: SegmentOptions = field(default_factory=SegmentOptions)
    shared_palette: bool = False
    palette: str | None = None
    on_exists: OnExists = "error"
    preview_dir: str | None = None
    follow_symlinks: bool = False
    dask_address: str | None = None
    n_workers: int | None = None
    processes: bool | None = None
    verbose: bool = False

    @classmethod
    def from_values(
        cls,
        inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        output: str | os.PathLike[str],
        values: Mapping[str, Any],
    ) -> Run:
        """Build a run from option values by name (`OPTIONS`); missing ones take defaults.

        Raises
        ------
        ValueError
            An unknown option, a bad value, or options that exclude each other.
        """
        unknown = sorted(set(values) - _BY_NAME.keys())
        if unknown:
            raise ValueError(f"unknown option(s): {', '.join(unknown)}")
        v = {**option_defaults(), **values}
        for name in ("seed", "attempts", "max_iter", "chunks", "max_pixels", "n_workers"):
            if v[name] is not None and (isinstance(v[name], bool) or not isinstance(v[name], int)):
                raise ValueError(f"{name} must be an integer, got {v[name]!r}")
        for name in ("attempts", "max_iter", "chunks", "max_pixels", "n_workers"):
            if v[name] is not None and v[name] < 1:
                raise ValueError(f"{name} must be a positive integer, got {v[name]}")
        for name in ("method", "color_space", "init"):
            if v[name] not in (choices := _BY_NAME[name].choices or ()):
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {v[name]!r}")
        if (v["tol"] is not None and v["tol"] < 0) or (v["eps"] is not None and v["eps"] < 0):
            raise ValueError(f"tol and eps must not be negative, got {v['tol']}, {v['eps']}")
        if v["shared_palette"] and v["palette"] is not None:
            raise ValueError("shared_palette and palette exclude each other: choose one")
        options = SegmentOptions(
            n_colors=check_n_colors(v["k"]),
            method=v["method"],
            color_space=v["color_space"],
            random_state=v["seed"],
            init=v["init"],
            n_init=v["attempts"],
            max_iter=v["max_iter"],
            tol=None if v["tol"] is None else float(v["tol"]),
            eps=v["eps"],
            chunks=v["chunks"],
            # None: SegmentOptions' default, which is `kmdist.DEFAULT_MAX_PIXELS` (tested)
            # without importing the readers here.
            **({} if v["max_pixels"] is None else {"max_pixels": v["max_pixels"]}),
        )
        names = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
        # Overwrite wins over resume (the flows' default): the CLI lets only one be given.
        on_exists: OnExists = "overwrite" if v["overwrite"] else "skip" if v["resume"] else "error"
        preview = v["preview_dir"]
        return cls(
            inputs=tuple(os.fspath(n) for n in names),
            output=os.fspath(output),
            options=options,
            shared_palette=bool(v["shared_palette"]),
            palette=v["palette"],
            on_exists=on_exists,
            preview_dir=None if preview is None else os.fspath(preview),
            follow_symlinks=bool(v["follow_symlinks"]),
            dask_address=v["dask_address"],
            n_workers=v["n_workers"],
            processes=v["processes"],
            verbose=bool(v["verbose"]),
        )
