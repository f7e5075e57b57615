"""Where the raw videos of the ``download`` stage come from.

* :mod:`.local` scans a folder of videos (VoxCeleb2/LRS3-style tree or flat);
* :mod:`.manifest` reads and validates a CSV/Parquet manifest or VoxCeleb2's
  per-utterance metadata txt files;
* :mod:`.fetch` fetches one URL (HTTP(S) with retries, ``file://``, YouTube through
  yt-dlp) and trims a segment with ffmpeg.

Every clip is named by ids that :mod:`.ids` guarantees are safe path components.
"""
