"""Loss builders (gin configurables): per-example losses that the trainer averages over the
global batch."""

import gin
import keras
import tensorflow as tf

LOSSES = ("sigmoid_cross_entropy", "softmax_cross_entropy")


@gin.configurable
def build_loss(kind="sigmoid_cross_entropy", label_smoothing=0.0):
  """Returns `loss_fn(labels [B, C], logits [B, C]) -> [B]` per-example losses.

  Args:
    kind: 'sigmoid_cross_entropy' (multi-label, Charades; mean over classes, as the authors'
      `tf.losses.sigmoid_cross_entropy`) or 'softmax_cross_entropy' (single label, Toyota
      Smarthome).
    label_smoothing: moves targets towards uniform (softmax) or 0.5 (sigmoid) by this amount.
  """
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"label_smoothing must be in [0, 1). Received: {label_smoothing}")
  if kind == "sigmoid_cross_entropy":
    def loss_fn(labels, logits):
      labels = tf.cast(labels, tf.float32)
      if label_smoothing:
        labels = labels * (1.0 - label_smoothing) + 0.5 * label_smoothing
      per_class = tf.nn.sigmoid_cross_entropy_with_logits(
          labels=labels, logits=tf.cast(logits, tf.float32))
      return tf.reduce_mean(per_class, axis=-1)
  elif kind == "softmax_cross_entropy":
    def loss_fn(labels, logits):
      return keras.losses.categorical_crossentropy(
          tf.cast(labels, tf.float32), tf.cast(logits, tf.float32), from_logits=True,
          label_smoothing=label_smoothing)
  else:
    raise ValueError(f"loss kind must be one of {LOSSES}. Received: {kind!r}")
  return loss_fn


def score_activation(kind):
  """The activation that turns logits into the scores evaluated for loss `kind`."""
  return tf.nn.sigmoid if kind == "sigmoid_cross_entropy" else tf.nn.softmax
