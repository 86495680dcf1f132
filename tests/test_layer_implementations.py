"""Whole-model equality of the fast layer implementations and the plain reference forms.

The training-speed work (issue 18) replaced how three layers compute, not what: batch norm
in training runs TF's fused kernel (`FusedBatchNorm`) instead of Keras' op-by-op layer,
`TemporalConv` folds its dilation into the frame layout with a matmul kernel gradient
instead of a dilated convolution, and the stride-1 spatial convs (`conv_2plus1d.Conv2D`) compute
their input gradient as a forward conv with the kernel turned and a 1x1 kernel's gradient
as a matmul. Here one tiny AssembleNet++ (every layer kind: RGB, flow and object stems,
peer-attention fusion with projections, dilations 1, 2, 4 and 8 on 8 frames) is run with
the new forms and again, same weights and inputs, with the reference forms patched in:
Keras' `BatchNormalization.call`, Keras' `Conv2D` computation, and the temporal conv as an
undilated `(k, 1)` Conv2D with zeros inserted between the taps (the authors' dilated `(k, 1, 1)`
Conv3D). Logits (training and inference) must agree to float32 round-off, and the
gradients of all trainable variables to within what round-off does to them
(`_assert_gradients_within_round_off`, in L2).
Nothing is stored: the two implementations are compared.
"""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from official.modeling import builders
from official.modeling.layers import batch_norm
from official.modeling.layers import conv_2plus1d

FRAMES, SIZE, CLASSES = 8, 32, 5  # level 3 at 1 x 1


def _reference_temporal_convolve(layer, inputs, kernel):
  """The dilated temporal conv as an undilated Conv2D of a zero-inserted kernel."""
  k, _, channels, filters = kernel.shape
  d = layer.temporal_dilation
  dilated = tf.zeros([(k - 1) * d + 1, 1, channels, filters], kernel.dtype)
  dilated = tf.tensor_scatter_nd_update(dilated, [[j * d] for j in range(k)], kernel)
  _, height, width, _ = inputs.shape
  # [N*T, H, W, C] -> [N, T, H*W, C]
  clips = tf.reshape(inputs, [-1, layer.num_frames, height * width, channels])
  outputs = tf.nn.conv2d(clips, dilated, strides=1, padding="SAME")
  return tf.reshape(outputs, [-1, height, width, filters])


@contextlib.contextmanager
def _reference_layers(batch_norms=True):
  """Patches in the zero-inserted temporal conv, Keras' Conv2D computation for the spatial
  convs (TF's own gradients) and (with `batch_norms`) Keras' batch norm."""
  fused_call = batch_norm.FusedBatchNorm.call
  convolve = conv_2plus1d.TemporalConv.convolve
  convolution_op = conv_2plus1d.Conv2D.convolution_op
  if batch_norms:
    batch_norm.FusedBatchNorm.call = keras.layers.BatchNormalization.call
  conv_2plus1d.TemporalConv.convolve = _reference_temporal_convolve
  conv_2plus1d.Conv2D.convolution_op = keras.layers.Conv2D.convolution_op
  try:
    yield
  finally:
    batch_norm.FusedBatchNorm.call = fused_call
    conv_2plus1d.TemporalConv.convolve = convolve
    conv_2plus1d.Conv2D.convolution_op = convolution_op


def _outputs(model, inputs):
  """Logits in inference, logits in training and the gradient of every trainable weight."""
  moving = [v.numpy() for v in model.non_trainable_variables]
  with tf.GradientTape() as tape:
    train_logits = model(inputs, training=True)
    loss = tf.reduce_sum(train_logits * tf.constant([0.3, -1.0, 0.6, 1.2, -0.5]))
  grads = tape.gradient(loss, model.trainable_variables)
  for variable, value in zip(model.non_trainable_variables, moving):
    variable.assign(value)  # the two runs update the moving variance differently
  infer_logits = model(inputs, training=False)
  return [infer_logits.numpy(), train_logits.numpy()], [g.numpy() for g in grads]


@pytest.fixture(scope="module", name="model_and_inputs")
def _model_and_inputs():
  keras.utils.set_random_seed(0)
  model = builders.build_model(structure="full_asnp50", model_type="assemblenet_plus",
                               depth=26, num_frames=FRAMES, image_size=SIZE,
                               num_classes=CLASSES, attention_mode="peer")
  rng = np.random.default_rng(0)
  # Non-trivial batch-norm statistics and a non-zero last BN of every block, so that
  # every path (residual branches included) reaches the logits.
  for variable in model.variables:
    if variable.path.endswith(("gamma", "moving_variance")):
      variable.assign(rng.uniform(0.5, 1.5, variable.shape))
    elif variable.path.endswith(("beta", "moving_mean")):
      variable.assign(rng.normal(scale=0.1, size=variable.shape))
  dilations = {layer.temporal_dilation for layer in model._flatten_layers()  # pylint: disable=protected-access
               if isinstance(layer, conv_2plus1d.TemporalConv)}
  assert dilations == {1, 2, 4, 8}
  inputs = {
      "rgb": tf.constant(rng.uniform(-1, 1, (2, FRAMES, SIZE, SIZE, 3)), tf.float32),
      "objects": tf.constant(rng.integers(0, 151, (2, FRAMES, SIZE, SIZE)), tf.uint8),
  }
  return model, inputs


def _assert_logits_close(new, reference):
  for name, got, expected in zip(["inference logits", "training logits"], new, reference):
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max(),
                               err_msg=name)


def _assert_gradients_within_round_off(model, inputs, new_grads, reference_grads):
  """The two implementations' gradients differ by no more than round-off does.

  The gradients of a deep ReLU network with training-mode batch norm over few values are
  far more sensitive than its output: round-off flips ReLU masks near zero. This measures
  that sensitivity (the new layers' gradients for the input scaled by 1 + 1e-6: about
  5e-3 in L2 with oneDNN's kernels, 3e-3 with Eigen's) and asks the two implementations to
  differ by no more than 3 times it, and at most 2e-2 (L2, relative, all weights), and by
  at most 1e-1 per weight tensor: a wrong tap, a dropped gradient or a wrong batch-norm
  gradient is off by order 1.
  """
  flat = lambda grads: np.concatenate([g.ravel() for g in grads])
  relative = lambda a, b: np.linalg.norm(flat(a) - flat(b)) / np.linalg.norm(flat(b))
  nudged = dict(inputs, rgb=inputs["rgb"] * (1.0 + 1e-6))
  sensitivity = relative(_outputs(model, nudged)[1], new_grads)
  assert relative(new_grads, reference_grads) <= min(2e-2, max(1e-4, 3 * sensitivity)), (
      relative(new_grads, reference_grads), sensitivity)
  for variable, got, expected in zip(model.trainable_variables, new_grads, reference_grads):
    assert relative([got], [expected]) <= 1e-1, (variable.path, relative([got], [expected]))


@pytest.mark.slow
def test_temporal_conv_in_the_model_equals_zero_inserted_conv(model_and_inputs):
  # The temporal and spatial convs alone (batch norm the same on both sides): logits to
  # float32 round-off, gradients within what round-off does to them. (With oneDNN's
  # kernels the gradients agreed to 6e-6 in L2; with Eigen's, differently rounded convs
  # moved them by 0.25%, about as much as a 1e-6 nudge of the input did, 0.26%.)
  model, inputs = model_and_inputs
  new_logits, new_grads = _outputs(model, inputs)
  with _reference_layers(batch_norms=False):
    reference_logits, reference_grads = _outputs(model, inputs)
  _assert_logits_close(new_logits, reference_logits)
  _assert_gradients_within_round_off(model, inputs, new_grads, reference_grads)


@pytest.mark.slow
def test_full_model_equals_reference_layers(model_and_inputs):
  # Fused batch norm and the new convs together against Keras' batch norm, Keras' Conv2D
  # and the zero-inserted temporal conv: logits to round-off, gradients within what
  # round-off does to them (`_assert_gradients_within_round_off`).
  model, inputs = model_and_inputs
  new_logits, new_grads = _outputs(model, inputs)
  with _reference_layers():
    reference_logits, reference_grads = _outputs(model, inputs)
  _assert_logits_close(new_logits, reference_logits)
  _assert_gradients_within_round_off(model, inputs, new_grads, reference_grads)
