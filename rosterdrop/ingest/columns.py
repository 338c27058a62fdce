"""The columns the ingest stages add to rows and records and hand on to later stages.

Source columns keep their names as sent; each of these is set by one stage (in brackets) and
read by the stages after it. Three are the roster's own, defined with its schema because the
store writes them too (roster/schema.py), and one the formats' (formats/common.py): they are
imported here so that the whole contract reads in one place.
"""

# In an output's columns, the item of a list column that makes one record per item (formats).
from rosterdrop.formats.common import ITEM as ITEM

# KEY: a record's key: its source ID, or the IDs it joins with ":" (mapping).
# HASH: a hash of a record's canonical fields, to tell a changed record from the same (mapping).
# KEYHASH: a hash of the key, to match records with the roster's without comparing strings.
from rosterdrop.roster.schema import HASH as HASH
from rosterdrop.roster.schema import KEY as KEY
from rosterdrop.roster.schema import KEYHASH as KEYHASH

# A row's physical line number in its file; the header is line 1 (read).
LINE = "_line"
# A row's OneRoster status once checked: "active", or "tobedeleted" in a delta file (validate).
STATUS = "_status"
# On a skipped row, FAULT + column is true where that column's value was why: a key made from
# it names no record the district meant (validate: RowChecker.rejected).
FAULT = "_fault:"
# A record's canonical fields as one struct, split into columns only to be written (mapping).
RECORD = "_record"
# A hash of a record's natural key (a user's username...), where its entity has one (mapping).
NATURAL = "_natural"
# The roster record a record matched by fingerprint: held as it is, nothing to write (spill).
SAME = "_same"
# A record's position among its entity's records in this upload: its place in the spill (keys).
ROW = "_row"
# The file a record or skipped row came from, as sent (keys, kept).
FILE = "_file"
# Whether a record was derived from another's row (a user's role from its school list) (keys).
DERIVED = "_derived"
# A full file's physical line, hashed twice (two seeds: 128 bits) over its text as decoded, on
# the plain pieces of a file read incrementally (read, lines).
LINEHASH = "_linehash"
LINECHECK = "_linecheck"
# Where a line is among the lines the last read of the same file kept (null: a line it did not
# have, or whose record the roster does not hold as it is): such a line is not parsed (read).
KNOWN = "_known"
