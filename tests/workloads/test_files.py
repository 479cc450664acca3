"""workloads.files.staged_folder: a set of outputs appears whole or not at all."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from workloads import files
from workloads.errors import ArchsimError
from workloads.files import staged_folder


def _write_set(folder: Path, text: str) -> None:
    (folder / "sub").mkdir()
    (folder / "sub" / "a.txt").write_text(text)
    (folder / "done.txt").write_text(text)


def test_a_finished_set_replaces_its_files_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    with staged_folder(out, last="done.txt") as staging:
        _write_set(staging, "one")
    (out / "mine.txt").write_text("mine")
    with staged_folder(out, last="done.txt") as staging:
        _write_set(staging, "two")
    assert {p.name: p.read_text() for p in out.rglob("*.txt")} == {
        "a.txt": "two", "done.txt": "two", "mine.txt": "mine"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_sigterm_is_an_interrupt_that_leaves_out_as_it_was(tmp_path):
    """SIGTERM's default action ended the process with the outputs half written."""
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt, match=f"terminated \\(SIGTERM\\); nothing written to "
                                                f"{out}$"):
        with staged_folder(out, last="done.txt") as staging:
            (staging / "a.txt").write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_ctrl_c_while_moving_waits_until_the_set_is_complete(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    replace, moved = os.replace, []

    def replace_with_ctrl_c(source, target):
        os.kill(os.getpid(), signal.SIGINT)  # held back until every file is in place
        replace(source, target)
        moved.append(Path(target).name)

    monkeypatch.setattr(files.os, "replace", replace_with_ctrl_c)
    with pytest.raises(KeyboardInterrupt, match=f"^{out} was complete and is kept$"):
        with staged_folder(out, last="done.txt") as staging:
            _write_set(staging, "new")
    assert moved == ["a.txt", "done.txt"]  # the file that says "done" last
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.txt")) == ["done.txt",
                                                                          "sub/a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_stale_files_go_as_the_new_set_moves_in_and_stay_if_it_does_not(tmp_path):
    """A synthesis report describes the Verilog it came from: it goes when that is replaced,
    never earlier (an interrupted build keeps both)."""
    out = tmp_path / "out"
    with staged_folder(out, last="done.txt") as staging:
        _write_set(staging, "one")
    (out / "report.json").write_text("of one")
    with pytest.raises(KeyboardInterrupt), staged_folder(out, last="done.txt",
                                                         stale=["report.json"]) as staging:
        _write_set(staging, "two")
        raise KeyboardInterrupt
    assert (out / "report.json").read_text() == "of one"
    with staged_folder(out, last="done.txt", stale=["report.json"]) as staging:
        _write_set(staging, "two")
    assert sorted(p.name for p in out.iterdir()) == ["done.txt", "sub"]


def test_a_parent_that_refuses_the_staging_folder_is_one_line(tmp_path, monkeypatch):
    """A writable --out inside a read-only folder passes the --out check; staging beside it
    then failed with an OSError's traceback."""
    def refuse(**kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkdtemp", refuse)
    out = tmp_path / "out"
    with pytest.raises(ArchsimError, match=f"^{out}: cannot write beside it in {tmp_path}, where "
                                           f"the outputs are staged to be moved in whole: "
                                           f"Permission denied$"):
        with staged_folder(out, last="done.txt"):
            pass


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_a_dangling_link_at_the_out_file_is_refused_without_force(tmp_path):
    """Path.exists() follows a link: a dangling one at --out counted as nothing there, and the
    command's atomic write replaced the user's link with a file without --force."""
    from workloads.outputs import check_out_file, refuse_earlier_outputs

    link = tmp_path / "w.yaml"
    link.symlink_to(tmp_path / "moved" / "w.yaml")
    with pytest.raises(ArchsimError, match=r"already holds .* \(w\.yaml\); pass --force"):
        check_out_file(link, force=False, example="model.yaml")
    assert check_out_file(link, force=True, example="model.yaml") == link
    with pytest.raises(ArchsimError, match="pass --force"):
        refuse_earlier_outputs(tmp_path, ("w.yaml",), force=False)
