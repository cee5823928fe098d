"""The HDF5 activation cache: a streaming, resumable writer and a shuffling minibatch reader.

Layout (one group per hook point; real tokens only, and apart from them the padding a pipeline reads):

    /prompts                      [n_prompts] UTF-8 strings
    /<hook point>/acts            [n_tokens, d]
    /<hook point>/prompt_index    [n_tokens] int32   (row's prompt)
    /<hook point>/position        [n_tokens] int32   (row's token position in that prompt)
    /<hook point>/padding/...     acts, prompt_index, position of the padding positions that the pipeline's
                                  transformer reads (`Activations.padding`: CogVideoX, Flux, SD3); empty elsewhere
    /prompt_index, /position      hard links to the first hook point's datasets
    attributes: format, backbone_id, hook_points, d_model, dtype, prompts_hash, package_version,
                batch_size, progress (JSON: prompts done and committed rows per hook point), complete

HDF5 has no bfloat16, so a bfloat16 cache keeps each value's 16 bits in a uint16 dataset (attribute dtype
"bfloat16"); the reader turns them back into numbers.

Hook points of different text encoders (Flux, SD3) tokenize differently, which is why every group
carries its own row index; for a single encoder all groups share the same one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, cast

import numpy as np

from clear_sae import __version__
from clear_sae.config import MAX_PROMPT_BATCH, POSITIVE, at_most, check_fields, is_count
from clear_sae.errors import ClearSaeError, all_finite, check_interrupt
from clear_sae.io import file_lock, is_locked, prompts_hash

if TYPE_CHECKING:
    import h5py
    import numpy as np
    import torch

    from clear_sae.backbones import Backbone

FORMAT = "clear_sae.activation_cache"
PADDING = "padding"
"""The sub-group of a hook point's group that holds the padding rows a pipeline reads."""
DTYPES = ("float16", "bfloat16", "float32")
"""Storage dtypes a cache may hold its activations in."""


def stored_dtype(dtype: str) -> str:
    """The HDF5 dataset dtype that holds activations of storage dtype `dtype` (bfloat16's bits go in uint16)."""
    return "uint16" if dtype == "bfloat16" else dtype


@dataclass
class CacheConfig:
    """How to write an activation cache."""

    batch_size: int = field(default=64, metadata=at_most(MAX_PROMPT_BATCH, POSITIVE))
    """Prompts per forward pass."""
    dtype: str = "float16"
    """Storage dtype of the activations: float16, bfloat16 (the range of float32 at half its size, for models
    whose activations overflow float16, such as T5) or float32."""
    chunk_rows: int = field(default=4096, metadata=at_most(1 << 20, POSITIVE))
    """HDF5 chunk height: rows read together by the shuffling reader."""
    padding: bool = False
    """Also store, apart, the padding positions a pipeline's transformer reads (CogVideoX, Flux, SD3 pad T5 to
    its full length unmasked). Off by default: dictionaries train on real tokens only, and on Flux the padding is
    some 25 times the real tokens."""

    def __post_init__(self) -> None:
        check_fields(self)


def _attr(node: Any, key: str) -> Any:
    """An attribute as stored (h5py types attribute values as a union of array kinds)."""
    return node.attrs[key]


def _dataset(node: Any, *path: str) -> "h5py.Dataset":
    """The dataset at `path` below `node`, one name per level (h5py types a lookup as any kind of node)."""
    for name in path:
        node = node[name]
    return cast("h5py.Dataset", node)


def _progress(f: "h5py.File") -> dict:
    return json.loads(_attr(f, "progress"))


def _check_resumable(
    f: "h5py.File", path: Path, backbone: "Backbone", hook_points: list[str], phash: str, cfg: CacheConfig
) -> None:
    expected = {
        "backbone_id": backbone.backbone_id,
        "hook_points": json.dumps(hook_points),
        "prompts_hash": phash,
        "dtype": cfg.dtype,
        "padding": cfg.padding,
    }
    for key, value in expected.items():
        found = f.attrs.get(key, False if key == "padding" else None)
        found = bool(found) if isinstance(found, np.bool_) else found
        if found != value:
            raise ClearSaeError(
                f"cannot resume {path}: it was written with {key}={found!r}, this run has {value!r}; "
                "rerun with the same arguments, or pass --force to start over"
            )


def _chunk_rows(cfg: CacheConfig, d: int) -> int:
    """Rows per HDF5 chunk: `cfg.chunk_rows`, capped so one chunk stays near 4 MiB for wide models."""

    return max(64, min(cfg.chunk_rows, (4 << 20) // (d * np.dtype(stored_dtype(cfg.dtype)).itemsize)))


def hook_module_record(backbone: "Backbone", hook_point: str) -> dict[str, str | None]:
    """Where `hook_point` lives in the model: the pipeline subfolder of its model (None for a model on its own)
    and the dotted module name inside that model."""
    return {"subfolder": backbone.subfolder(hook_point), "module": backbone.module_path(hook_point)}


def _create_layout(
    f: "h5py.File", backbone: "Backbone", hook_points: list[str], prompts: list[str], cfg: CacheConfig
) -> None:
    import h5py

    f.attrs.update(
        {
            "format": FORMAT,
            "backbone_id": backbone.backbone_id,
            "model_source": backbone.source or backbone.backbone_id,
            "hook_points": json.dumps(hook_points),
            "d_model": json.dumps({h: backbone.d_model(h) for h in hook_points}),
            "hook_modules": json.dumps({h: hook_module_record(backbone, h) for h in hook_points}),
            "dtype": cfg.dtype,
            "padding": cfg.padding,
            "prompts_hash": prompts_hash(prompts),
            "package_version": __version__,
            "batch_size": cfg.batch_size,
            "complete": False,
            "progress": json.dumps({"n_prompts_done": 0, "rows": {h: 0 for h in hook_points}}),
        }
    )
    f.create_dataset("prompts", data=prompts, dtype=h5py.string_dtype("utf-8"))
    for hook in hook_points:
        group = f.create_group(hook)
        d = backbone.d_model(hook)
        _create_rows(group, d, cfg)
        _create_rows(group.create_group(PADDING), d, cfg)
    f["prompt_index"] = _dataset(f, hook_points[0], "prompt_index")
    f["position"] = _dataset(f, hook_points[0], "position")


def _create_rows(group: "h5py.Group", d: int, cfg: CacheConfig) -> None:
    """Empty, growable `acts`, `prompt_index` and `position` datasets in `group`."""
    group.create_dataset(
        "acts", shape=(0, d), maxshape=(None, d), dtype=stored_dtype(cfg.dtype), chunks=(_chunk_rows(cfg, d), d)
    )
    for name in ("prompt_index", "position"):
        group.create_dataset(name, shape=(0,), maxshape=(None,), dtype="int32", chunks=(cfg.chunk_rows,))


def _append(
    group: "h5py.Group", start: int, acts: "np.ndarray", prompt_index: "np.ndarray", position: "np.ndarray"
) -> int:
    end = start + len(acts)
    for name, values in (("acts", acts), ("prompt_index", prompt_index), ("position", position)):
        dataset = _dataset(group, name)
        dataset.resize(end, axis=0)
        dataset[start:end] = values
    return end


def _truncate(f: "h5py.File", rows: dict[str, int], padding_rows: dict[str, int]) -> None:
    """Drop rows written after the last committed batch (an interrupted write)."""
    for hook, n in rows.items():
        for name in ("acts", "prompt_index", "position"):
            _dataset(f, hook, name).resize(n, axis=0)
            if PADDING in cast("h5py.Group", f[hook]):
                _dataset(f, hook, PADDING, name).resize(padding_rows[hook], axis=0)


FLOAT16_MAX = 65504.0
"""The largest finite float16 value: a larger activation is stored as infinity."""


def _non_finite_message(
    hook: str, computed: "torch.Tensor", prompt_of_row: "torch.Tensor", batch: list[str], start: int, dtype: str
) -> str:
    """Why a batch's activations at `hook` cannot be stored: the model gave NaN or infinity, or a value beyond
    the storage dtype's range (a float16 cache cannot hold T5-family activations above 65,504)."""
    bad_rows = ~computed.isfinite().all(-1)
    if bool(bad_rows.any()):
        i = int(prompt_of_row[bad_rows.nonzero()[0, 0]])
        return (
            f"the model gave NaN or infinite activations at {hook} on prompt {start + i + 1} ({batch[i][:60]!r}); "
            "check the model's weights and dtype, or leave this hook point out"
        )
    peaks = computed.abs().amax(-1)
    i = int(prompt_of_row[int(peaks.argmax())])
    return (
        f"activations at {hook} reach {float(peaks.max()):.4g} on prompt {start + i + 1} ({batch[i][:60]!r}), beyond "
        f"{dtype}'s largest value ({FLOAT16_MAX:,.0f}); cache with --dtype bfloat16 (or float32) --force"
    )


def write_cache(
    backbone: "Backbone",
    prompts: list[str],
    out: str | Path,
    hook_points: list[str],
    cfg: CacheConfig = CacheConfig(),
    resume: bool = False,
    force: bool = False,
    stop_after_batches: int | None = None,
    progress: bool = True,
) -> Path:
    """Stream `prompts` through `backbone` and store the residual stream at `hook_points` in an HDF5 file.

    Each batch is committed with one attribute write, so an interrupted run resumed with `resume=True`
    yields exactly the rows of an uninterrupted one. An existing file is never overwritten unless
    `force`; with `resume` its arguments must match. `stop_after_batches` ends early (for testing resume).
    One run writes a cache at a time: a second, started while the first holds the cache's lock, is refused.
    """
    out = Path(out)
    if not prompts:
        raise ClearSaeError("no prompts to cache; pass a prompt file with at least one prompt")
    if cfg.batch_size < 1:
        raise ClearSaeError(f"--batch-size must be at least 1, not {cfg.batch_size}")
    if cfg.dtype not in DTYPES:
        raise ClearSaeError(f"unsupported cache dtype {cfg.dtype!r}; use {' or '.join(DTYPES)}")
    backbone.check_hook_points(hook_points)
    if out.is_dir():
        raise ClearSaeError(f"{out} is a directory; pass a file path for the cache, such as {out / 'cache.h5'}")
    with file_lock(out, busy=f"{out} is being written by another `clear-sae cache` run; wait for it to finish"):
        return _write_cache_locked(
            backbone, prompts, out, hook_points, cfg, resume, force, stop_after_batches, progress
        )


def _write_cache_locked(
    backbone: "Backbone",
    prompts: list[str],
    out: Path,
    hook_points: list[str],
    cfg: CacheConfig,
    resume: bool,
    force: bool,
    stop_after_batches: int | None,
    progress: bool,
) -> Path:
    """`write_cache`'s work, done while holding the cache's lock."""
    import h5py
    from tqdm.auto import tqdm

    phash = prompts_hash(prompts)
    if out.exists() and not (resume or force):
        raise ClearSaeError(f"{out} already exists; pass --resume to continue it or --force to overwrite it")
    if resume and out.exists():
        f = open_h5(out, "r+")
        _check_resumable(f, out, backbone, hook_points, phash, cfg)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        # The layout is built aside and renamed into place, so an interrupt at any moment leaves either no
        # file or one that --resume continues (and --force replaces the old file only once the new one exists).
        partial = out.with_name(out.name + ".partial")
        with h5py.File(partial, "w") as new:
            _create_layout(new, backbone, hook_points, prompts, cfg)
        partial.replace(out)
        f = open_h5(out, "r+")
    try:
        state = _progress(f)
        rows = {h: int(state["rows"][h]) for h in hook_points}
        padding_rows = {h: int(state.get("padding_rows", {}).get(h, 0)) for h in hook_points}
        _truncate(f, rows, padding_rows)
        done = int(state["n_prompts_done"])
        batch_size = int(_attr(f, "batch_size"))  # a resumed run keeps the original batching
        starts = range(done, len(prompts), batch_size)
        bar = tqdm(total=len(prompts), initial=done, desc="caching", unit="prompt", disable=not progress)
        for n_batches, start in enumerate(starts):
            check_interrupt()
            if stop_after_batches is not None and n_batches >= stop_after_batches:
                break
            batch = prompts[start : start + batch_size]
            outputs = backbone.run(batch, hook_points)
            for hook in hook_points:
                act = outputs[hook]
                group = cast("h5py.Group", f[hook])
                rows[hook] = _store(group, rows[hook], act.acts, act.mask, (hook, batch, start, cfg.dtype))
                if cfg.padding and act.padding is not None:
                    if PADDING not in group:  # a cache begun before padding was kept
                        _create_rows(group.create_group(PADDING), act.acts.shape[-1], cfg)
                    padded = cast("h5py.Group", group[PADDING])
                    padding_rows[hook] = _store(
                        padded, padding_rows[hook], act.acts, act.padding, (hook, batch, start, cfg.dtype)
                    )
            done = start + len(batch)
            f.attrs["progress"] = json.dumps({"n_prompts_done": done, "rows": rows, "padding_rows": padding_rows})
            f.flush()
            bar.update(len(batch))
        bar.close()
        f.attrs["complete"] = done == len(prompts)
    finally:
        f.close()
    return out


def _store(
    group: "h5py.Group",
    start: int,
    acts: "torch.Tensor",
    positions: "torch.Tensor",
    context: tuple[str, list[str], int, str],
) -> int:
    """Append the rows of `acts` at `positions` (`[batch, seq]` bool) to `group`, converted to the cache's dtype;
    returns the new row count. A value the dtype cannot hold is refused, naming the hook point and prompt
    (`context`: hook point, the batch's prompts, its first prompt's index, the storage dtype)."""
    import torch

    hook, batch, first, dtype = context
    where = torch.nonzero(positions.cpu(), as_tuple=False).to(torch.int32)
    # Converting in torch (vectorised) rather than numpy keeps the cache's overhead over the bare forward pass
    # small; so does writing here rather than in a thread, which on 2 cores slowed the forward pass more than it
    # hid (benchmarks/caching.py).
    computed = acts[positions.to(acts.device)].cpu()  # only the rows kept leave the device
    stored = computed.to(getattr(torch, dtype))
    if not all_finite(stored):
        raise ClearSaeError(_non_finite_message(hook, computed, where[:, 0], batch, first, dtype))
    values = stored.view(torch.int16).numpy().view(np.uint16) if dtype == "bfloat16" else stored.numpy()
    return _append(group, start, values, (where[:, 0] + first).numpy(), where[:, 1].numpy())


def open_h5(path: str | Path, mode: str = "r") -> "h5py.File":
    """Open a clear_sae cache, turning missing, truncated and foreign files into one-line errors."""
    import h5py

    path = Path(path)
    if path.is_dir():
        raise ClearSaeError(f"cache {path} is a directory; pass the .h5 file that `clear-sae cache` wrote")
    if not path.is_file():
        raise ClearSaeError(f"cache {path} does not exist; create it with `clear-sae cache`")
    try:
        f = h5py.File(path, mode)
    except OSError as err:
        if is_locked(path):
            raise ClearSaeError(
                f"{path} is being written by another `clear-sae cache` run; wait for it to finish"
            ) from None
        reason = str(err).split("(")[-1].rstrip(")") if "(" in str(err) else str(err)
        raise ClearSaeError(
            f"{path} is not a readable HDF5 file ({reason}); it may be truncated or corrupt: "
            "recreate it with `clear-sae cache ... --force`"
        ) from None
    if f.attrs.get("format") != FORMAT or "progress" not in f.attrs:
        f.close()
        raise ClearSaeError(
            f"{path} is an HDF5 file but not a clear_sae activation cache; create one with `clear-sae cache`"
        )
    problem = metadata_problem(f)
    if problem:
        f.close()
        raise ClearSaeError(
            f"cache {path} has inconsistent metadata ({problem}); recreate it with `clear-sae cache ... --force`"
        )
    return f


def metadata_problem(f: "h5py.File") -> str | None:
    """What is wrong with a cache's attributes and layout, or None: every attribute present and of its type, a
    width and rows for each hook point, and progress that claims no more prompts or rows than the file holds."""
    try:
        for key in ("backbone_id", "prompts_hash", "dtype"):
            if not isinstance(_attr(f, key), str):
                return f"{key} is not a string"
        if not isinstance(_attr(f, "complete"), (bool, np.bool_)):
            return "complete is neither true nor false"
        if not is_count(_attr(f, "batch_size"), 1):
            return f"batch_size {_attr(f, 'batch_size')} is not a positive integer"
        hook_points = json.loads(_attr(f, "hook_points"))
        widths = json.loads(_attr(f, "d_model"))
        progress = json.loads(_attr(f, "progress"))
        if not (isinstance(hook_points, list) and hook_points and all(isinstance(h, str) for h in hook_points)):
            return "hook_points is not a list of names"
        n_prompts = len(_dataset(f, "prompts"))
        done, rows = progress["n_prompts_done"], progress["rows"]
        if not is_count(done) or done > n_prompts:
            return f"progress claims {done!r} prompts done of {n_prompts}"
        if bool(_attr(f, "complete")) and done != n_prompts:
            return f"marked complete after {done} of {n_prompts} prompts"
        for hook in hook_points:
            width, acts = widths[hook], _dataset(f, hook, "acts")
            if not is_count(width) or acts.ndim != 2 or acts.shape[1] != width:
                return f"{hook} holds rows of width {acts.shape[1:]}, the metadata says {width!r}"
            if not is_count(rows[hook]) or rows[hook] > acts.shape[0]:
                return f"progress claims {rows[hook]!r} rows at {hook}, the file holds {acts.shape[0]}"
            if any(_dataset(f, hook, name).shape[0] < rows[hook] for name in ("prompt_index", "position")):
                return f"{hook} has fewer row indices than rows"
            padded = progress.get("padding_rows", {}).get(hook, 0)
            if padded and (not is_count(padded) or _dataset(f, hook, PADDING, "acts").shape[0] < padded):
                return f"progress claims {padded!r} padding rows at {hook}, more than the file holds"
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as err:
        return f"{type(err).__name__}: {err}"
    return None


class ActivationCache:
    """Read-only view of a finished cache: metadata, rows, and shuffled minibatches."""

    def __init__(self, path: str | Path, allow_incomplete: bool = False) -> None:
        self.path = Path(path)
        self.file = open_h5(self.path)
        attrs = self.file.attrs
        self.backbone_id: str = str(attrs["backbone_id"])
        self.model_source = str(attrs.get("model_source", self.backbone_id))
        self.hook_points: list[str] = json.loads(_attr(self.file, "hook_points"))
        self.widths: dict[str, int] = json.loads(_attr(self.file, "d_model"))
        self.hook_modules: dict[str, dict[str, str | None]] = json.loads(str(attrs.get("hook_modules", "{}")))
        """Each hook point's subfolder and module name (`hook_module_record`); empty for an older cache."""
        self.prompts_hash: str = str(attrs["prompts_hash"])
        self.dtype: str = str(attrs["dtype"])
        self.complete = bool(attrs["complete"])
        if not self.complete and not allow_incomplete:
            done = _progress(self.file)["n_prompts_done"]
            total = len(_dataset(self.file, "prompts"))
            self.file.close()
            raise ClearSaeError(
                f"cache {self.path} is incomplete ({done} of {total} prompts); "
                "finish it with `clear-sae cache ... --resume`"
            )

    def close(self) -> None:
        """Close the underlying HDF5 file."""
        self.file.close()

    def __enter__(self) -> "ActivationCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_hook_point(self, hook: str) -> None:
        """Raise a one-line error if `hook` is not in the cache."""
        if hook not in self.hook_points:
            raise ClearSaeError(f"layer {hook!r} is not in cache {self.path}; it holds {', '.join(self.hook_points)}")

    def n_rows(self, hook: str) -> int:
        """Number of stored tokens at `hook`."""
        self.check_hook_point(hook)
        return int(_dataset(self.file, hook, "acts").shape[0])

    def prompts(self) -> list[str]:
        """The cached prompts, in order."""
        return [p.decode("utf-8") if isinstance(p, bytes) else p for p in _dataset(self.file, "prompts")[:]]

    def rows(self, hook: str, start: int = 0, stop: int | None = None) -> "np.ndarray":
        """A contiguous block of rows at `hook`, as float32."""
        self.check_hook_point(hook)
        return self._float32(_dataset(self.file, hook, "acts")[start:stop]).numpy()

    def n_padding_rows(self, hook: str) -> int:
        """How many padding rows `padding_rows` gives at `hook`."""
        self.check_hook_point(hook)
        group = cast("h5py.Group", self.file[hook])
        return _dataset(group, PADDING, "acts").shape[0] if PADDING in group else 0

    def padding_rows(self, hook: str) -> tuple["np.ndarray", "np.ndarray"]:
        """The padding rows at `hook` that the pipeline's transformer reads, as float32, with each row's prompt
        index; empty where the pipeline reads no padding (or the cache predates padding rows)."""
        self.check_hook_point(hook)
        group = cast("h5py.Group", self.file[hook])
        if PADDING not in group:
            return np.zeros((0, self.widths[hook]), np.float32), np.zeros(0, np.int32)
        acts = self._float32(_dataset(group, PADDING, "acts")[:]).numpy()
        return acts, _dataset(group, PADDING, "prompt_index")[:]

    def _float32(self, block: "np.ndarray") -> "torch.Tensor":
        """Stored rows as a float32 tensor (a bfloat16 cache's uint16 rows are read as the bits they are)."""
        import torch

        if self.dtype == "bfloat16":
            return torch.from_numpy(block.view(np.int16)).view(torch.bfloat16).float()
        return torch.from_numpy(block).float()

    def iter_minibatches(
        self, hook: str, batch_size: int, n_tokens: int, seed: int = 0, buffer_rows: int = 65536
    ) -> Iterator["torch.Tensor"]:
        """Yield float32 `[batch_size, d]` minibatches until `n_tokens` rows have been served.

        Reads whole HDF5 chunks in a random order into a shuffle buffer of about `buffer_rows` rows, so
        memory stays bounded whatever the file size; passes over the data again as often as needed.
        """

        dataset = _dataset(self.file, hook, "acts")
        total = dataset.shape[0]
        if total == 0:
            raise ClearSaeError(f"cache {self.path} holds no tokens at {hook}")
        chunk = dataset.chunks[0] if dataset.chunks else 4096
        starts = np.arange(0, total, chunk)
        chunks_per_fill = max(1, buffer_rows // chunk)
        rng = np.random.default_rng(seed)
        served, carry = 0, np.empty((0, dataset.shape[1]), dtype=dataset.dtype)
        while served < n_tokens:
            order = rng.permutation(starts)
            for i in range(0, len(order), chunks_per_fill):
                buffer = np.concatenate(
                    [carry] + [dataset[s : s + chunk] for s in np.sort(order[i : i + chunks_per_fill])]
                )
                # The buffer stays in the stored dtype and is shuffled by index: each batch is gathered once and
                # converted to float32 by torch, which costs the trainer's CPU far less than shuffling floats.
                shuffled = rng.permutation(len(buffer))
                n_full = len(buffer) // batch_size
                for b in range(n_full):
                    if served >= n_tokens:
                        return
                    yield self._float32(buffer[shuffled[b * batch_size : (b + 1) * batch_size]])
                    served += batch_size
                carry = buffer[shuffled[n_full * batch_size :]]

    def sample(self, hook: str, n: int, seed: int = 0) -> "np.ndarray":
        """Up to `n` rows at `hook` drawn evenly across the file (for statistics such as the mean norm)."""

        total = self.n_rows(hook)
        index = np.unique(np.linspace(0, total - 1, num=min(n, total)).astype(np.int64))
        return self._float32(_dataset(self.file, hook, "acts")[index]).numpy()
