"""The backbone's final features and the classification head over them."""

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="assemblenet")
class FinalFeatures(keras.layers.Layer):
  """The backbone's output: the mean of the final nodes' per-frame features, per clip.

  AssembleNet averages its final (level-3) nodes before the classifier (authors'
  `assemblenet.py`, `model_fn`: the per-frame spatial means of the final nodes are summed
  and divided by their number). Kept per frame so a head may pool time as it likes.

  Args:
    num_frames: frames per clip T.

  Call arguments:
    inputs: list of per-frame feature vectors `[N*T, C]`, one per final node (same C).

  Shapes: returns `[N, T, C]` in the layer's compute dtype (the networks build it in
  float32, so features are float32 under any mixed policy).
  """

  def __init__(self, num_frames, **kwargs):
    super().__init__(**kwargs)
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
      raise ValueError(f"`num_frames` must be a positive int. Received: {num_frames!r}")
    self.num_frames = num_frames

  def build(self, inputs_shape):
    widths = {shape[-1] for shape in inputs_shape}
    if len(widths) != 1:
      raise ValueError(
          f"All final nodes must have the same width to be averaged. Received: {widths}")

  def call(self, inputs):
    # M x [N*T, C] -> [N*T, C]: mean over the final nodes.
    features = tf.add_n(list(inputs)) / len(inputs) if len(inputs) > 1 else inputs[0]
    # [N*T, C] -> [N, T, C]
    return tf.reshape(features, [-1, self.num_frames, features.shape[-1]])

  def compute_output_shape(self, inputs_shape):
    return (None, self.num_frames, inputs_shape[0][-1])

  def get_config(self):
    config = super().get_config()
    config.update({"num_frames": self.num_frames})
    return config


@keras.saving.register_keras_serializable(package="assemblenet")
class ClassificationHead(keras.layers.Layer):
  """Classifies a clip from the backbone's per-frame features.

  Default (the authors' head): mean over frames, `Dense(num_classes)` (N(0, 0.01) kernel,
  zero bias). With `max_pool_predictions` the Dense runs per frame and frames are pooled
  with a soft max over time: `sum_t softmax_t(logits_t / sqrt(T)) * logits_t` (AssembleNet
  code's `max_pool_preditions` option). `dropout_rate > 0` adds dropout before the Dense;
  the authors' head has none.

  Args:
    num_classes: number of output logits.
    num_frames: frames per clip T.
    max_pool_predictions: soft temporal max-pooling of per-frame logits.
    dropout_rate: dropout before the classifier, in [0, 1).

  Call arguments:
    inputs: per-frame features `[N, T, C]` (`FinalFeatures`).

  Shapes: returns logits `[N, num_classes]`.
  """

  def __init__(self,
               num_classes,
               num_frames,
               max_pool_predictions=False,
               dropout_rate=0.0,
               **kwargs):
    super().__init__(**kwargs)
    if not 0.0 <= dropout_rate < 1.0:
      raise ValueError(f"`dropout_rate` must be in [0, 1). Received: {dropout_rate}")
    self.num_classes = num_classes
    self.num_frames = num_frames
    self.max_pool_predictions = max_pool_predictions
    self.dropout_rate = dropout_rate
    self.dropout = None
    if dropout_rate:
      self.dropout = keras.layers.Dropout(dropout_rate, name="dropout",
                                          dtype=self.dtype_policy)
    self.classifier = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        name="classifier",
        dtype=self.dtype_policy)

  def build(self, inputs_shape):
    if len(inputs_shape) != 3:
      raise ValueError(
          f"{self.name} expects per-frame features [N, T, C]. Received: shape "
          f"{inputs_shape}")
    self.classifier.build((None, inputs_shape[-1]))

  def call(self, inputs, training=None):
    features = inputs
    if not self.max_pool_predictions:
      features = tf.reduce_mean(features, axis=1)  # [N, T, C] -> [N, C]
    if self.dropout is not None:
      features = self.dropout(features, training=training)
    logits = self.classifier(features)
    if self.max_pool_predictions:
      # [N, T, K] -> [N, K]: softmax over time with temperature sqrt(T).
      attention = tf.nn.softmax(logits / math.sqrt(self.num_frames), axis=1)
      logits = tf.reduce_sum(attention * logits, axis=1)
    return logits

  def compute_output_shape(self, inputs_shape):
    return (None, self.num_classes)

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_classes": self.num_classes,
        "num_frames": self.num_frames,
        "max_pool_predictions": self.max_pool_predictions,
        "dropout_rate": self.dropout_rate,
    })
    return config
