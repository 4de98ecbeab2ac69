"""Whole recordings, not live streams: decode a file, cut it into speech segments with the VAD, run
each segment through the ASR engine, and the seed's one-shot voice turn. No HTTP here: the routes in
server/http/audio_routes.py call these."""
