"""Compares video decoders for data preparation; prints one JSON line per decoder.

The package decodes videos once, during preparation (`data_prep/`), so what matters is
frames/s when decoding a whole 480p H.264 video to RGB arrays and resampling to 12 fps.

  python -m benchmarks.decode_speed [--seconds 10] [--repeats 3]

Candidates: PyAV (the chosen dependency) single- and frame-threaded, the ffmpeg command
line piping raw RGB (measured when `imageio-ffmpeg` or an `ffmpeg` binary is available), and
the package's own reader `data_prep.video.read_video` at 12 fps, short side 256, as the
Charades and Smarthome builders call it, with its `THREAD_TYPE` ("AUTO", frame threads, as
used) and single-threaded ("NONE"); its frames are resized, so it has no diff column.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

import av
import numpy as np

from data_prep import video as video_lib

WIDTH, HEIGHT, FPS = 854, 480, 24


def write_test_video(path, seconds):
  """A moving-gradient H.264 video like Charades_v1_480 (854x480, 24 fps)."""
  rng = np.random.default_rng(0)
  noise = rng.integers(0, 32, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
  yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
  with av.open(path, "w") as container:
    stream = container.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    for t in range(seconds * FPS):
      frame = np.stack([(xx + 4 * t) % 256, (yy + 2 * t) % 256,
                        (xx + yy + t) % 256], -1).astype(np.uint8) + noise
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def decode_pyav(path, threaded):
  frames = []
  with av.open(path) as container:
    stream = container.streams.video[0]
    if threaded:
      stream.thread_type = "AUTO"
    for i, frame in enumerate(container.decode(stream)):
      if i % 2 == 0:  # 24 fps -> 12 fps
        frames.append(frame.to_ndarray(format="rgb24"))
  return frames


def read_video(path, thread_type):
  """The package's reader as the builders call it, decoding with `thread_type` threads."""
  saved, video_lib.THREAD_TYPE = video_lib.THREAD_TYPE, thread_type
  try:
    return video_lib.read_video(path, fps=12, short_side=256)[0]
  finally:
    video_lib.THREAD_TYPE = saved


def decode_ffmpeg_cli(path, binary):
  out = subprocess.run(
      [binary, "-loglevel", "error", "-i", path, "-vf", "select=not(mod(n\\,2))",
       "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
      check=True, capture_output=True).stdout
  return np.frombuffer(out, np.uint8).reshape(-1, HEIGHT, WIDTH, 3)


def ffmpeg_binary():
  try:
    import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
    return imageio_ffmpeg.get_ffmpeg_exe()
  except ImportError:
    return shutil.which("ffmpeg")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seconds", type=int, default=10)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "clip.mp4")
    write_test_video(path, args.seconds)
    candidates = {
        "pyav": lambda: decode_pyav(path, threaded=False),
        "pyav_threaded": lambda: decode_pyav(path, threaded=True),
        "data_prep_read_video_12fps_256": lambda: read_video(path, "AUTO"),
        "data_prep_read_video_12fps_256_single_thread": lambda: read_video(path, "NONE"),
    }
    binary = ffmpeg_binary()
    if binary:
      candidates["ffmpeg_cli_pipe"] = lambda: decode_ffmpeg_cli(path, binary)
    reference = None
    for name, decode in candidates.items():
      times = []
      for _ in range(args.repeats):
        start = time.perf_counter()
        frames = decode()
        times.append(time.perf_counter() - start)
      frames = np.asarray(frames)
      if reference is None:
        reference = frames
      print(json.dumps({
          "decoder": name, "frames": int(len(frames)),
          "median_s": round(float(np.median(times)), 3),
          "decoded_frames_per_s": round(args.seconds * FPS / float(np.median(times)), 1),
          "max_abs_diff_vs_pyav": int(np.abs(frames.astype(int) - reference).max())
                                  if frames.shape == reference.shape else None,
      }))


if __name__ == "__main__":
  main()
