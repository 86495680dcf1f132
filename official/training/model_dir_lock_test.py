"""The model_dir lock (issue 13, fault 4): a live holder refuses a second run, a crashed
holder's lock is taken over (dead pid on this host; no heartbeat from another host)."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from official.training import model_dir_lock


def _dead_pid():
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


def test_live_holder_refuses_a_second_run_and_release_frees_it(tmp_path):
  with model_dir_lock.ModelDirLock(str(tmp_path), mode="train_and_eval"):
    holder = json.loads((tmp_path / "train.lock").read_text())
    assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
    with pytest.raises(model_dir_lock.ModelDirLockedError,
                       match=rf"model_dir {tmp_path} is in use by another run: pid "
                             rf"{os.getpid()} on {socket.gethostname()} \(mode "
                             r"train_and_eval"):
      model_dir_lock.ModelDirLock(str(tmp_path)).acquire()
  assert not (tmp_path / "train.lock").exists()
  with model_dir_lock.ModelDirLock(str(tmp_path)):
    pass


def test_dead_pid_on_this_host_is_stale_and_taken_over(tmp_path):
  (tmp_path / "train.lock").write_text(json.dumps(
      {"pid": _dead_pid(), "host": socket.gethostname()}))
  with model_dir_lock.ModelDirLock(str(tmp_path)):
    assert json.loads((tmp_path / "train.lock").read_text())["pid"] == os.getpid()


def test_other_host_is_stale_only_after_its_heartbeat_stops(tmp_path):
  lock_file = tmp_path / "train.lock"
  lock_file.write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
  with pytest.raises(model_dir_lock.ModelDirLockedError, match="pid 1 on elsewhere"):
    model_dir_lock.ModelDirLock(str(tmp_path), stale_after=60).acquire()
  old = time.time() - 120
  os.utime(lock_file, (old, old))
  with model_dir_lock.ModelDirLock(str(tmp_path), stale_after=60):
    assert json.loads(lock_file.read_text())["host"] == socket.gethostname()


def test_unreadable_lock_is_live_while_fresh(tmp_path):
  lock_file = tmp_path / "train.lock"
  lock_file.write_text('{"pid": ')  # A holder that crashed while writing it, or is writing.
  with pytest.raises(model_dir_lock.ModelDirLockedError, match="unknown run"):
    model_dir_lock.ModelDirLock(str(tmp_path), stale_after=60).acquire()
  old = time.time() - 120
  os.utime(lock_file, (old, old))
  with model_dir_lock.ModelDirLock(str(tmp_path), stale_after=60):
    pass


def test_heartbeat_keeps_the_lock_fresh(tmp_path):
  with model_dir_lock.ModelDirLock(str(tmp_path), heartbeat=0.05):
    old = time.time() - 1000
    os.utime(tmp_path / "train.lock", (old, old))
    deadline = time.time() + 5
    while os.stat(tmp_path / "train.lock").st_mtime < old + 500 and time.time() < deadline:
      time.sleep(0.05)
    assert time.time() - os.stat(tmp_path / "train.lock").st_mtime < 5
