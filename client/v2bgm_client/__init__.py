"""Client of the video-to-background-music service."""
