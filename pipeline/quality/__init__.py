"""How a clip sounds: signals measured on its samples, apart from what was said
(docs/curation.md "Acoustic quality")."""
