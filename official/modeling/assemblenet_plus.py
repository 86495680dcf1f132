"""AssembleNet++ (Ryoo et al., ECCV 2020): AssembleNet with peer-attention and objects.

Every connection is gated per channel by peer-attention (conditioned on a learned softmax
mix of all lower-level nodes) or self-attention, and an object-segmentation stem feeds
per-frame object-class maps into the graph (`full_asnp50`, node 4). The network is
`assemblenet.AssembleNet`; this class only gives it the paper's defaults.
"""

import keras

from official.modeling import assemblenet


@keras.saving.register_keras_serializable(package="assemblenet")
class AssembleNetPlus(assemblenet.AssembleNet):
  """`assemblenet.AssembleNet` with AssembleNet++'s defaults: the Charades-searched
  `full_asnp50` structure (2 RGB, 2 flow and 1 object stem) and peer-attention.

  Takes {'rgb': float32 `[N, T, S, S, 3]`, 'objects': uint8 class ids `[N, T, S, S]`}
  and returns float32 logits `[N, num_classes]`; see `assemblenet.AssembleNet` for the
  arguments.
  """

  def __init__(self, structure="full_asnp50", edge_weights="searched",
               attention_mode="peer", **kwargs):
    kwargs.setdefault("name", "assemblenet_plus")
    super().__init__(structure=structure, edge_weights=edge_weights,
                     attention_mode=attention_mode, **kwargs)
