"""Which files a run takes, where their outputs go, and how shards split them."""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePath

import pytest

from dbsi.runtime.pipeline import Job, plan_jobs, remove_stale_partials
from dbsi.runtime.sources import (
    Source,
    collect_sources,
    missing_inputs,
    parse_shard,
    resolve_shard,
    select_shard,
    shard_of,
)


def _tree(root: Path, names: list[str]) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def _relatives(sources) -> list[str]:
    return [s.relative.as_posix() for s in sources]


def test_folder_is_searched_recursively_for_image_names_only(tmp_path):
    _tree(tmp_path, ["a.jpg", "b.PNG", "sub/c.tiff", "sub/deeper/d.webp", "e.bmp", "notes.txt"])
    _tree(tmp_path, [".hidden.jpg", ".cache/f.jpg", "g.jpeg", "h.tif"])
    sources, problems = collect_sources([str(tmp_path)])
    assert problems == []
    assert sorted(_relatives(sources)) == sorted(
        ["a.jpg", "b.PNG", "e.bmp", "g.jpeg", "h.tif", "sub/c.tiff", "sub/deeper/d.webp"]
    )


def test_glob_keeps_the_tree_below_its_fixed_part(tmp_path):
    _tree(tmp_path, ["x/a.jpg", "x/y/b.jpg", "x/y/c.png"])
    sources, _ = collect_sources([str(tmp_path / "x" / "**" / "*.jpg")])
    assert sorted(_relatives(sources)) == ["a.jpg", "y/b.jpg"]


def test_list_file_entries_are_found_from_the_list_and_keep_their_folders(tmp_path):
    _tree(tmp_path, ["pics/a.jpg", "pics/sub/b.png"])
    listing = tmp_path / "list.txt"
    listing.write_text("# my picks\npics/a.jpg\n\npics/sub\n", encoding="utf-8")
    by_at, _ = collect_sources([f"@{listing}"])
    by_option, _ = collect_sources([], list_files=[listing])
    assert _relatives(by_at) == _relatives(by_option) == ["pics/a.jpg", "b.png"]
    assert by_at[0].path == tmp_path / "pics/a.jpg"


def test_missing_paths_and_empty_patterns_are_problems_not_crashes(tmp_path):
    sources, problems = collect_sources(
        [str(tmp_path / "absent.jpg"), str(tmp_path / "*.png"), f"@{tmp_path / 'no.txt'}"]
    )
    assert sources == []
    reasons = " | ".join(p.reason for p in problems)
    assert "no such file" in reasons and "matches no image" in reasons
    assert "cannot read the list" in reasons


def test_same_file_given_twice_is_rendered_once(tmp_path):
    _tree(tmp_path, ["a.jpg"])
    sources, _ = collect_sources([str(tmp_path), str(tmp_path / "a.jpg")])
    assert len(sources) == 1


def test_output_folder_inside_the_input_folder_is_not_read_back(tmp_path):
    _tree(tmp_path, ["a.jpg", "out/a.jpg"])
    sources, _ = collect_sources([str(tmp_path)], out_dir=tmp_path / "out")
    assert _relatives(sources) == ["a.jpg"]


def test_shards_cover_every_file_exactly_once():
    sources_count = 500
    sources = [
        Source(Path(f"/d/{i}.jpg"), PurePath(f"{i % 7}/{i}.jpg")) for i in range(sources_count)
    ]
    for count in (1, 3, 8):
        shards = [select_shard(sources, i, count) for i in range(count)]
        union = [s.relative for shard in shards for s in shard]
        assert sorted(union) == sorted(s.relative for s in sources)
        assert len(set(union)) == sources_count
        assert all(shards), "every shard gets a share of 500 files"


def test_shard_assignment_does_not_depend_on_listing_order():
    assert shard_of(PurePath("a/b.jpg"), 5) == shard_of(PurePath("a/b.jpg"), 5)
    assert shard_of(PurePath("a/b.jpg"), 1) == 0


@pytest.mark.parametrize("text", ["3/3", "-1/2", "1", "a/b", "0/0"])
def test_bad_shard_specs_are_refused(text):
    with pytest.raises(ValueError, match="shard"):
        parse_shard(text)


def test_outputs_mirror_the_tree_and_take_the_chosen_format(tmp_path):
    _tree(tmp_path / "in", ["a.jpg", "sub/b.png"])
    sources, _ = collect_sources([str(tmp_path / "in")])
    jobs, problems = plan_jobs(sources, tmp_path / "out", "webp", save_weights=True)
    assert problems == []
    assert [j.output for j in jobs] == [tmp_path / "out/a.webp", tmp_path / "out/sub/b.webp"]
    assert jobs[0].weights_output == tmp_path / "out/a.weights.png"


def test_an_input_is_never_an_output(tmp_path):
    _tree(tmp_path, ["a.jpg", "b.png"])
    sources, _ = collect_sources([str(tmp_path)])
    jobs, problems = plan_jobs(sources, tmp_path, None, save_weights=False)
    assert jobs == []
    assert all("refusing to overwrite" in p.reason for p in problems) and len(problems) == 2


def test_two_inputs_with_one_output_name_are_not_both_written(tmp_path):
    _tree(tmp_path, ["a.jpg", "a.png"])
    sources, _ = collect_sources([str(tmp_path)])
    jobs, problems = plan_jobs(sources, tmp_path / "out", "png", save_weights=False)
    assert len(jobs) == 1 and len(problems) == 1
    assert "already the output of" in problems[0].reason


def test_stale_temporary_files_of_this_run_are_removed_and_others_kept(tmp_path):
    ours = Job(None, tmp_path / "a.png")  # type: ignore[arg-type]
    # The same naming as dbsi.runtime.atomic.atomic_path, as a killed run leaves it.
    _, stale = tempfile.mkstemp(prefix=".a.", suffix=".partial.png", dir=tmp_path)
    _, foreign = tempfile.mkstemp(prefix=".other.", suffix=".partial.png", dir=tmp_path)
    assert remove_stale_partials([ours]) == 1
    assert not Path(stale).exists() and Path(foreign).exists()


def test_inputs_that_do_not_exist_are_named_before_any_search(tmp_path):
    _tree(tmp_path, ["here.jpg", "folder/a.jpg"])
    (tmp_path / "list.txt").write_text("gone.jpg\n", encoding="utf-8")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "deleted.jpg")
    given = [
        str(tmp_path / "here.jpg"),
        str(tmp_path / "folder"),
        str(tmp_path / "absent.jpg"),
        str(tmp_path / "*.png"),  # a pattern: matching nothing is reported per item
        f"@{tmp_path / 'list.txt'}",  # exists; its entries are checked per item
        f"@{tmp_path / 'no-list.txt'}",
        str(tmp_path / "dangling.jpg"),  # present as a link: it fails as a picture
    ]
    missing = missing_inputs(given, [tmp_path / "list.txt", tmp_path / "other.txt"])
    assert missing == [
        str(tmp_path / "absent.jpg"),
        f"@{tmp_path / 'no-list.txt'}",
        str(tmp_path / "other.txt"),
    ]


SLURM_16 = {
    "SLURM_ARRAY_TASK_ID": "5",
    "SLURM_ARRAY_TASK_COUNT": "16",
    "SLURM_ARRAY_TASK_MIN": "0",
    "SLURM_ARRAY_TASK_MAX": "15",
}


def test_shard_auto_takes_id_and_count_of_a_slurm_array():
    assert resolve_shard("auto", SLURM_16)[:2] == (5, 16)


def test_shard_auto_counts_a_slurm_array_from_its_min_and_max_when_count_is_absent():
    environ = {"SLURM_ARRAY_TASK_ID": "7"}
    environ |= {"SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "16"}  # --array=1-16
    index, count, origin = resolve_shard("auto", environ)
    assert (index, count) == (6, 16)
    assert "SLURM_ARRAY_TASK_ID=7" in origin


def test_shard_auto_with_a_count_takes_a_kubernetes_completion_index():
    assert resolve_shard("auto/16", {"JOB_COMPLETION_INDEX": "3"})[:2] == (3, 16)


def test_shard_auto_without_a_count_in_kubernetes_asks_for_one():
    with pytest.raises(ValueError, match="Kubernetes.*auto/N"):
        resolve_shard("auto", {"JOB_COMPLETION_INDEX": "3"})


def test_shard_auto_outside_slurm_and_kubernetes_is_refused():
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_ID.*JOB_COMPLETION_INDEX.*i/n"):
        resolve_shard("auto", {"SLURM_JOB_ID": "42", "HOME": "/home/me"})


def test_shard_auto_refuses_a_slurm_array_whose_ids_skip_numbers():
    environ = {**SLURM_16, "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MAX": "14"}  # 0-14:2
    with pytest.raises(ValueError, match="not one contiguous range"):
        resolve_shard("auto", environ)


def test_shard_auto_with_a_count_takes_the_slurm_task_id_as_it_is():
    rerun = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "2"}  # sbatch --array=3,7
    rerun |= {"SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_MAX": "7"}
    assert resolve_shard("auto/16", rerun)[:2] == (7, 16)


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("auto", {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"}, "not an integer"),
        ("auto/0", {"JOB_COMPLETION_INDEX": "0"}, "N must be"),
        ("auto/4", {"JOB_COMPLETION_INDEX": "4"}, "need 0 <= i < n"),
        ("auto", {"SLURM_ARRAY_TASK_ID": "3"}, "neither SLURM_ARRAY_TASK_COUNT"),
    ],
)
def test_shard_auto_with_unusable_environment_values_is_refused(text, environ, message):
    with pytest.raises(ValueError, match=message):
        resolve_shard(text, environ)


def test_explicit_and_absent_shards_do_not_read_the_environment():
    assert resolve_shard("2/4", SLURM_16) == (2, 4, "")
    assert resolve_shard(None, SLURM_16) == (0, 1, "")
