"""Files: reading and writing images (:mod:`.images`) and atomic writes (:mod:`.atomic`)."""
