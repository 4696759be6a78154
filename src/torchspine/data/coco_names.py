"""COCO 2017 category names by category id (the 80 classes of the official 91-output detectors)."""

from __future__ import annotations

_TABLE = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant - stop_sign "
    "parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe - backpack umbrella - - handbag "
    "tie suitcase frisbee skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard "
    "tennis_racket bottle - wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot "
    "hot_dog pizza donut cake chair couch potted_plant bed - dining_table - - toilet - tv laptop mouse remote "
    "keyboard cell_phone microwave oven toaster sink refrigerator - book clock vase scissors teddy_bear "
    "hair_drier toothbrush"
)
_NAMES = _TABLE.split()  # one entry per category id from 1, "-" where COCO left the id unused

# Category ids 1..90; the ids COCO left unused ("-") have no name.
COCO_CATEGORY_NAMES: dict[int, str] = {i + 1: name.replace("_", " ") for i, name in enumerate(_NAMES) if name != "-"}
assert len(COCO_CATEGORY_NAMES) == 80 and max(COCO_CATEGORY_NAMES) == 90
