"""Speech recognition for speech checkpoints: Whisper transcripts (whisper.py), the built-in
``tiny-whisper`` (tiny.py) and the ``transcribe`` command (transcribe.py) that stores WER/CER rows."""
