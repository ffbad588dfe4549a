"""Files and media: type detection by content, file names, the chunked at-rest cipher, blob
stores, image cleaning, and signed URLs. Below relay.chat: it knows nothing of messages or
permissions (docs/files.md)."""
