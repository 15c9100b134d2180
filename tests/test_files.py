import json
import os

import pytest
from helpers import SCHEMAS

from attnbench import SCHEMA_VERSION, files


def test_write_json_stamps_schema_and_replaces_nan(tmp_path):
    path = tmp_path / "sub" / "out.json"
    files.write_json(path, {"value": float("nan"), "inf": float("inf"), "ok": 1.5})
    data = json.loads(path.read_text())
    digest = data.pop(files.DIGEST)
    assert data == {"schema": SCHEMA_VERSION, "value": None, "inf": None, "ok": 1.5}
    assert digest == files.content_digest(data)


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    files.write_json(path, {"round": 1})

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        files.write_json(path, {"round": 2})
    assert json.loads(path.read_text())["round"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"], "temporary file left behind"


def test_invalid_document_is_not_written_and_error_names_field(tmp_path):
    path = tmp_path / "ceilings.json"
    with pytest.raises(files.ResultFileError, match="copy"):
        files.write_json(path, {"device": "cpu", "matmul": {}}, SCHEMAS / "ceilings.schema.yaml")
    assert not path.exists()


def test_read_json_names_file_and_field(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"schema": SCHEMA_VERSION, "device": "tpu", "matmul": {}, "copy": {}}))
    with pytest.raises(files.ResultFileError) as err:
        files.read_json(path, SCHEMAS / "ceilings.schema.yaml")
    assert str(path) in str(err.value)


def test_read_json_rejects_truncated_file(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('{"schema": 1, "dev')
    with pytest.raises(files.ResultFileError, match="cannot be read"):
        files.read_json(path)


def test_a_temporary_file_left_by_a_killed_writer_is_cleared_by_the_next_write(tmp_path):
    target = tmp_path / "bench" / "s1.json"
    target.parent.mkdir()
    stale = target.parent / ".s1.json.abc123.tmp"
    stale.write_text('{"sch')
    other = target.parent / ".s2.json.abc123.tmp"  # another target's writer may still be running
    other.write_text("{")
    files.write_json(target, {"value": 1})
    assert not stale.exists() and other.exists()
    assert json.loads(target.read_text())["value"] == 1
