"""What to render and where each result goes.

Inputs are files, folders (searched recursively), glob patterns (``**`` recurses) and list
files (``@list.txt`` or ``--list list.txt``, one path a line, relative to the list's folder).
Each input keeps the path below its root, and the output mirrors it under ``--out``:
``photos/a/b.jpg`` given as the folder ``photos`` becomes ``OUT/a/b.jpg``; a file given on the
command line lands directly in ``OUT``; a relative path in a list file keeps its folders.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePath

from dbsi.runtime.images import IMAGE_EXTENSIONS
from dbsi.runtime.video import VIDEO_EXTENSIONS, is_video_name

GLOB_CHARS = re.compile(r"[*?\[]")


@dataclasses.dataclass(frozen=True)
class Source:
    """One input picture or video: where it is, and its path relative to the root it was found
    under."""

    path: Path
    relative: PurePath


@dataclasses.dataclass(frozen=True)
class Problem:
    """An input that cannot be rendered, with the reason (reported, never dropped silently)."""

    path: str
    reason: str


def is_image_name(path: str | PurePath) -> bool:
    return PurePath(path).suffix.lower() in IMAGE_EXTENSIONS


def is_input_name(path: str | PurePath) -> bool:
    """A name ``bokeh-run`` renders: a picture's or a video's."""
    return is_image_name(path) or is_video_name(path)


def _walk(root: Path, exclude: Path | None) -> Iterator[Path]:
    """Picture and video files below ``root``, skipping ``exclude`` (the output folder) and
    hidden files (an interrupted write's temporary ``.name.xxx.partial.jpg`` among them)."""
    for folder, dirs, files in os.walk(root, followlinks=True):
        folder_path = Path(folder)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and (exclude is None or (folder_path / d).resolve() != exclude)
        )
        for name in sorted(files):
            if not name.startswith(".") and is_input_name(name):
                yield folder_path / name


def _glob_root(pattern: str) -> Path:
    """The folder part of a glob pattern before its first wildcard."""
    parts = PurePath(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if GLOB_CHARS.search(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _read_list(list_file: Path) -> tuple[list[str], list[Problem]]:
    try:
        text = list_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [Problem(str(list_file), f"cannot read the list file ({exc})")]
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append(line)
    return entries, []


def _file_relative(spec: str, listed: bool) -> PurePath:
    """Where a file named directly lands under --out: a list file's relative entry keeps its
    path (``a/b.jpg`` -> ``OUT/a/b.jpg``); anything else keeps only its name."""
    written = PurePath(spec)
    if listed and not written.is_absolute() and ".." not in written.parts:
        return written
    return PurePath(written.name)


def _expand(
    spec: str, base: Path, exclude: Path | None, listed: bool
) -> tuple[list[Source], list[Problem]]:
    """Sources for one input spec (file, folder or glob), relative to ``base`` if not absolute;
    ``listed`` when the spec came from a list file."""
    path = Path(spec) if Path(spec).is_absolute() else base / spec
    if GLOB_CHARS.search(spec) and not path.exists():
        root = _glob_root(str(path))
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        sources = []
        for p in found:
            if p.is_dir():
                sources += [Source(f, f.relative_to(root)) for f in _walk(p, exclude)]
            elif is_input_name(p) and not p.name.startswith("."):
                sources.append(Source(p, p.relative_to(root)))
        if not sources:
            return [], [Problem(spec, "the pattern matches no image or video")]
        return sources, []
    if path.is_dir():
        return [Source(f, f.relative_to(path)) for f in _walk(path, exclude)], []
    if not path.exists() and not path.is_symlink():
        return [], [Problem(str(path), "no such file or folder")]
    if not is_input_name(path):
        expected = ", ".join((*IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS))
        return [], [Problem(str(path), f"not an image or video name (expected {expected})")]
    return [Source(path, _file_relative(spec, listed))], []


def collect_sources(
    inputs: Sequence[str], list_files: Iterable[str | Path] = (), out_dir: str | Path | None = None
) -> tuple[list[Source], list[Problem]]:
    """Every input picture and video, once, in a stable order; problems (missing paths, empty
    patterns, unreadable lists) are returned, not raised. ``@FILE`` in ``inputs`` is a list file."""
    exclude = Path(out_dir).resolve() if out_dir is not None else None
    specs: list[tuple[str, Path, bool]] = []
    problems: list[Problem] = []
    lists = [Path(f) for f in list_files] + [Path(s[1:]) for s in inputs if s.startswith("@")]
    specs += [(s, Path("."), False) for s in inputs if not s.startswith("@")]
    for list_file in lists:
        entries, list_problems = _read_list(list_file)
        problems += list_problems
        specs += [(entry, list_file.parent, True) for entry in entries]
    sources: list[Source] = []
    seen: set[Path] = set()
    for spec, base, listed in specs:
        found, spec_problems = _expand(spec, base, exclude, listed)
        problems += spec_problems
        for source in found:
            key = source.path.resolve()
            if key not in seen:
                seen.add(key)
                sources.append(source)
    return sources, problems


def missing_inputs(inputs: Sequence[str], list_files: Iterable[str | Path] = ()) -> list[str]:
    """The inputs named on the command line that do not exist: files and folders (a dangling
    symlink counts as present: it fails as a picture), list files given as ``@FILE`` or
    ``--list``. Glob patterns and the entries inside list files are not checked here (a
    pattern that matches nothing, or a listed path that is gone, is reported per item)."""
    missing = []
    for spec in inputs:
        if spec.startswith("@"):
            path = Path(spec[1:])
        elif GLOB_CHARS.search(spec) and not Path(spec).exists():
            continue
        else:
            path = Path(spec)
        if not path.exists() and not path.is_symlink():
            missing.append(spec)
    missing += [str(f) for f in list_files if not Path(f).exists()]
    return missing


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"shard {text!r} is not of the form i/n (e.g. 0/4)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {text!r}: need 0 <= i < n")
    return index, count


SLURM_ID, SLURM_COUNT = "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"
SLURM_MIN, SLURM_MAX = "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX"
K8S_INDEX = "JOB_COMPLETION_INDEX"


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None


def _auto_shard(count_text: str | None, environ: Mapping[str, str]) -> tuple[int, int, str]:
    """``--shard auto`` or ``auto/N`` from a Slurm array job's or a Kubernetes Indexed Job's
    environment: (index, count, where they came from)."""
    given = None
    if count_text is not None:
        if not re.fullmatch(r"\d+", count_text) or int(count_text) < 1:
            raise ValueError(f"shard 'auto/{count_text}': N must be a whole number >= 1")
        given = int(count_text)
    task_id = _env_int(environ, SLURM_ID)
    if task_id is not None:
        if given is not None:
            index, count, origin = task_id, given, f"{SLURM_ID}={task_id}"
        else:
            low, high = _env_int(environ, SLURM_MIN), _env_int(environ, SLURM_MAX)
            count = _env_int(environ, SLURM_COUNT)
            span = high - low + 1 if low is not None and high is not None else None
            if count is None and span is None:
                raise ValueError(
                    f"shard 'auto': {SLURM_ID} is set but neither {SLURM_COUNT} nor "
                    f"{SLURM_MIN}/{SLURM_MAX}; give --shard auto/N"
                )
            if count is not None and span is not None and span != count:
                raise ValueError(
                    f"shard 'auto': the Slurm array is not one contiguous range (ids "
                    f"{low}..{high}, {count} tasks), so the task ids do not number the "
                    "shards; give --shard auto/N, N the full array's size (ids 0..N-1)"
                )
            index, count = task_id - (low or 0), count if count is not None else span
            origin = f"{SLURM_ID}={task_id}" + (f", {SLURM_MIN}={low}" if low else "")
    else:
        k8s_index = _env_int(environ, K8S_INDEX)
        if k8s_index is None:
            raise ValueError(
                f"shard 'auto' needs a Slurm array job ({SLURM_ID}) or a Kubernetes Indexed "
                f"Job ({K8S_INDEX}); neither is set here: give --shard i/n"
            )
        if given is None:
            raise ValueError(
                f"shard 'auto': Kubernetes sets {K8S_INDEX} but no count; give --shard "
                "auto/N, N the Job's completions"
            )
        index, count, origin = k8s_index, given, f"{K8S_INDEX}={k8s_index}"
    if not 0 <= index < count:
        raise ValueError(f"shard 'auto': {origin} gives shard {index}/{count}; need 0 <= i < n")
    return index, count, origin


def resolve_shard(
    text: str | None, environ: Mapping[str, str] | None = None
) -> tuple[int, int, str]:
    """``--shard``'s value -> (index, count, origin): None is (0, 1, ""); ``"i/n"`` is as
    written (origin ""); ``"auto"`` reads a Slurm array job (``SLURM_ARRAY_TASK_ID`` less
    ``SLURM_ARRAY_TASK_MIN``, count ``SLURM_ARRAY_TASK_COUNT`` or ``MAX - MIN + 1``) or a
    Kubernetes Indexed Job (``JOB_COMPLETION_INDEX``, which needs ``"auto/N"``: Kubernetes
    sets no count); ``"auto/N"`` takes the task id as it is and N shards. ValueError when
    the text or the environment does not give a valid shard."""
    if text is None:
        return 0, 1, ""
    match = re.fullmatch(r"\s*auto\s*(?:/\s*(\S*)\s*)?", text)
    if match is None:
        return (*parse_shard(text), "")
    return _auto_shard(match.group(1), os.environ if environ is None else environ)


def shard_of(relative: PurePath, count: int) -> int:
    """The shard that owns an image: a stable hash of its relative path (POSIX form), so every
    machine agrees whatever order it lists files in, and adding files moves no other file."""
    digest = hashlib.sha256(relative.as_posix().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def select_shard(sources: Sequence[Source], index: int, count: int) -> list[Source]:
    return [s for s in sources if shard_of(s.relative, count) == index]
