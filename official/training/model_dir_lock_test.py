"""The model_dir lock (issue 13, fault 4): a live holder refuses a second run, a crashed
holder's lock is taken over (dead pid on this host; no heartbeat from another host)."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from official.training import model_dir_lock


def _dead_pid():
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


_DEAD_PID = _dead_pid()


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


def test_stale_lock_is_taken_over_by_exactly_one_of_many_runs(tmp_path):
  # Before: every run that found the stale lock removed "it" and created its own; a later
  # remover deleted the first taker's fresh lock, so two runs held the lock at once
  # (/tmp/break13/lockrace.py: 4 of 20 trials with 2 processes).
  threads = 6
  for trial in range(40):
    model_dir = str(tmp_path / str(trial))
    os.makedirs(model_dir)
    with open(os.path.join(model_dir, model_dir_lock.LOCK_FILE), "w") as f:
      json.dump({"pid": _DEAD_PID, "host": socket.gethostname()}, f)
    start, attempted = threading.Barrier(threads), threading.Barrier(threads)
    holders = []

    def run(start=start, attempted=attempted, holders=holders, model_dir=model_dir):
      lock = model_dir_lock.ModelDirLock(model_dir)
      start.wait()
      try:
        lock.acquire()
        holders.append(lock)
      except model_dir_lock.ModelDirLockedError:
        pass
      attempted.wait()  # Nobody releases before everyone has tried.

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
      worker.start()
    for worker in workers:
      worker.join()
    assert len(holders) == 1, f"trial {trial}: {len(holders)} runs hold the lock"
    holders[0].release()


def test_live_pid_of_another_process_without_heartbeat_is_stale(tmp_path):
  # Before: refused forever ("in use by another run: pid ..."), as long as any process had
  # that pid: after a reboot the pid of a crashed run is often some other process's.
  lock_file = tmp_path / "train.lock"
  lock_file.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
  with pytest.raises(model_dir_lock.ModelDirLockedError, match=f"pid {os.getppid()}"):
    model_dir_lock.ModelDirLock(str(tmp_path), stale_after=60).acquire()
  old = time.time() - 120
  os.utime(lock_file, (old, old))
  with model_dir_lock.ModelDirLock(str(tmp_path), stale_after=60):
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()


def test_empty_lock_is_stale_after_a_short_grace(tmp_path):
  # Before: an empty lock (its holder killed between creating and writing it) blocked every
  # run for the full 600 s stale age.
  lock_file = tmp_path / "train.lock"
  lock_file.write_text("")
  with pytest.raises(model_dir_lock.ModelDirLockedError, match="unknown run"):
    model_dir_lock.ModelDirLock(str(tmp_path)).acquire()
  old = time.time() - 2 * model_dir_lock.UNREADABLE_GRACE_SECONDS
  os.utime(lock_file, (old, old))
  with model_dir_lock.ModelDirLock(str(tmp_path)):
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()


def test_a_lock_naming_this_process_that_it_does_not_hold_is_stale(tmp_path):
  # Before: a container restarted with the same hostname usually gets the same pid again
  # (e.g. 1 or 7), so the dead run's lock named a running pid, this one: every restart was
  # refused "in use by another run: pid <its own pid>" until 600 s without a heartbeat.
  (tmp_path / "train.lock").write_text(json.dumps(
      {"pid": os.getpid(), "host": socket.gethostname(), "mode": "train"}))
  with model_dir_lock.ModelDirLock(str(tmp_path)):
    assert json.loads((tmp_path / "train.lock").read_text())["pid"] == os.getpid()
    # A lock this process holds is still live for a second lock object of this process.
    with pytest.raises(model_dir_lock.ModelDirLockedError, match="in use by another run"):
      model_dir_lock.ModelDirLock(str(tmp_path)).acquire()


def test_a_damaged_lock_of_a_live_holder_is_repaired_before_another_run_may_take_it(
    tmp_path):
  # Before: the holder only touched the lock's modification time (every 60 s) and an
  # unreadable lock is stale after 10 s, so a lock damaged from outside while its run was
  # alive was taken over, and two trainers ran on one model_dir.
  lock_file = tmp_path / "train.lock"
  with model_dir_lock.ModelDirLock(str(tmp_path), heartbeat=0.05):
    record = json.loads(lock_file.read_text())
    lock_file.write_text("{garbage")
    time.sleep(0.5)
    assert json.loads(lock_file.read_text()) == record
    with pytest.raises(model_dir_lock.ModelDirLockedError, match="in use by another run"):
      model_dir_lock.ModelDirLock(str(tmp_path), unreadable_grace=0.1).acquire()
  assert not lock_file.exists()


def test_a_lock_taken_while_another_lock_of_this_process_releases_stays_live(
    tmp_path, monkeypatch):
  # Before (a regression of the own-pid check): lock B took the lock between lock A's
  # removal of the file and A's unlisting of the path, so the path was unlisted while B held
  # it, and a third lock C of this process took B's live lock over as stale.
  a, b, c = (model_dir_lock.ModelDirLock(str(tmp_path), heartbeat=3600) for _ in range(3))
  a.acquire()
  real_remove = os.remove

  def remove_then_b_acquires(path):
    real_remove(path)
    monkeypatch.setattr(os, "remove", real_remove)
    b.acquire()  # Another thread, scheduled right after the removal.
  monkeypatch.setattr(os, "remove", remove_then_b_acquires)
  a.release()
  with pytest.raises(model_dir_lock.ModelDirLockedError, match="in use by another run"):
    c.acquire()
  b.release()
  assert not (tmp_path / "train.lock").exists()


def test_threads_taking_and_releasing_the_lock_never_hold_it_together(tmp_path):
  holders, overlaps, errors = [0], [], []
  guard = threading.Lock()

  def work():
    for _ in range(150):
      lock = model_dir_lock.ModelDirLock(str(tmp_path), heartbeat=3600)
      try:
        lock.acquire()
      except model_dir_lock.ModelDirLockedError:
        continue
      except Exception as e:  # pylint: disable=broad-except
        errors.append(repr(e))
        continue
      with guard:
        holders[0] += 1
        if holders[0] > 1:
          overlaps.append(holders[0])
      time.sleep(0.0005)
      with guard:
        holders[0] -= 1
      try:
        lock.release()
      except Exception as e:  # pylint: disable=broad-except
        errors.append(repr(e))

  workers = [threading.Thread(target=work) for _ in range(6)]
  for worker in workers:
    worker.start()
  for worker in workers:
    worker.join()
  assert not errors and not overlaps, (errors[:3], len(overlaps))
