"""A small built-in English corpus for the tiny tokenizers.

Both tiny tokenizers (VideoLLaMA3's byte-level BPE and YuE's SentencePiece text pieces) learn their
merges from this text, so random-weight captions and prompts decode to real English words. It is
written for this project: video captions, music descriptions, YuE-style tags, lyrics and the YuE
prompt markers. Keep it a few KB; changing it changes the tiny vocabularies (and the tiny weights'
meaning), so treat it as part of the checkpoint format.
"""

from __future__ import annotations

VIDEO_CAPTIONS = """\
The video shows a quiet city street at night. Cars pass slowly under orange lights and rain \
falls on the road. A woman in a red coat walks past a shop window and looks at the camera.
A drone flies over a green forest in the early morning. Fog rises from the valley and the sun \
comes up behind the mountains. The camera moves forward over a river and a small wooden bridge.
Two children run along a sandy beach. Waves roll in and a dog chases a ball across the water. \
The scene is bright, warm and happy, with a clear blue sky.
A chef cuts vegetables in a busy kitchen. Steam rises from the pots, knives tap on the board \
and the camera follows his hands in close up shots.
A skateboarder jumps down a long flight of stairs in a concrete park. The clip is fast, with \
quick cuts, shaky camera work and loud energy.
An old man plays chess in a park while leaves fall around him. The light is soft and golden \
and the mood is calm, slow and a little sad.
A crowd dances at an outdoor festival. Colored lights flash, hands wave in the air and a band \
plays on a large stage in the distance.
A car drives through the desert on an empty highway. Dust follows the wheels and the horizon \
shimmers in the heat of the afternoon.
A cat sleeps on a window sill while snow falls outside. Nothing much happens; the video is \
peaceful, quiet and cozy.
A runner trains on a track at sunrise. The camera tracks beside her, then cuts to her face, \
her shoes and the finish line.
"""

MUSIC_DESCRIPTIONS = """\
This song is an uplifting pop track with bright synthesizer chords, a steady drum beat and a \
catchy female vocal. The tempo is fast and the mood is happy and energetic.
A slow piano ballad with soft strings and a warm male voice. The melody is gentle, emotional \
and melancholic, and the chorus rises with a full orchestra.
An electronic dance track with deep bass, a four on the floor kick and airy vocal chops. It \
builds tension before a powerful drop.
A calm acoustic folk song with guitar, harmonica and a mellow vocal. It sounds like a quiet \
morning in the countryside.
A dark cinematic score with low drums, cello and a choir. The music is dramatic, tense and \
epic, perfect for an action scene.
A relaxed jazz tune with saxophone, double bass and brushed drums. The groove is smooth and \
the night feels romantic.
A hard rock anthem with distorted electric guitar, loud drums and a powerful vocal. The energy \
is aggressive and rebellious.
A lo-fi hip-hop beat with vinyl crackle, soft keys and a lazy groove, good for studying.
Background music for this video should be calm and dreamy, with soft piano and ambient pads.
Background music for this video should be fast and exciting, with drums, bass and electric guitar.
"""

YUE_TAGS = """\
genre: pop rock jazz blues folk country electronic dance house techno ambient classical \
cinematic orchestral hip-hop rap soul funk disco reggae metal punk indie ballad lo-fi k-pop \
r&b gospel latin
instrument: piano drums bass guitar acoustic guitar electric guitar synthesizer violin cello \
strings saxophone trumpet flute harmonica organ choir pads beat
mood: uplifting happy sad melancholic emotional dreamy calm peaceful energetic dark romantic \
epic tense inspiring nostalgic playful relaxing powerful
gender: female male
timbre: bright vocal airy vocal mellow vocal deep vocal powerful vocal soft vocal warm vocal
inspiring female uplifting pop airy vocal electronic bright vocal vocal
calm male folk acoustic guitar mellow vocal warm vocal nostalgic
energetic male rock electric guitar drums powerful vocal
dreamy female ambient synthesizer piano soft vocal
"""

LYRICS = """\
[verse]
Walking down the empty street tonight
The city lights are shining bright
I hear the music in my mind
Leaving all the rain behind

[chorus]
We are dancing in the light
Hold me close and hold me tight
Every heartbeat feels so right
We are dancing through the night

[bridge]
When the morning comes around
I will still hear every sound

[outro]
Dancing in the light
"""

YUE_PROMPT = """\
Generate music from the given lyrics segment by segment.
[Genre] inspiring female uplifting pop airy vocal electronic bright vocal vocal
[start_of_segment] [end_of_segment] [start_of_reference] [end_of_reference]
"""

CORPUS: str = "\n".join((VIDEO_CAPTIONS, MUSIC_DESCRIPTIONS, YUE_TAGS, LYRICS, YUE_PROMPT))
