"""Reading, probing and writing audio/video files (ffmpeg, PyAV, decord)."""
