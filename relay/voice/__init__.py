"""The voice edge: the voice connection (/v1/voice), the UDP socket and the voice actors."""
