"""One package per DVC stage, each run as `python -m stages.<name>`; stages import common/, never each other."""
