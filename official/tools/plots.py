"""Pictures of a training run: training curves, per-class AP, ablation bar charts, and the
chance level they are read against. Each figure is written as a PNG (and, for TensorBoard,
as an image summary); all numbers come from the run's own files."""

import glob
import os

import numpy as np

from official.evaluation import metrics as metrics_lib


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def read_scalars(logdir, tag):
  """`[(step, value)]` of the scalar summary `tag` in the event files under `logdir`, sorted
  by step (the last value wins for a repeated step)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  values = {}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag != tag:
          continue
        if value.HasField("tensor"):
          number = float(tf.make_ndarray(value.tensor))
        else:
          number = float(value.simple_value)
        values[int(event.step)] = number
  return sorted(values.items())


def chance_levels(labels, num_draws=200, seed=0):
  """What a network that learned nothing scores on these video labels.

  Args:
    labels: `[num_videos, num_classes]` multi-hot labels.
    num_draws: random score draws averaged for `random_map`.
    seed: seed of those draws.

  Returns:
    {'positive_rate': mean over classes (with a positive) of the fraction of positive
    videos among the videos with an action, the expected AP of a random ranking for large
    sets (videos without actions rank last whatever their scores, as in `charades_map`);
    'random_map': the mean Charades mAP of `num_draws` uniformly random score matrices;
    'random_map_std'}.
  """
  labels = np.asarray(labels) > 0
  present = labels.any(axis=0)
  rng = np.random.default_rng(seed)
  draws = [metrics_lib.charades_map(labels, rng.random(labels.shape))
           for _ in range(num_draws)]
  annotated = labels[metrics_lib.with_actions(labels)]
  return {"positive_rate": float(annotated[:, present].mean(axis=0).mean()),
          "random_map": float(np.mean(draws)), "random_map_std": float(np.std(draws))}


def plot_training_curves(model_dir, path, chance=None):
  """Training loss (model_dir/train) and evaluation mAP (model_dir/eval) against steps."""
  loss = read_scalars(os.path.join(model_dir, "train"), "loss")
  maps = read_scalars(os.path.join(model_dir, "eval"), "map")
  if not loss:
    raise FileNotFoundError(f"No 'loss' summaries under {model_dir}/train.")
  plt = _pyplot()
  fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 3.6))
  ax_loss.plot(*zip(*loss), color="#d9534f")
  ax_loss.set(xlabel="step", ylabel="training loss (sigmoid cross-entropy)",
              title="training loss")
  ax_loss.grid(alpha=0.3)
  if maps:
    ax_map.plot(*zip(*maps), marker="o", color="#5b8bd6", label="test mAP")
  if chance is not None:
    ax_map.axhline(chance, color="grey", ls="--", label=f"chance {chance:.2f}")
  ax_map.set(xlabel="step", ylabel="mAP", ylim=(0, 1), title="held-out test mAP")
  ax_map.grid(alpha=0.3)
  ax_map.legend(loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_per_class_ap(labels, scores, class_names, path):
  """Horizontal bars of the per-class AP, with each class's positive rate (its chance AP)."""
  labels = np.asarray(labels)
  aps = metrics_lib.per_class_average_precision(labels, scores)
  rates = (labels > 0).mean(axis=0)
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7, 0.35 * len(class_names) + 1.2))
  rows = np.arange(len(class_names))
  ax.barh(rows, np.nan_to_num(aps), color="#5b8bd6", label="AP")
  ax.scatter(rates, rows, color="black", marker="|", s=120, label="chance (positive rate)",
             zorder=3)
  ax.set_yticks(rows, class_names, fontsize=8)
  ax.invert_yaxis()
  ax.set(xlim=(0, 1), xlabel="average precision",
         title=f"per-class AP on the test split (mAP {np.nanmean(aps):.3f})")
  ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8,
            frameon=False)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_ablation_bars(rows, path, chance=None, title="Ablations on the synthetic dataset"):
  """A bar chart of `rows` [{'group', 'name', 'map'}] (mAP per variant, grouped), with the
  chance level as a line."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.4))
  groups = []
  for row in rows:
    if row["group"] not in groups:
      groups.append(row["group"])
  palette = ["#d9534f", "#5b8bd6", "#5cb85c", "#f0ad4e", "#8e44ad", "#888888", "#17a2b8"]
  positions = np.arange(len(rows))
  colours = [palette[groups.index(r["group"]) % len(palette)] for r in rows]
  values = [r["map"] for r in rows]
  ax.barh(positions, values, color=colours)
  for y, value in zip(positions, values):
    ax.text(value + 0.005, y, f"{value:.3f}", va="center", fontsize=7)
  ax.set_yticks(positions, [f"{r['group']}: {r['name']}" for r in rows], fontsize=8)
  ax.invert_yaxis()
  if chance is not None:
    ax.axvline(chance, color="grey", ls="--", label=f"chance {chance:.2f}")
    ax.legend(loc="lower right", fontsize=8)
  ax.set(xlim=(0, 1), xlabel="test mAP", title=title)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path


def write_image_summaries(pngs, logdir, step=0):
  """Writes `{name: png path}` as TensorBoard image summaries under `logdir`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  writer = tf.summary.create_file_writer(logdir)
  with writer.as_default():
    for name, png in pngs.items():
      with tf.io.gfile.GFile(png, "rb") as f:
        image = tf.io.decode_png(f.read(), channels=4)
      tf.summary.image(name, image[None], step=step)
  writer.flush()
  writer.close()
