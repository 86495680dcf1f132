"""Backbone features of an AssembleNet / AssembleNet++ classifier: the pooled pre-logit
vector the classification head's Dense reads, and optionally every node's pooled output.

Built on the classifier itself (a Keras sub-model from the model's inputs to its backbone's
features, `assemblenet.FEATURES_LAYER`, and the nodes' outputs), so the features are exactly
the activations the trained classifier computes: `logits = pre_logits @ kernel + bias` with
the head's `classifier` Dense (without `max_pool_predictions`).
"""

import re

import keras
import tensorflow as tf

from official.modeling import assemblenet

PRE_LOGITS = "pre_logits"
_NODE_LAYER = re.compile(r"^node_(\d+)_(blocks|rgb_stem|flow_stem|object_stem)$")


class FeatureExtractor:
  """Pooled features of `model`'s views.

  Args:
    model: an `assemblenet.AssembleNet` classifier (its backbone ends in the layer
      `final_features`, `[B, T, C]`; nodes are named `node_<k>_blocks` / `_stem`).
    per_node: also return every node's output, averaged over space and time.

  Call: `extractor(inputs)` with the model's input dict (`B` views) returns {'pre_logits':
  float32 `[B, D]`, and with `per_node` 'node_<k>': float32 `[B, C_k]`}. `pre_logits` is
  the backbone's features (the mean over the final nodes of their per-frame spatial
  means) averaged over the T frames: what the head's Dense classifies. With `max_pool_predictions` the head classifies
  each frame and pools the logits; `pre_logits` is then the time mean of the per-frame
  vectors the Dense reads.
  """

  def __init__(self, model, per_node=False):
    features = model.get_layer(assemblenet.FEATURES_LAYER)
    self.num_frames = features.num_frames
    outputs = {PRE_LOGITS: features.output}
    if per_node:
      for layer in model.layers:
        match = _NODE_LAYER.match(layer.name)
        if match:
          outputs[f"node_{match.group(1)}"] = layer.output
    self.node_names = sorted((k for k in outputs if k != PRE_LOGITS),
                             key=lambda k: int(k.split("_")[1]))
    self._model = keras.Model(model.input, outputs, name=f"{model.name}_features")
    self._forward = tf.function(self._pooled, reduce_retracing=True)

  def _time_mean(self, frames_features):
    # [B*T, C] -> [B, T, C] -> [B, C]
    per_clip = tf.reshape(frames_features, [-1, self.num_frames, frames_features.shape[-1]])
    return tf.reduce_mean(tf.cast(per_clip, tf.float32), axis=1)

  def _pooled(self, inputs):
    outputs = self._model(inputs, training=False)
    # [B, T, C] -> [B, C]
    pooled = {PRE_LOGITS: tf.reduce_mean(tf.cast(outputs[PRE_LOGITS], tf.float32), axis=1)}
    for name in self.node_names:
      # [B*T, h, w, C] -> [B*T, C] -> [B, C]
      pooled[name] = self._time_mean(tf.reduce_mean(outputs[name], axis=[1, 2]))
    return pooled

  def __call__(self, inputs):
    return {k: v.numpy() for k, v in self._forward(inputs).items()}
