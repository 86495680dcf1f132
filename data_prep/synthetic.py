"""The built-in synthetic dataset, written in the exact Charades release layout.

Each video shows a room (wall above, floor below) with two or three objects. During an
action segment one object moves; the others stay still as distractors. A class is
"<object> <motion>", so recognising it needs
  * appearance: the objects' colours and shapes (RGB),
  * motion: which object moves, and how (slides left / slides right / jumps), and
  * object identity: `chair` and `sofa` look identical in RGB; only the object maps
    (ADE-20K ids) tell them apart.
Videos have one or two (possibly overlapping) action segments, a few have none. Everything
is a deterministic function of the seed.

Output (what `charades/synthetic` reads; object maps in the `object_maps_dir` layout):
  OUT/Charades/Charades_v1_{train,test}.csv, OUT/Charades/Charades_v1_classes.txt
  OUT/Charades_v1_480/<id>.mp4
  OUT/Charades_v1_objects/<id>/<id>-000001.png ...   (uint8 ADE-20K ids, one per frame)

  python -m data_prep.synthetic --out=DIR [--seed=0 --num_train=320 --num_test=80]
"""

import csv
import dataclasses
import os

from absl import app
from absl import flags
import numpy as np
from PIL import Image

from data_prep import video as video_lib

# (name, ADE-20K id, RGB colour, (height, width) as fractions of the frame height).
CATEGORIES = (
    ("person", 13, (200, 40, 40), (0.45, 0.18)),
    ("chair", 20, (40, 70, 200), (0.30, 0.30)),
    ("sofa", 24, (40, 70, 200), (0.30, 0.30)),  # Looks exactly like a chair.
    ("door", 15, (40, 160, 60), (0.55, 0.25)),
)
MOTIONS = ("slides left", "slides right", "jumps")
CLASSES = tuple(f"{c[0]} {m}" for c in CATEGORIES for m in MOTIONS)
WALL_ID, FLOOR_ID = 1, 4  # ADE-20K "wall" and "floor".
CSV_HEADER = ("id", "subject", "scene", "quality", "relevance", "verified", "script",
              "objects", "descriptions", "actions", "length")
SCENES = ("Kitchen", "Living room", "Bedroom", "Hallway")


def class_index(category, motion):
  """Class of category index `category` moving with motion index `motion`."""
  return category * len(MOTIONS) + motion


@dataclasses.dataclass
class SceneObject:
  category: int  # Index into CATEGORIES.
  x: float  # Left edge at rest, pixels.
  bottom: float  # Bottom edge at rest, pixels.
  motion: int = -1  # Index into MOTIONS; -1 = never moves.
  start: int = 0  # First moving frame.
  end: int = 0  # Last moving frame.
  speed: float = 0.0  # Pixels per frame (slides) or jump height in pixels.
  period: int = 8  # Frames per jump.


@dataclasses.dataclass
class VideoSpec:
  video_id: str
  num_frames: int
  fps: float
  objects: list
  wall: tuple
  floor: tuple
  tint: tuple  # Per-video colour shift shared by all objects.
  noise_seed: int


def sample_video(rng, video_id, height, width, fps, min_frames, max_frames):
  """Draws one video's content (no pixels yet)."""
  num_frames = int(rng.integers(min_frames, max_frames + 1))
  num_objects = int(rng.integers(2, 4))
  categories = rng.choice(len(CATEGORIES), size=num_objects, replace=False)
  num_moving = 0 if rng.random() < 0.05 else int(rng.integers(1, min(2, num_objects) + 1))
  objects = []
  for k, category in enumerate(categories):
    h_frac, w_frac = CATEGORIES[category][3]
    obj_w, obj_h = w_frac * height, h_frac * height
    obj = SceneObject(category=int(category), x=float(rng.uniform(0, width - obj_w)),
                      bottom=float(rng.uniform(0.62, 0.97) * height))
    if k < num_moving:
      length = int(rng.integers(min(8, num_frames), num_frames + 1))
      obj.motion = int(rng.integers(len(MOTIONS)))
      if MOTIONS[obj.motion] == "jumps":
        obj.speed = float(rng.uniform(0.15, 0.25) * height)
        obj.period = min(int(rng.integers(6, 11)), length - 1)
        # Whole jumps only: the object lands where it took off when the segment ends.
        length = 1 + obj.period * ((length - 1) // obj.period)
      obj.start = int(rng.integers(0, num_frames - length + 1))
      obj.end = obj.start + length - 1
      if MOTIONS[obj.motion] != "jumps":
        travel = float(rng.uniform(0.3, 0.6) * (width - obj_w))
        obj.speed = travel / max(1, length - 1)
        # Start where the whole slide stays inside the frame.
        if MOTIONS[obj.motion] == "slides left":
          obj.x = float(rng.uniform(travel, width - obj_w))
        else:
          obj.x = float(rng.uniform(0, width - obj_w - travel))
    objects.append(obj)
  wall = tuple(int(v) for v in rng.integers(150, 230, size=3))
  floor = tuple(int(v) for v in rng.integers(60, 130, size=3))
  tint = tuple(int(v) for v in rng.integers(-15, 16, size=3))
  return VideoSpec(video_id, num_frames, fps, objects, wall, floor, tint,
                   int(rng.integers(2**31)))


def object_box(obj, t, height):
  """(top, left, bottom, right) integer box of `obj` at frame t."""
  h_frac, w_frac = CATEGORIES[obj.category][3]
  obj_h, obj_w = h_frac * height, w_frac * height
  x, bottom = obj.x, obj.bottom
  if obj.motion >= 0 and t >= obj.start:
    moved = min(t, obj.end) - obj.start
    motion = MOTIONS[obj.motion]
    if motion == "slides left":
      x -= obj.speed * moved
    elif motion == "slides right":
      x += obj.speed * moved
    elif t <= obj.end:
      bottom -= obj.speed * abs(np.sin(np.pi * moved / obj.period))
  top = int(round(bottom - obj_h))
  left = int(round(x))
  return max(0, top), max(0, left), int(round(bottom)), int(round(x + obj_w))


def render(spec, height, width):
  """-> (frames uint8 [T, H, W, 3], object maps uint8 [T, H, W])."""
  horizon = int(0.4 * height)
  background = np.empty((height, width, 3), np.uint8)
  background[:horizon] = spec.wall
  background[horizon:] = spec.floor
  background_ids = np.full((height, width), FLOOR_ID, np.uint8)
  background_ids[:horizon] = WALL_ID
  noise_rng = np.random.default_rng(spec.noise_seed)
  # Far objects (higher on the floor) first, so nearer ones occlude them.
  order = sorted(spec.objects, key=lambda o: o.bottom)
  frames = np.empty((spec.num_frames, height, width, 3), np.uint8)
  maps = np.empty((spec.num_frames, height, width), np.uint8)
  for t in range(spec.num_frames):
    frame = background.astype(np.int16)
    ids = background_ids.copy()
    for obj in order:
      name, ade_id, colour, _ = CATEGORIES[obj.category]
      top, left, bottom, right = object_box(obj, t, height)
      frame[top:bottom, left:right] = np.add(colour, spec.tint)
      ids[top:bottom, left:right] = ade_id
    frame += noise_rng.integers(-4, 5, size=frame.shape, dtype=np.int16)
    frames[t] = np.clip(frame, 0, 255)
    maps[t] = ids
  return frames, maps


def actions_of(spec):
  """[(class index, start s, end s)] of the moving objects."""
  actions = []
  for obj in spec.objects:
    if obj.motion >= 0:
      label = class_index(obj.category, obj.motion)
      actions.append((label, obj.start / spec.fps, (obj.end + 1) / spec.fps))
  return sorted(actions)


def _csv_row(spec, rng):
  names = [CATEGORIES[o.category][0] for o in spec.objects]
  actions = actions_of(spec)
  sentences = [CLASSES[label] for label, _, _ in actions] or ["nothing moves"]
  return {
      "id": spec.video_id,
      "subject": f"S{int(rng.integers(1, 20)):02d}",
      "scene": SCENES[int(rng.integers(len(SCENES)))],
      "quality": str(int(rng.integers(4, 8))),
      "relevance": str(int(rng.integers(4, 8))),
      "verified": "Yes",
      # Commas inside quoted fields, as in the real release.
      "script": f"In a room with a {', a '.join(names)}, the {'; then the '.join(sentences)}.",
      "objects": ";".join(names),
      "descriptions": f"A {names[0]}, and more; {len(actions)} action(s).",
      "actions": ";".join(f"c{label:03d} {start:.2f} {end:.2f}" for label, start, end in actions),
      "length": f"{spec.num_frames / spec.fps:.2f}",
  }


def generate(out, seed=0, num_train=320, num_test=80, height=64, width=80, fps=12.0,
             min_frames=24, max_frames=48, write_object_maps=True):
  """Writes the synthetic release into `out`; returns {split: [video ids]}."""
  if height % 2 or width % 2:
    raise ValueError(f"height and width must be even (H.264 4:2:0). Received: "
                     f"{height}x{width}")
  if not 8 <= min_frames <= max_frames:
    raise ValueError(f"Need 8 <= min_frames <= max_frames. Received: "
                     f"{min_frames}, {max_frames}")
  meta_dir = os.path.join(out, "Charades")
  video_dir = os.path.join(out, "Charades_v1_480")
  maps_dir = os.path.join(out, "Charades_v1_objects")
  os.makedirs(meta_dir, exist_ok=True)
  os.makedirs(video_dir, exist_ok=True)
  with open(os.path.join(meta_dir, "Charades_v1_classes.txt"), "w") as f:
    f.writelines(f"c{i:03d} {name}\n" for i, name in enumerate(CLASSES))
  ids = {}
  for split_code, (split, count) in enumerate((("train", num_train), ("test", num_test))):
    rows = []
    for index in range(count):
      rng = np.random.default_rng([seed, split_code, index])
      video_id = f"{'TR' if split == 'train' else 'TE'}{index:05d}"
      spec = sample_video(rng, video_id, height, width, fps, min_frames, max_frames)
      frames, maps = render(spec, height, width)
      video_lib.write_video(os.path.join(video_dir, video_id + ".mp4"), frames, fps)
      if write_object_maps:
        folder = os.path.join(maps_dir, video_id)
        os.makedirs(folder, exist_ok=True)
        for t, ids_map in enumerate(maps):
          Image.fromarray(ids_map).save(os.path.join(folder, f"{video_id}-{t + 1:06d}.png"))
      rows.append(_csv_row(spec, rng))
    with open(os.path.join(meta_dir, f"Charades_v1_{split}.csv"), "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=CSV_HEADER)
      writer.writeheader()
      writer.writerows(rows)
    ids[split] = [row["id"] for row in rows]
  return ids


def define_flags():
  """Command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("out", None, "Directory for the synthetic release.", required=True)
  flags.DEFINE_integer("seed", 0, "Random seed; equal seeds give equal datasets.")
  flags.DEFINE_integer("num_train", 320, "Training videos.")
  flags.DEFINE_integer("num_test", 80, "Test videos.")
  flags.DEFINE_integer("height", 64, "Frame height (even).")
  flags.DEFINE_integer("width", 80, "Frame width (even).")
  flags.DEFINE_float("fps", 12.0, "Frame rate of the videos.")
  flags.DEFINE_integer("min_frames", 24, "Shortest video, frames.")
  flags.DEFINE_integer("max_frames", 48, "Longest video, frames.")


def main(argv):
  del argv
  flag = flags.FLAGS
  ids = generate(flag.out, flag.seed, flag.num_train, flag.num_test,
                 flag.height, flag.width, flag.fps, flag.min_frames,
                 flag.max_frames)
  out = flag.out
  print(f"Wrote {len(ids['train'])} train + {len(ids['test'])} test videos to {out}.\n"
        "Prepare it with:\n  python -m data_prep.prepare --dataset=charades/synthetic "
        f"--manual_dir={out} --data_dir=DATA_DIR "
        f"--object_maps_dir={os.path.join(out, 'Charades_v1_objects')}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
