r"""The package end to end on the built-in synthetic dataset, on a CPU, in a few minutes.

  python -m official.demo [--out=runs/demo] [--gin_file=gin/experiments/demo_synthetic.gin]

Runs, with the library code of each step:
  1. generate the synthetic Charades-layout videos and object maps, and prepare them as the
     `charades/synthetic` TFDS dataset (`official.training.synthetic_data`);
  2. train a miniature AssembleNet++ (`structures.DEMO_ASNP`: RGB, representation-flow and
     object stems, learned weighted connections, peer-attention) and evaluate it on the
     held-out test split (`official.training.experiment`, as `official.train` does);
  3. export it as a SavedModel with a uint8 serving signature (`official.export`);
  4. draw the learned network, the training curves and the per-class AP
     (`official.tools.draw_network`, `official.tools.plots`), as PNG files and TensorBoard
     images;
then prints where everything is, the test mAP and the chance level. `--out` also holds
`demo_summary.json` with those figures and the time of each step. Re-running with the same
`--out` resumes (a finished run only redraws).
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

from official import gin_flags
from official import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_GIN = os.path.join(ROOT, "gin", "experiments", "demo_synthetic.gin")
SUMMARY_FILE = "demo_summary.json"


def parse_gin(gin_files, gin_bindings):
  """Clears gin and parses the experiment's files and bindings (include paths relative to
  the repository root)."""
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  gin.add_config_file_search_path(ROOT)
  gin_flags.parse_gin(list(gin_files), list(gin_bindings), finalize=False)


def _read_eval(out):
  from official.evaluation import writers  # pylint: disable=g-import-not-at-top
  eval_dir = os.path.join(out, "eval")
  with open(os.path.join(eval_dir, writers.METRICS_FILE)) as f:
    metrics = json.load(f)
  _, scores, labels = writers.read_per_video_scores(
      os.path.join(eval_dir, writers.PER_VIDEO_FILE))
  return metrics, scores, labels


def run(out, gin_files=(DEFAULT_GIN,), gin_bindings=(), seed=0, draw=True):
  """Runs the demo into `out`; returns the summary dict (also written to
  `out/demo_summary.json`).

  Summary keys: `test_map`, `chance` (`plots.chance_levels` of the test labels), `steps`,
  `losses` [(step, training loss)], `seconds` per stage and in total, and the paths
  (`model_dir`, `data_dir`, `tensorboard`, `export`, `pictures`).
  """
  import gin  # pylint: disable=g-import-not-at-top
  from official.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from official.tools import draw_network  # pylint: disable=g-import-not-at-top
  from official.tools import plots  # pylint: disable=g-import-not-at-top
  from official.training import experiment  # pylint: disable=g-import-not-at-top
  from official.training import synthetic_data  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  seconds = {}
  os.makedirs(out, exist_ok=True)
  parse_gin(list(gin_files), list(gin_bindings))
  flags_text = (f"--out={out}\n" + "".join(f"--gin_file={g}\n" for g in gin_files) +
                "".join(f"--gin_param={b}\n" for b in gin_bindings) + f"--seed={seed}\n")

  t = time.perf_counter()
  data_dir = synthetic_data.prepare_synthetic_charades(model_dir=out)
  info = input_pipeline.dataset_info(synthetic_data.SYNTHETIC_DATASET, data_dir)
  seconds["generate_and_prepare"] = time.perf_counter() - t
  print(f"[1/4] Synthetic dataset: {info.split_sizes} videos, {info.num_classes} classes, "
        f"in {data_dir} ({seconds['generate_and_prepare']:.0f} s)", flush=True)

  t = time.perf_counter()
  step = experiment.run_mode("train_and_eval", out, seed=seed, flags_text=flags_text)
  seconds["train_and_eval"] = time.perf_counter() - t
  metrics, scores, labels = _read_eval(out)
  chance = plots.chance_levels(labels)
  print(f"[2/4] Trained {step} steps and evaluated on {metrics['num_videos']} test videos: "
        f"mAP {metrics['map']:.3f} (chance {chance['positive_rate']:.3f}) "
        f"({seconds['train_and_eval']:.0f} s)", flush=True)

  t = time.perf_counter()
  export_path = experiment.run_mode("export", out, seed=seed)
  seconds["export"] = time.perf_counter() - t
  print(f"[3/4] Exported the SavedModel to {export_path} ({seconds['export']:.0f} s)",
        flush=True)

  pictures = {}
  if draw:
    t = time.perf_counter()
    pictures = draw_pictures(out, scores, labels, info.class_names, chance, step)
    seconds["pictures"] = time.perf_counter() - t
    print(f"[4/4] Drew the network, the curves and the per-class AP "
          f"({seconds['pictures']:.0f} s)", flush=True)
  gin.clear_config()

  seconds["total"] = time.perf_counter() - start
  losses = plots.read_scalars(os.path.join(out, "train"), "loss")
  summary = {
      "test_map": metrics["map"], "chance": chance, "steps": step,
      "num_test_videos": metrics["num_videos"], "losses": losses,
      "seconds": seconds, "seed": seed,
      "model_dir": out, "data_dir": data_dir, "tensorboard": out,
      "export": export_path, "pictures": pictures,
  }
  with open(os.path.join(out, SUMMARY_FILE), "w") as f:
    json.dump(summary, f, indent=1)
  return summary


def draw_pictures(out, scores, labels, class_names, chance, step):
  """Network graph, training curves and per-class AP as PNGs in `out` and as TensorBoard
  images under `out/pictures`; returns {name: path}."""
  from official.tools import draw_network  # pylint: disable=g-import-not-at-top
  from official.tools import plots  # pylint: disable=g-import-not-at-top
  network = draw_network.draw_model_dir(out, tensorboard=False)
  pictures = {
      "network": network["png"],
      "network_svg": network["svg"],
      "training_curves": plots.plot_training_curves(
          out, os.path.join(out, "training_curves.png"), chance["positive_rate"]),
      "per_class_ap": plots.plot_per_class_ap(
          labels, scores, list(class_names), os.path.join(out, "per_class_ap.png")),
  }
  plots.write_image_summaries(
      {name: path for name, path in pictures.items() if path.endswith(".png")},
      os.path.join(out, "pictures"), step)
  return pictures


def format_summary(summary):
  """The closing message: where things are and what the run reached."""
  chance = summary["chance"]
  minutes = summary["seconds"]["total"] / 60
  lines = [
      "",
      f"AssembleNet++ demo finished in {minutes:.1f} min "
      f"({summary['steps']} training steps).",
      f"  test mAP            {summary['test_map']:.3f} on {summary['num_test_videos']} "
      "held-out synthetic videos",
      f"  chance level        {chance['positive_rate']:.3f} (mean positive rate per class; "
      f"random scores give mAP {chance['random_map']:.3f} +- {chance['random_map_std']:.3f})",
      f"  results             {os.path.join(summary['model_dir'], 'eval', 'metrics.json')}",
      f"  TensorBoard         tensorboard --logdir={summary['tensorboard']}",
      f"  SavedModel          {summary['export']}",
  ]
  for name, path in summary["pictures"].items():
    lines.append(f"  {name.replace('_', ' '):<20}{path}")
  lines.append(f"  summary             {os.path.join(summary['model_dir'], SUMMARY_FILE)}")
  return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("out", "runs/demo", "Where the data, checkpoints, TensorBoard logs, "
                      "pictures and the SavedModel go.")
  gin_flags.define_gin_flags()  # --gin_file (default: the demo's), --gin_param
  flags.adopt_module_key_flags(gin_flags)  # Listed by --help.
  flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order and augmentation.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.prefer_bfc_cpu_allocator()  # before TF's first op (official/runtime.py)
  summary = run(os.path.abspath(FLAGS.out), FLAGS.gin_file or [DEFAULT_GIN],
                gin_flags.gin_bindings_from_flags(), FLAGS.seed)
  print(format_summary(summary))
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))
