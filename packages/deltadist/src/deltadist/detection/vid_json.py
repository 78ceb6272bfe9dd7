"""Build the COCO-format ImageNet VID annotation JSON from the official ILSVRC2015 VID download.

The download (``ILSVRC2015_VID.tar.gz``) unpacks to ``ILSVRC2015/Data/VID/<split>/...`` (JPEG
frames) and ``ILSVRC2015/Annotations/VID/<split>/...`` (one Pascal-VOC-style XML per frame:
``size/width,height`` and per object ``trackid``, ``name`` = a WordNet synset, ``bndbox`` =
``xmin, ymin, xmax, ymax``). The JSON lists every frame of every snippet (``file_name`` relative
to ``Data/VID``, ``video_id`` per snippet, ``frame_id`` from the file name) with its boxes, in the
30 VID categories, so the frame storage is ``ILSVRC2015/Data/VID`` (a frame folder, or an LMDB
built from it whose keys are the snippet folders).

    python -m deltadist.detection.vid_json ILSVRC2015 val imagenet_vid_val.json [--every 1]

``--every N`` keeps every N-th snippet (the original validated every 30th frame during training).
"""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from effvid.data import DataError
from effvid.data.storage import natural_key
from effvid.io import atomic_write_text

__all__ = ["VID_CLASSES", "build_vid_json", "main", "read_bndbox"]

# the 30 ImageNet VID classes: synset -> name, in the devkit's order (category ids 1..30)
VID_CLASSES = {
    "n02691156": "airplane",
    "n02419796": "antelope",
    "n02131653": "bear",
    "n02834778": "bicycle",
    "n01503061": "bird",
    "n02924116": "bus",
    "n02958343": "car",
    "n02402425": "cattle",
    "n02084071": "dog",
    "n02121808": "domestic_cat",
    "n02503517": "elephant",
    "n02118333": "fox",
    "n02510455": "giant_panda",
    "n02342885": "hamster",
    "n02374451": "horse",
    "n02129165": "lion",
    "n01674464": "lizard",
    "n02484322": "monkey",
    "n03790512": "motorcycle",
    "n02324045": "rabbit",
    "n02509815": "red_panda",
    "n02411705": "sheep",
    "n01726692": "snake",
    "n02355227": "squirrel",
    "n02129604": "tiger",
    "n04468005": "train",
    "n01662784": "turtle",
    "n04530566": "watercraft",
    "n02062744": "whale",
    "n02391049": "zebra",
}


def _number(node: ET.Element, tag: str, where: Path) -> float:
    found = node.find(tag)
    if found is None or found.text is None:
        raise DataError(f"{where}: no <{tag}>")
    return float(found.text)


def read_bndbox(obj: ET.Element, where: Path) -> tuple[float, float, float, float]:
    """``xmin, ymin, xmax, ymax`` of an XML ``<object>`` (an error naming the file if absent)."""
    box = obj.find("bndbox")
    if box is None:
        raise DataError(f"{where}: object without <bndbox>")
    return (
        _number(box, "xmin", where),
        _number(box, "ymin", where),
        _number(box, "xmax", where),
        _number(box, "ymax", where),
    )


def build_vid_json(root: str | Path, split: str, out: str | Path, *, every: int = 1) -> dict[str, int]:
    """Write the JSON for ``split`` (``train`` / ``val``) of the ILSVRC2015 folder ``root``;
    returns counts of videos, images and boxes."""
    root = Path(root)
    annotations_dir = root / "Annotations" / "VID" / split
    if not annotations_dir.is_dir():
        raise DataError(
            f"{annotations_dir}: not found (expected the ILSVRC2015 VID download unpacked at {root})"
        )
    snippets = sorted({p.parent for p in annotations_dir.rglob("*.xml")}, key=lambda p: natural_key(str(p)))
    category = {synset: i + 1 for i, synset in enumerate(VID_CLASSES)}
    images, boxes = [], []
    for v, snippet in enumerate(snippets[:: max(1, every)]):
        relative = snippet.relative_to(root / "Annotations" / "VID")
        for xml in sorted(snippet.glob("*.xml"), key=lambda p: natural_key(p.name)):
            tree = ET.parse(xml).getroot()
            size = tree.find("size")
            if size is None:
                raise DataError(f"{xml}: no <size>")
            image_id = len(images) + 1
            images.append(
                {
                    "id": image_id,
                    "file_name": f"{relative.as_posix()}/{xml.stem}.JPEG",
                    "width": int(_number(size, "width", xml)),
                    "height": int(_number(size, "height", xml)),
                    "video_id": v + 1,
                    "frame_id": int(xml.stem),
                }
            )
            for obj in tree.findall("object"):
                name = obj.findtext("name")
                if name not in category:
                    raise DataError(f"{xml}: object class '{name}' is not one of the 30 VID synsets")
                x0, y0, x1, y1 = read_bndbox(obj, xml)
                boxes.append(
                    {
                        "id": len(boxes) + 1,
                        "image_id": image_id,
                        "category_id": category[name],
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": (x1 - x0) * (y1 - y0),
                        "iscrowd": 0,
                        "track_id": int(obj.findtext("trackid", "-1")),
                    }
                )
    categories = [{"id": i + 1, "name": n, "synset": s} for i, (s, n) in enumerate(VID_CLASSES.items())]
    atomic_write_text(out, json.dumps({"images": images, "annotations": boxes, "categories": categories}))
    return {"videos": len(snippets[:: max(1, every)]), "images": len(images), "boxes": len(boxes)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the unpacked ILSVRC2015 folder")
    parser.add_argument("split", help="train | val")
    parser.add_argument("out", help="the JSON to write")
    parser.add_argument("--every", type=int, default=1, help="keep every N-th snippet")
    args = parser.parse_args(argv)
    counts = build_vid_json(args.root, args.split, args.out, every=args.every)
    print(f"{args.out}: {counts['videos']} videos, {counts['images']} frames, {counts['boxes']} boxes")


if __name__ == "__main__":
    main()
