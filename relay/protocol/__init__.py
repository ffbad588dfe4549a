"""Sans-I/O protocol code: wire formats and codecs, tested without sockets."""
