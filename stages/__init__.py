"""One package per DVC stage; stages import common/, never each other.

Started as `python -m stages.<name>` under the study flow, a stage runs in a fork of the flow's pre-forking launcher,
which has imported torch, transformers and MLflow already (common/prefork.py); elsewhere it runs here as usual.
"""

from common.prefork import hand_over_stage

hand_over_stage(__name__)
