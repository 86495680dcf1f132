"""Optimiser and learning-rate schedule builders (gin configurables)."""

import gin
import keras
import tensorflow as tf

SCHEDULES = ("constant", "cosine", "exponential")
OPTIMIZERS = ("sgd", "adamw")
# Decoupled weight decay skips batch-norm scale/offset and biases, as is standard for ResNets.
DEFAULT_NO_DECAY = ("gamma", "beta", "bias")


@keras.saving.register_keras_serializable(package="assemblenet")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up from 0 to `after(0)` over `warmup_steps`, then `after(step - warmup)`."""

  def __init__(self, after, warmup_steps):
    if warmup_steps < 0:
      raise ValueError(f"warmup_steps must be >= 0. Received: {warmup_steps}")
    self.after = after
    self.warmup_steps = int(warmup_steps)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warmup = float(self.warmup_steps)
    decayed = self.after(tf.maximum(step - warmup, 0.0))
    if self.warmup_steps == 0:
      return decayed
    return tf.where(step < warmup, self.after(0.0) * step / warmup, decayed)

  def get_config(self):
    return {"after": keras.saving.serialize_keras_object(self.after),
            "warmup_steps": self.warmup_steps}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["after"] = keras.saving.deserialize_keras_object(config["after"])
    return cls(**config)


@gin.configurable
def build_learning_rate(total_steps, base_learning_rate=gin.REQUIRED, schedule="cosine",
                        warmup_steps=0, decay_steps=None, decay_rate=0.1, staircase=False,
                        final_fraction=0.0):
  """The learning-rate schedule.

  Args:
    total_steps: training steps (the trainer passes its `train_steps`).
    base_learning_rate: the peak rate, reached at the end of the warm-up.
    schedule: 'constant', 'cosine' (to `final_fraction * base` at `total_steps`) or
      'exponential' (times `decay_rate` every `decay_steps`).
    warmup_steps: linear warm-up length.
    decay_steps: exponential decay period; defaults to the post-warm-up length.
    decay_rate: exponential decay factor.
    staircase: exponential decay in steps rather than continuously.
    final_fraction: cosine's final rate as a fraction of the base.
  """
  after_warmup = max(int(total_steps) - int(warmup_steps), 1)
  if schedule == "constant":
    # A "decay" from the base rate to itself: a serialisable constant schedule.
    after = keras.optimizers.schedules.PolynomialDecay(base_learning_rate, 1,
                                                       base_learning_rate)
  elif schedule == "cosine":
    after = keras.optimizers.schedules.CosineDecay(base_learning_rate, after_warmup,
                                                   alpha=final_fraction)
  elif schedule == "exponential":
    after = keras.optimizers.schedules.ExponentialDecay(
        base_learning_rate, decay_steps or after_warmup, decay_rate, staircase=staircase)
  else:
    raise ValueError(f"schedule must be one of {SCHEDULES}. Received: {schedule!r}")
  return WarmupSchedule(after, warmup_steps)


@gin.configurable
def build_optimizer(learning_rate, name="sgd", momentum=0.9, nesterov=False,
                    weight_decay=0.0, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                    exclude_from_weight_decay=DEFAULT_NO_DECAY):
  """The optimiser, with decoupled weight decay that really applies.

  Keras 3 applies `weight_decay` inside `apply_gradients` as `w -= lr * weight_decay * w`
  (AdamW and SGD alike) on every variable not matching `exclude_from_weight_decay`.

  Args:
    learning_rate: a float or a schedule.
    name: 'sgd' (momentum, optionally Nesterov) or 'adamw'.
    momentum, nesterov: SGD settings.
    weight_decay: decoupled decay factor (0 disables it).
    beta_1, beta_2, epsilon: AdamW settings.
    exclude_from_weight_decay: variable-name patterns (re.search) left undecayed.
  """
  decay = weight_decay or None
  if name == "sgd":
    optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=nesterov,
                                     weight_decay=decay)
  elif name == "adamw":
    optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay,
                                       beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
  else:
    raise ValueError(f"optimizer name must be one of {OPTIMIZERS}. Received: {name!r}")
  if weight_decay and exclude_from_weight_decay:
    optimizer.exclude_from_weight_decay(var_names=list(exclude_from_weight_decay))
  return optimizer
