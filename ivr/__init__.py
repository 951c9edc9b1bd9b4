"""The telephony engine: pjsua2 at the edge (`sip`), a pure-asyncio call session in the middle, Vosk ASR,
espeak-ng TTS and the dialogue client behind it."""
