"""Common Voice knowledge: release names and their order, locales and their Whisper languages, and reading a
release (tarballs or folders, full or delta): its TSVs, its views, its clips as Ray Data read tasks."""
