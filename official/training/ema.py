"""Exponential moving average of the model weights, checkpointed with the model."""

import tensorflow as tf


class ExponentialMovingAverage(tf.Module):
  """Shadow copies of every model weight (trainable and batch-norm statistics) updated as
  `shadow = decay * shadow + (1 - decay) * weight` after each optimiser step.

  Create it under the strategy's scope; call `update()` in cross-replica context (after
  `strategy.run`), where the mirrored weights are already equal on every replica.
  """

  def __init__(self, model, decay=0.999, name="ema"):
    super().__init__(name=name)
    if not 0.0 < decay < 1.0:
      raise ValueError(f"EMA decay must be in (0, 1). Received: {decay}")
    self.decay = decay
    self._model_weights = list(model.weights)
    with tf.name_scope(name):
      self.shadow = [tf.Variable(tf.identity(w), trainable=False,
                                 name=w.path.replace("/", "_").replace(":", "_"))
                     for w in self._model_weights]

  def update(self):
    for shadow, weight in zip(self.shadow, self._model_weights):
      shadow.assign(self.decay * shadow + (1.0 - self.decay) * tf.cast(weight, shadow.dtype))

  def swap(self):
    """Exchanges model weights and averages (call twice to undo)."""
    for shadow, weight in zip(self.shadow, self._model_weights):
      current = tf.identity(weight)
      weight.assign(shadow)
      shadow.assign(current)

  def copy_to_model(self):
    for shadow, weight in zip(self.shadow, self._model_weights):
      weight.assign(shadow)
