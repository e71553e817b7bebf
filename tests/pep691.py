"""The PEP 691 file keys, listed apart from simple/parse.py on purpose: a key the parser
forgets shows up as a failure."""

# The PEP 691 file keys the model covers (written out independently of simple_parse,
# so a key the parser forgets to model shows up as a failure, not as agreement).
PEP691_FILE_KEYS = (
    "filename",
    "url",
    "hashes",
    "requires-python",
    "yanked",
    "core-metadata",
    "data-dist-info-metadata",
    "dist-info-metadata",
    "size",
    "upload-time",
    "gpg-sig",
    "provenance",
)
