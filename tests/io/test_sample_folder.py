"""Sample folders: the manifest `matinvent sample` writes, and folders that mix runs are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from matinvent.cli import main
from matinvent.crystal.record import Crystal
from matinvent.io.sample_folder import MANIFEST, SampleFolderError, read_sample_folder, write_samples


def crystals(a: float) -> list[Crystal | None]:
    nacl = Crystal(Z=np.array([11, 17]), F=np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), L=np.eye(3) * a)
    return [nacl, None, nacl]


def test_manifest_lists_the_files_and_failed_samples(tmp_path):
    write_samples(crystals(3.0), tmp_path / "s", {"seed": 4, "checkpoint": "ckpt"})
    m = json.loads((tmp_path / "s" / MANIFEST).read_text())
    assert m["kind"] == "matinvent-samples" and len(m["run_id"]) == 12
    assert (m["seed"], m["checkpoint"], m["n"], m["n_written"], m["failed"]) == (4, "ckpt", 3, 2, [1])
    assert sorted(m["files"]) == ["000000.cif", "000002.cif"]
    folder = read_sample_folder(tmp_path / "s")
    assert folder.ids == ["000000", "000002", "000001"] and folder.crystals[2] is None
    assert folder.errors == {2: "degenerate sample (no CIF written)"}


def test_sampling_refuses_a_used_folder_unless_overwrite(tmp_path):
    out = tmp_path / "s"
    write_samples(crystals(3.0), out)
    run_id = json.loads((out / MANIFEST).read_text())["run_id"]
    with pytest.raises(SampleFolderError, match=f"{out} already holds samples .*--overwrite"):
        write_samples(crystals(3.1), out)
    write_samples([crystals(3.1)[0]], out, overwrite=True)
    assert sorted(p.name for p in out.glob("*.cif")) == ["000000.cif"]  # 000002.cif of the old run is gone
    assert json.loads((out / MANIFEST).read_text())["run_id"] != run_id
    assert read_sample_folder(out).crystals[0].L[0, 0] == pytest.approx(3.1)


def test_a_stray_or_changed_cif_is_refused(tmp_path):
    out = tmp_path / "s"
    write_samples(crystals(3.0), out)
    (out / "other_run_000005.cif").write_text((out / "000000.cif").read_text())
    with pytest.raises(SampleFolderError, match="not in the manifest: other_run_000005.cif"):
        read_sample_folder(out)
    (out / "other_run_000005.cif").unlink()
    write_samples(crystals(3.2), tmp_path / "b")
    (out / "000002.cif").write_text((tmp_path / "b" / "000002.cif").read_text())  # same name, other run
    with pytest.raises(SampleFolderError, match="changed since written: 000002.cif"):
        read_sample_folder(out)
    (out / "000000.cif").unlink()
    with pytest.raises(SampleFolderError, match="missing: 000000.cif"):
        read_sample_folder(out)


def test_several_manifests_are_refused_and_plain_folders_accepted(tmp_path):
    out = tmp_path / "s"
    write_samples(crystals(3.0), out)
    (out / "samples_run2.json").write_text((out / MANIFEST).read_text())
    with pytest.raises(SampleFolderError, match="2 sample manifests"):
        read_sample_folder(out)
    plain = tmp_path / "plain"
    plain.mkdir()
    crystals(3.0)[0].write_cif(plain / "mine.cif")
    (plain / "notes.json").write_text('{"kind": "my own"}')
    folder = read_sample_folder(plain)
    assert folder.ids == ["mine"] and folder.manifest is None


def test_evaluate_cli_refuses_mixed_folders_with_exit_2(tmp_path, capsys):
    out = tmp_path / "s"
    write_samples(crystals(3.0), out)
    (out / "stray.cif").write_text((out / "000000.cif").read_text())
    assert main(["evaluate", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "stray.cif" in err
    assert not (out / "evaluation.json").exists()
