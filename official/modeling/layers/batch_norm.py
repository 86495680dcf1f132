"""Batch normalization for the (N*T)HWC backbone, computed by TF's fused kernel in training.

The authors' TF1 code normalises with `tf.layers.batch_normalization(..., fused=True)`, i.e.
TF's `FusedBatchNorm` kernel. Keras 3's `BatchNormalization` instead computes the moments
and the normalisation as a dozen separate ops (and their gradients); on a 2-core CPU that
was about a fifth of a training step of full_asnp50 (docs/performance.md). The fused kernel
also updates the moving variance the way the authors' models were trained: with the
unbiased batch variance, `n / (n - 1)` times the one used to normalise.
"""

import keras
import tensorflow as tf

# The fused kernel's input dtypes; anything else goes through float32.
_FUSED_DTYPES = (tf.float32, tf.float16, tf.bfloat16)


@keras.saving.register_keras_serializable(package="assemblenet")
class FusedBatchNorm(keras.layers.BatchNormalization):
  """`keras.layers.BatchNormalization` that trains with `FusedBatchNormV3` on 4-D inputs.

  In training (`training=True` on a trainable layer) a 4-D input `[N*T, H, W, C]`
  normalised over its last axis goes through `tf.raw_ops.FusedBatchNormV3` (one kernel
  forward, `FusedBatchNormGradV3` backward). The output equals Keras' layer to float
  round-off: the batch mean and the biased batch variance (over the `n = N*T*H*W` values
  of each channel) normalise. The moving statistics are updated as
  `moving = momentum * moving + (1 - momentum) * batch`, with the batch variance taken
  unbiased, `n / (n - 1)` times the biased one, as in TF1's fused batch norm that the
  authors trained with (Keras' layer uses the biased one here). The kernel computes the
  update itself (its `exponential_avg_factor`, `1 - momentum`), so a training step has
  no element-wise ops for it, only the two assignments.

  Everything else is Keras' layer unchanged: weights (`gamma`, `beta`, `moving_mean`,
  `moving_variance`, same names and shapes, so checkpoints load either way), arguments and
  `get_config`, inference, masks, other ranks or axes, renorm, and
  `synchronized=True` (cross-replica moments, which the fused kernel cannot compute; the
  trainer switches it on with several replicas, and the moving variance is then updated
  with the biased variance, as in Keras).

  Args: those of `keras.layers.BatchNormalization`.

  Shapes: `[N*T, H, W, C]` -> `[N*T, H, W, C]`, in the layer's compute dtype (float32,
  or float16 / bfloat16 under a mixed policy, with float32 statistics).
  """

  def _fused_applies(self, inputs, training, mask):
    if not training or not self.trainable or mask is not None:
      return False
    if self.synchronized or self.renorm or len(inputs.shape) != 4:
      return False
    return self.axis in (-1, 3)

  def call(self, inputs, training=None, mask=None):
    if not self._fused_applies(inputs, training, mask):
      return super().call(inputs, training=training, mask=mask)
    x = tf.convert_to_tensor(inputs)
    if x.dtype not in _FUSED_DTYPES:
      x = tf.cast(x, tf.float32)
    channels = x.shape[-1]
    gamma = self.gamma if self.scale else tf.ones([channels], tf.float32)
    beta = self.beta if self.center else tf.zeros([channels], tf.float32)
    momentum = self.momentum
    # With `exponential_avg_factor` f < 1 the kernel also returns the updated moving
    # statistics, `(1 - f) * moving + f * batch`, the batch variance taken unbiased (it
    # normalises with the biased one): no separate ops for the update.
    outputs, moving_mean, moving_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=x,
        scale=tf.cast(gamma, tf.float32),
        offset=tf.cast(beta, tf.float32),
        mean=tf.cast(self.moving_mean, tf.float32),
        variance=tf.cast(self.moving_variance, tf.float32),
        epsilon=self.epsilon,
        exponential_avg_factor=1.0 - momentum,
        data_format="NHWC",
        is_training=True)
    # The kernel's statistics are float32; the variables keep the layer's dtype.
    self.moving_mean.assign(tf.cast(moving_mean, self.moving_mean.dtype))
    self.moving_variance.assign(tf.cast(moving_variance, self.moving_variance.dtype))
    return tf.cast(outputs, self.compute_dtype)
