"""One package per DVC stage; stages import common/, never each other."""
