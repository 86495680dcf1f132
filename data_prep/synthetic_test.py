import filecmp
import os

import numpy as np
from PIL import Image
import pytest

from data_prep import charades
from data_prep import skips
from data_prep import synthetic
from data_prep import video

H, W = 32, 48


def _specs(seed, count=30):
  return [synthetic.sample_video(np.random.default_rng([seed, 0, i]), f"V{i}", H, W, 12.0,
                                 16, 24) for i in range(count)]


def test_classes_are_object_times_motion():
  assert len(synthetic.CLASSES) == len(synthetic.CATEGORIES) * len(synthetic.MOTIONS) == 12
  assert synthetic.CLASSES[synthetic.class_index(2, 1)] == "sofa slides right"


def test_object_identity_is_only_in_the_object_maps():
  by_name = {c[0]: c for c in synthetic.CATEGORIES}
  # Chair and sofa: same colour and shape in RGB, different ADE-20K ids in the maps.
  assert by_name["chair"][2:] == by_name["sofa"][2:]
  assert by_name["chair"][1] != by_name["sofa"][1]


def test_render_maps_and_rgb_agree_and_motion_matches_the_label():
  checked = {m: 0 for m in synthetic.MOTIONS}
  for spec in _specs(seed=3):
    frames, maps = synthetic.render(spec, H, W)
    assert frames.shape == (spec.num_frames, H, W, 3) and maps.shape == frames.shape[:3]
    for obj in spec.objects:
      name, ade_id, colour, _ = synthetic.CATEGORIES[obj.category]
      mask = maps == ade_id
      # Appearance: wherever the map says `name`, the RGB shows its colour (+tint, noise).
      np.testing.assert_allclose(frames[mask].mean(0), np.add(colour, spec.tint), atol=1)
      if obj.motion < 0 or obj.end - obj.start < 4:
        continue
      top, left, bottom, right = synthetic.object_box(obj, obj.start, H)
      top2, left2, bottom2, right2 = synthetic.object_box(obj, obj.end, H)
      motion = synthetic.MOTIONS[obj.motion]
      if motion == "slides left":
        assert left2 < left
      elif motion == "slides right":
        assert left2 > left
      else:
        heights = [synthetic.object_box(obj, t, H)[2] for t in range(obj.start, obj.end + 1)]
        assert min(heights) < bottom and (left2, bottom2) == (left, bottom)
      # Outside the action segment the object stands still.
      assert synthetic.object_box(obj, obj.end, H) == synthetic.object_box(
          obj, spec.num_frames - 1, H)
      checked[motion] += 1
  assert min(checked.values()) > 0


def test_actions_are_the_moving_objects_in_seconds():
  for spec in _specs(seed=5):
    expected = sorted((synthetic.class_index(o.category, o.motion), o.start / 12.0,
                       (o.end + 1) / 12.0) for o in spec.objects if o.motion >= 0)
    assert synthetic.actions_of(spec) == expected
    assert all(0 <= s < e <= spec.num_frames / 12.0 for _, s, e in expected)


@pytest.mark.slow
def test_generate_writes_the_charades_layout_deterministically(tmp_path):
  args = dict(num_train=6, num_test=2, height=H, width=W, min_frames=12, max_frames=16)
  ids = synthetic.generate(str(tmp_path / "a"), seed=7, **args)
  synthetic.generate(str(tmp_path / "b"), seed=7, **args)
  synthetic.generate(str(tmp_path / "c"), seed=8, **args)
  a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
  assert len(ids["train"]) == 6 and len(ids["test"]) == 2
  for rel in ("Charades/Charades_v1_train.csv", "Charades/Charades_v1_test.csv",
              "Charades/Charades_v1_classes.txt", f"Charades_v1_480/{ids['train'][0]}.mp4"):
    assert filecmp.cmp(a / rel, b / rel, shallow=False), rel
  assert not filecmp.cmp(a / "Charades/Charades_v1_train.csv",
                         c / "Charades/Charades_v1_train.csv", shallow=False)
  # The Charades parser reads the CSV back, labels and all, without a skip.
  report = skips.SkipReport("synthetic")
  rows = charades.read_split_csv(str(a / "Charades/Charades_v1_train.csv"),
                                 {f"c{i:03d}": i for i in range(12)}, report)
  assert [r["id"] for r in rows] == ids["train"] and report.total == 0
  spec = synthetic.sample_video(np.random.default_rng([7, 0, 0]), ids["train"][0], H, W,
                                12.0, 12, 16)
  assert [s for s, _, _ in rows[0]["segments"]] == [l for l, _, _ in synthetic.actions_of(spec)]
  # Video and per-frame maps match the renderer.
  frames, maps = synthetic.render(spec, H, W)
  decoded = video.read_video(a / f"Charades_v1_480/{spec.video_id}.mp4")
  assert (decoded.num_source_frames, decoded.source_fps) == (spec.num_frames, 12.0)
  assert decoded.duration == pytest.approx(spec.num_frames / 12.0)
  # Compare 8x8 block means: H.264 smooths the renderer's pixel noise but keeps the scene.
  blocks = lambda x: x.reshape(-1, H // 8, 8, W // 8, 8, 3).mean(axis=(2, 4))
  np.testing.assert_allclose(blocks(decoded.frames.astype(float)),
                             blocks(frames.astype(float)), atol=6)
  map_dir = a / "Charades_v1_objects" / spec.video_id
  assert len(os.listdir(map_dir)) == spec.num_frames
  np.testing.assert_array_equal(
      np.asarray(Image.open(map_dir / f"{spec.video_id}-000003.png")), maps[2])
