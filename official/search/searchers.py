"""The search algorithms as Ray Tune searchers, and the search's trial log.

`ConnectivitySearcher` is a `ray.tune.search.Searcher`: Tune asks it for a configuration
(`suggest`: the next genome of the wrapped algorithm), runs `trial.tune_trainable` with it
on a free CPU/GPU slot (a process on this machine, or a node of the Ray cluster), and hands
back the result (`on_trial_complete`: fitness and learned edge weights), which the
algorithm is told. Several trials run at once when resources allow: evolution is then
asynchronous, as in the paper's distributed search.

`TrialLog` is the search's state and its JSON log of every trial (`OUT/trials.json`,
rewritten atomically after each finished trial). A killed search restarted with the same
command reads it back, replays the finished trials into the algorithm and runs only the
remaining budget: a finished trial is never run again. A trial cut off by the kill runs
again, resuming from its own checkpoint in `OUT/trials/trial_NNNN`.
"""

import json
import os
import time
from typing import Dict, List, Optional

from absl import logging
from ray.tune.search import Searcher

from official.search import evolution
from official.search import genome as genome_lib
from official.search import trial as trial_lib

LOG_FILE = "trials.json"


class TrialLog:
  """Every finished trial of one search, in completion order, saved as JSON.

  Args:
    path: the JSON file (`OUT/trials.json`); read when it exists.
    header: what the search is (algorithm, seed, budget, space); a resumed search must
      match the saved header, or resuming would mix two searches.
  """

  def __init__(self, path, header):
    self.path = path
    self.header = dict(header)
    self.records: List[Dict] = []
    if os.path.exists(path):
      with open(path) as f:
        saved = json.load(f)
      if saved["header"] != self.header:
        changed = sorted(k for k in set(saved["header"]) | set(self.header)
                         if saved["header"].get(k) != self.header.get(k))
        raise ValueError(
            f"{path} belongs to another search (differs in {changed}); use another --out "
            f"or the same settings. Received: {[(k, self.header.get(k)) for k in changed]}")
      self.records = saved["trials"]

  def append(self, record):
    self.records.append(record)
    self.save()

  def save(self):
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    tmp = f"{self.path}.tmp"
    with open(tmp, "w") as f:
      json.dump({"header": self.header, "trials": self.records}, f, indent=1)
    os.replace(tmp, self.path)

  @property
  def finished_indices(self):
    return {r["index"] for r in self.records}

  def best(self):
    """The record of the fittest successful trial (ties: the earlier), or None. The
    one-shot search's result is its retrained pruned network, whatever the supernet
    scored."""
    good = [r for r in self.records if r.get("fitness") is not None]
    retrained = [r for r in good if r.get("origin") == "one_shot_retrain"]
    if self.header.get("algorithm") == evolution.ONE_SHOT:
      return retrained[0] if retrained else None  # Never the supernet.
    return max(good, key=lambda r: (r["fitness"], -r["index"])) if good else None


def replay(algorithm, log: TrialLog):
  """Tells `algorithm` every finished trial of `log`, in completion order."""
  for record in log.records:
    structure = genome_lib.structure_from_config(record["structure"])
    weights = {}
    if record.get("fitness") is not None:
      weights = evolution.learned_edge_weights(structure, record["edge_weights"])
    algorithm.tell(record["index"], structure, record.get("fitness"), weights)


class ConnectivitySearcher(Searcher):
  """A Tune searcher running one of `evolution.ALGORITHMS` (see the module docstring).

  Args:
    algorithm: an `evolution.RegularizedEvolution`, `RandomSearch` or `OneShot`, already
      told the log's finished trials (`replay`).
    log: the search's `TrialLog`.
    num_trials: the search's whole budget; proposals stop when finished plus running
      trials reach it.
    setup: what every trial needs (`trial.tune_trainable`'s 'setup'), JSON-ready.
    algorithm_name: for the log.
  """

  def __init__(self, algorithm, log, num_trials, setup, algorithm_name):
    super().__init__(metric=trial_lib.TRIAL_METRIC, mode="max")
    self.algorithm = algorithm
    self.log = log
    self.num_trials = num_trials
    self.setup = setup
    self.algorithm_name = algorithm_name
    self.running: Dict[str, evolution.Proposal] = {}
    self.next_index = max(log.finished_indices, default=-1) + 1
    self.exhausted = False  # Ended before the budget: nothing left to propose.

  def suggest(self, trial_id) -> Optional[Dict]:
    if len(self.log.records) + len(self.running) >= self.num_trials:
      return Searcher.FINISHED
    proposal = self.algorithm.propose(self.next_index)
    if proposal is None:
      if self.running:  # The one-shot retrain waits for its supernet.
        return None
      # Nothing runs that could make a proposal possible (the one-shot supernet failed):
      # "not ready yet" would keep Tune polling forever.
      logging.error("%s: no trial can be proposed (the one-shot supernet failed); the "
                    "search ends without a result.", self.algorithm_name)
      self.exhausted = True
      return Searcher.FINISHED
    self.next_index += 1
    self.running[trial_id] = proposal
    return {"index": proposal.index, "structure": proposal.structure.to_list(),
            "edge_weights": proposal.edge_weights, "setup": self.setup}

  def on_trial_complete(self, trial_id, result=None, error=False):
    proposal = self.running.pop(trial_id, None)
    if proposal is None:
      return
    record = {"index": proposal.index, "trial_id": trial_id,
              "algorithm": self.algorithm_name, "origin": proposal.origin,
              "parent": proposal.parent, "mutation": proposal.mutation,
              "structure": proposal.structure.to_list(),
              "fixed_edge_weights": proposal.edge_weights,
              "summary": genome_lib.summary(proposal.structure),
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "fitness": None}
    if error or not result or trial_lib.TRIAL_METRIC not in result:
      record["error"] = True
      weights = {}
    else:
      details = json.loads(result["result_json"])
      record.update({"fitness": float(result[trial_lib.TRIAL_METRIC]),
                     "metric": result["metric"], "seconds": result["seconds"],
                     "steps": result["steps"], "model_dir": result["model_dir"],
                     **details})
      weights = evolution.learned_edge_weights(proposal.structure, details["edge_weights"])
    self.algorithm.tell(proposal.index, proposal.structure, record["fitness"], weights)
    self.log.append(record)

  def save(self, checkpoint_path):
    # Tune's own experiment checkpoint; the search resumes from the TrialLog instead.
    with open(checkpoint_path, "w") as f:
      json.dump({"log": self.log.path, "next_index": self.next_index}, f)

  def restore(self, checkpoint_path):
    with open(checkpoint_path) as f:
      state = json.load(f)
    self.next_index = max(self.next_index, state["next_index"])
