"""What the Charades and Toyota Smarthome TFDS builders share: manual-download video
releases, an object-map source, and a skip report that makes bad inputs visible."""

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from data_prep import features as features_lib
from data_prep import skips
from data_prep import video as video_lib


class VideoBuilder(tfds.core.GeneratorBasedBuilder):
  """Base of the video dataset builders (abstract: TFDS does not register it).

  Args:
    segmenter: optional ADE-20K segmentation SavedModel path (object maps computed here).
    object_maps_dir: optional folder of precomputed per-frame object maps.
    segmenter_batch_size: frames per segmenter call.
    **kwargs: `tfds.core.GeneratorBasedBuilder` arguments (data_dir, config, ...).
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # TFDS 4.9.10 derives this via `importlib_resources`, a package Python 3.11 lacks.
    return epath.Path(__file__)

  def __init__(self, *, segmenter=None, object_maps_dir=None, segmenter_batch_size=16,
               **kwargs):
    self._object_source = features_lib.ObjectMapSource(segmenter, object_maps_dir,
                                                       segmenter_batch_size)
    super().__init__(**kwargs)
    self.skip_report = skips.SkipReport(self.info.full_name)

  def _encode_or_skip(self, source, video_id, read_fn):
    """Decodes one video with `read_fn() -> (frames, source_indices, num_source, fps)` and
    encodes it; a corrupt video or missing object maps is counted and gives `None`.

    Returns:
      `(example, decoded)` or `None`.
    """
    try:
      decoded = read_fn()
      frames, source_indices, num_source, source_fps = decoded
      example = features_lib.encode_video(
          frames, source_indices, num_source,
          features_lib.stored_fps(self.builder_config.fps, source_fps), video_id,
          self._object_source)
    except video_lib.VideoReadError as e:
      self.skip_report.skip(skips.CORRUPT_VIDEO, source, str(e))
      return None
    except features_lib.MissingObjectMaps as e:
      self.skip_report.skip(skips.MISSING_OBJECT_MAPS, source, str(e))
      return None
    return example, decoded

  def _download_and_prepare(self, dl_manager, download_config):
    super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
    if not sum(split.num_examples for split in self.info.splits.values()):
      raise ValueError(f"Nothing usable in manual_dir {dl_manager.manual_dir}: every video "
                       f"was skipped.\n{self.skip_report.format()}")
    self.skip_report.write(self.data_dir)  # The temporary dir, renamed on success.
    logging.info("%s", self.skip_report.format())
