"""One training job per model_dir: a lock file that outlives a crash of its holder.

Two training jobs on one model_dir would overwrite each other's checkpoints, config, `best/`
and metrics. The chief of a training job holds `MODEL_DIR/train.lock` (JSON: pid, host, mode,
start time) for its whole run; a daemon thread refreshes the file's modification time every
`HEARTBEAT_SECONDS`, and rewrites it if it was damaged from outside. A second job refuses to
start, naming the holder. A lock left behind by
a crash (kill -9, a lost machine) is stale, and taken over with a warning, when
  - its host is this host and its pid is no longer running, or is this process's own
    while this process does not hold it (a restarted container often gets the dead
    run's pid again), or
  - its heartbeat is older than `STALE_AFTER_SECONDS`: another host, which cannot be asked,
    or this host with a running pid that is not the holder's (pid reuse after a reboot), or
  - it is unreadable (a holder killed while writing it) and older than
    `UNREADABLE_GRACE_SECONDS`.

Evaluation-only modes do not take the lock: continuous evaluation runs beside training.
The lock uses the local file system's atomic create (`O_CREAT | O_EXCL`); a takeover (check,
remove, create) runs under an `flock` of model_dir itself, so that of several runs finding
the same stale lock exactly one takes it. On remote file systems (`gs://`) no lock is taken
and a warning says so.
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket
import threading
import time
import uuid

from absl import logging

LOCK_FILE = "train.lock"
# Shorter than UNREADABLE_GRACE_SECONDS: a live holder repairs a lock damaged from outside
# before another run may judge it stale.
HEARTBEAT_SECONDS = 5.0
STALE_AFTER_SECONDS = 600.0
# A holder writes its lock right after creating it: unreadable for longer, it was killed.
UNREADABLE_GRACE_SECONDS = 10.0
# {real path of a lock file: the `ModelDirLock` of this process that holds it}: a lock
# naming this process's pid that no lock here holds was left by an earlier process that
# had the same pid.
_HELD_HERE = {}


class ModelDirLockedError(RuntimeError):
  """Another run holds the model_dir's lock; the message names it and what to do."""


def _pid_running(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Running, as another user.
    return True
  return True


@contextlib.contextmanager
def directory_flock(directory):
  """Holds an exclusive `flock` of `directory` (local file systems; released by the system
  when the process dies, so a killed holder never blocks the next)."""
  fd = os.open(directory, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)  # Releases the flock.


class ModelDirLock:
  """The training lock of `model_dir`; use as a context manager.

  Args:
    model_dir: the training directory (created if missing).
    mode: recorded in the lock for the message a second run prints.
    stale_after: seconds without a heartbeat after which a lock is stale (another host's,
      or one whose pid runs but is not the holder's).
    heartbeat: seconds between refreshes of the lock's modification time.
    unreadable_grace: seconds after which an unreadable lock is stale.

  Raises (on entering):
    ModelDirLockedError: a live run holds the lock.
  """

  def __init__(self, model_dir, mode="train", stale_after=STALE_AFTER_SECONDS,
               heartbeat=HEARTBEAT_SECONDS, unreadable_grace=UNREADABLE_GRACE_SECONDS):
    self.model_dir = model_dir
    self.path = os.path.join(model_dir, LOCK_FILE)
    self.mode = mode
    self.stale_after = stale_after
    self.heartbeat = heartbeat
    self.unreadable_grace = unreadable_grace
    self._stop = threading.Event()
    self._thread = None
    self._held = False
    self._own_record = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *unused_exc):
    self.release()

  def _record(self):
    # `token` tells apart two locks of one process (threads) started in the same second.
    return {"pid": os.getpid(), "host": socket.gethostname(), "mode": self.mode,
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "token": uuid.uuid4().hex}

  def _read(self):
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return None  # Vanished, or cut short by a crash while it was written.

  def _age(self):
    try:
      return time.time() - os.stat(self.path).st_mtime
    except FileNotFoundError:
      return 0.0

  def stale_reason(self, holder):
    """Why the lock held by `holder` (its JSON, or None if unreadable) is stale, or None
    when it may be live."""
    age = self._age()
    if holder is None or not isinstance(holder.get("pid"), int):
      return (f"unreadable, {age:.0f} s old" if age > self.unreadable_grace else None)
    if holder.get("host") == socket.gethostname():
      if holder["pid"] == os.getpid() and _HELD_HERE.get(os.path.realpath(self.path)) is None:
        return (f"pid {holder['pid']} is this process, which does not hold it: an earlier "
                "run with the same pid left it (a restarted container)")
      if not _pid_running(holder["pid"]):
        return f"pid {holder['pid']} is no longer running on this host"
      if age > self.stale_after:
        # A live holder refreshes it every `heartbeat` seconds.
        return (f"pid {holder['pid']} runs but the lock has had no heartbeat for {age:.0f} "
                f"s (> {self.stale_after:.0f} s): that pid is another process now (pid "
                "reuse, after a reboot?)")
      return None
    if age > self.stale_after:
      return (f"no heartbeat from {holder.get('host')} for {age:.0f} s "
              f"(> {self.stale_after:.0f} s)")
    return None

  def acquire(self):
    """Takes the lock (taking over a stale one); see the class docstring."""
    if "://" in self.model_dir:
      logging.warning("model_dir %s is not on a local file system: no lock is taken, so "
                      "make sure no other training job uses it.", self.model_dir)
      return
    os.makedirs(self.model_dir, exist_ok=True)
    for _ in range(3):
      if self._create():
        break
      if not os.path.exists(self.path):
        continue  # Released meanwhile.
      self._check_stale()
      # Stale: check, remove and create again under the guard, so that of several runs
      # that found it stale only the first takes it over; the others then find its live
      # lock (another run's removal of a fresh lock, judged on the stale one, was a race).
      with directory_flock(self.model_dir):
        if not os.path.exists(self.path):
          continue
        holder, reason = self._check_stale()
        logging.warning("Taking over the stale lock %s of %s: %s.", self.path,
                        holder or "an unknown run", reason)
        os.remove(self.path)
        if self._create():
          break
    else:
      raise ModelDirLockedError(f"Could not take the lock {self.path}: other runs keep "
                                "taking it. Check what runs on this model_dir.")
    self._thread = threading.Thread(target=self._beat, name="model_dir_lock", daemon=True)
    self._thread.start()

  def _create(self):
    """Creates the lock file atomically; False when it exists."""
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    # Listed before the record names this pid: until then the file reads as unreadable.
    _HELD_HERE[os.path.realpath(self.path)] = self
    self._own_record = self._record()
    with os.fdopen(fd, "w") as f:
      json.dump(self._own_record, f)
    self._held = True
    return True

  def _check_stale(self):
    """(holder, why stale) of the existing lock.

    Raises:
      ModelDirLockedError: it may be live.
    """
    holder = self._read()
    reason = self.stale_reason(holder)
    if reason is None:
      raise ModelDirLockedError(self._locked_message(holder))
    return holder, reason

  def _locked_message(self, holder):
    if holder is None:
      who = "an unknown run (the lock is unreadable)"
    else:
      who = (f"pid {holder.get('pid')} on {holder.get('host')} (mode "
             f"{holder.get('mode')}, started {holder.get('started')})")
    return (f"model_dir {self.model_dir} is in use by another run: {who}; its lock "
            f"{self.path} was refreshed {self._age():.0f} s ago. Wait for that run to end "
            "or stop it, or use another --model_dir. A lock left by a crashed run is taken "
            "over by itself (on this host once its pid is gone; after "
            f"{self.stale_after:.0f} s without a heartbeat); delete it by hand only if you "
            "are sure that no run uses this model_dir.")

  def _beat(self):
    while not self._stop.wait(self.heartbeat):
      holder = self._read()
      if holder is None and os.path.exists(self.path):
        # Damaged from outside (cut or overwritten): rewritten at once, as an unreadable
        # lock is stale after `unreadable_grace` seconds.
        repaired = f"{self.path}.{os.getpid()}.repair"
        with open(repaired, "w") as f:
          json.dump(self._own_record, f)
        os.replace(repaired, self.path)
        logging.warning("The lock %s was unreadable while this run held it; rewritten.",
                        self.path)
      elif holder is not None and holder != self._own_record:
        logging.error("Another run took over the lock %s of this run: %s. Two runs now write "
                      "to %s; stop one of them.", self.path, holder, self.model_dir)
        return
      try:
        os.utime(self.path)
      except FileNotFoundError:
        logging.warning("The lock %s was deleted while this run held it.", self.path)
        return

  def release(self):
    """Stops the heartbeat and removes the lock if this process holds it."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self._held:
      if self._read() == self._own_record:  # Not a lock another run took over since.
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass
      path = os.path.realpath(self.path)
      if _HELD_HERE.get(path) is self:  # Another lock here may hold it again already.
        del _HELD_HERE[path]
      self._held = False
