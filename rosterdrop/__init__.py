"""rosterdrop: receives school districts' roster files and keeps one clean roster."""
