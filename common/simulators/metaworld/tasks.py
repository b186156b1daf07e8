"""The Meta-World MT50 task table: a spoken instruction and the study's task categories for every task.

Meta-World has no language field, so the instructions are written here, one per task, as a person would say
them. Categories follow the study's claims: `long_horizon` (several phases: grasp, carry, place or use a tool),
`precision` (insertion or alignment with a tight tolerance), `short` (one reach-and-push/pull motion).
"""

from __future__ import annotations

from common.simulators import TaskInfo

CATEGORIES = ("short", "long_horizon", "precision")

_S, _L, _P = ("short",), ("long_horizon",), ("precision",)
_LP = ("long_horizon", "precision")

MT50: dict[str, TaskInfo] = {
    "assembly-v3": TaskInfo("pick up the ring and put it over the peg", _LP),
    "basketball-v3": TaskInfo("pick up the ball and drop it into the hoop", _LP),
    "bin-picking-v3": TaskInfo("move the cube from the left bin into the right bin", _L),
    "box-close-v3": TaskInfo("pick up the lid and close the box with it", _LP),
    "button-press-topdown-v3": TaskInfo("press the button down from above", _S),
    "button-press-topdown-wall-v3": TaskInfo("reach over the wall and press the button down from above", _S),
    "button-press-v3": TaskInfo("push the button in from the front", _S),
    "button-press-wall-v3": TaskInfo("reach past the wall and push the button in", _S),
    "coffee-button-v3": TaskInfo("press the button on the coffee machine", _S),
    "coffee-pull-v3": TaskInfo("pull the mug out from under the coffee machine", _L),
    "coffee-push-v3": TaskInfo("push the mug under the coffee machine", _L),
    "dial-turn-v3": TaskInfo("turn the dial a full quarter turn", _S),
    "disassemble-v3": TaskInfo("lift the ring off the peg", _LP),
    "door-close-v3": TaskInfo("swing the door closed", _S),
    "door-lock-v3": TaskInfo("turn the door lock down to lock it", _S),
    "door-open-v3": TaskInfo("grab the handle and pull the door open", _L),
    "door-unlock-v3": TaskInfo("turn the door lock up to unlock it", _S),
    "hand-insert-v3": TaskInfo("push the block into the hole in the table", _P),
    "drawer-close-v3": TaskInfo("push the drawer closed", _S),
    "drawer-open-v3": TaskInfo("pull the drawer open by its handle", _S),
    "faucet-open-v3": TaskInfo("turn the faucet handle to the left to open it", _S),
    "faucet-close-v3": TaskInfo("turn the faucet handle to the right to close it", _S),
    "hammer-v3": TaskInfo("pick up the hammer and hit the nail into the wall", _LP),
    "handle-press-side-v3": TaskInfo("press the handle down from the side", _S),
    "handle-press-v3": TaskInfo("press the handle down", _S),
    "handle-pull-side-v3": TaskInfo("pull the handle up from the side", _S),
    "handle-pull-v3": TaskInfo("pull the handle up", _S),
    "lever-pull-v3": TaskInfo("pull the lever up", _S),
    "pick-place-wall-v3": TaskInfo("pick up the puck, lift it over the wall and put it on the target", _L),
    "pick-out-of-hole-v3": TaskInfo("pick the peg up out of the hole", _LP),
    "pick-place-v3": TaskInfo("pick up the puck and put it on the target", _L),
    "plate-slide-v3": TaskInfo("slide the plate forward into the goal", _S),
    "plate-slide-side-v3": TaskInfo("slide the plate sideways into the goal", _S),
    "plate-slide-back-v3": TaskInfo("slide the plate back out of the goal", _S),
    "plate-slide-back-side-v3": TaskInfo("slide the plate sideways back out of the goal", _S),
    "peg-insert-side-v3": TaskInfo("pick up the peg and insert it into the hole from the side", _LP),
    "peg-unplug-side-v3": TaskInfo("pull the peg out of the hole sideways", _P),
    "soccer-v3": TaskInfo("push the ball into the goal", _L),
    "stick-push-v3": TaskInfo("pick up the stick and use it to push the bottle", _L),
    "stick-pull-v3": TaskInfo("pick up the stick and use it to pull the bottle", _L),
    "push-v3": TaskInfo("push the puck to the target", _L),
    "push-wall-v3": TaskInfo("push the puck around the wall to the target", _L),
    "push-back-v3": TaskInfo("pull the puck back to the target", _L),
    "reach-v3": TaskInfo("move the gripper to the red target", _S),
    "reach-wall-v3": TaskInfo("reach over the wall to the red target", _S),
    "shelf-place-v3": TaskInfo("pick up the block and put it on the shelf", _LP),
    "sweep-into-v3": TaskInfo("sweep the cube into the hole", _L),
    "sweep-v3": TaskInfo("sweep the cube off the edge of the table", _L),
    "window-open-v3": TaskInfo("slide the window open", _S),
    "window-close-v3": TaskInfo("slide the window closed", _S),
}

