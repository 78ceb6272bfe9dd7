"""The DET part of the training JSON: ILSVRC2015 DET stills in the 30 VID classes, merged with the
VID JSON of :mod:`deltadist.detection.vid_json` into one file that
:func:`~deltadist.detection.data.read_vid_json` reads (the original's ``imagenet_vid_det_train.json``,
which nothing in its repository produces).

The DET download (``ILSVRC2015_DET.tar.gz``) unpacks to ``ILSVRC2015/Data/DET/train/...`` (JPEG
images; ``ILSVRC2013_train/<synset>/`` and ``ILSVRC2014_train_000N/`` folders) and
``ILSVRC2015/Annotations/DET/train/...`` (one XML per image, same relative path). Per image:

* objects whose synset is not one of the 30 VID classes are dropped; an image left without any
  object is dropped (the original's Faster R-CNN path, mmtracking's DET conversion, reads only the
  images of its list ``DET_train_30classes.txt`` and skips other classes' objects; pass that list
  as ``--image_list`` to train on exactly those images - without it every DET image with a VID
  object is kept);
* the image becomes a still: id from 10,000,000 (``ORIGINAL_STILL_ID``, how the reader tells stills
  from video frames; a still is a training pair of two identical frames) and ``frame_id`` = its
  index in its folder's natural order, which is the storage's index (DET folders keep the images
  that were dropped, so the JSON cannot list every image of a folder as it does for VID snippets).

The merged JSON names files relative to ``ILSVRC2015/Data`` (``VID/train/<snippet>/<frame>.JPEG``,
``DET/train/<folder>/<image>.JPEG``), so the training storage root is ``ILSVRC2015/Data``::

    python -m deltadist.detection.det_json ILSVRC2015 imagenet_vid_train.json imagenet_vid_det_train.json \\
        [--image_list DET_train_30classes.txt]
"""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from deltadist.detection.data import ORIGINAL_STILL_ID
from deltadist.detection.vid_json import VID_CLASSES, read_bndbox
from effvid.data import DataError
from effvid.data.storage import IMAGE_EXTENSIONS, natural_key
from effvid.io import atomic_write_text

__all__ = ["build_det_json", "main", "merge_vid_det", "read_image_list"]


def read_image_list(path: str | Path) -> set[str]:
    """Image paths (relative to ``Data/DET``, no extension) from the first field of each line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: image list not found") from None
    return {line.split()[0] for line in lines if line.strip()}


def _folder_index(folder: Path, cache: dict[Path, dict[str, int]]) -> dict[str, int]:
    if folder not in cache:
        files = [p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
        cache[folder] = {name: i for i, name in enumerate(sorted(files, key=natural_key))}
    return cache[folder]


def build_det_json(
    root: str | Path, *, split: str = "train", image_list: str | Path | None = None
) -> dict[str, Any]:
    """The DET stills of ``split`` of the ILSVRC2015 folder ``root`` as a COCO-format dict
    (``file_name`` relative to ``Data/DET``, ids from 10,000,000, ``frame_id`` the storage index)."""
    root = Path(root)
    annotations_dir, data_dir = root / "Annotations" / "DET" / split, root / "Data" / "DET"
    if not annotations_dir.is_dir():
        raise DataError(
            f"{annotations_dir}: not found (expected the ILSVRC2015 DET download unpacked at {root})"
        )
    wanted = read_image_list(image_list) if image_list is not None else None
    category = {synset: i + 1 for i, synset in enumerate(VID_CLASSES)}
    images: list[dict[str, Any]] = []
    boxes: list[dict[str, Any]] = []
    listed: dict[Path, dict[str, int]] = {}
    seen = 0
    for xml in sorted(annotations_dir.rglob("*.xml"), key=lambda p: natural_key(str(p))):
        relative = xml.relative_to(root / "Annotations" / "DET").with_suffix("")
        if wanted is not None and relative.as_posix() not in wanted:
            continue
        seen += 1
        tree = ET.parse(xml).getroot()
        objects = [obj for obj in tree.findall("object") if obj.findtext("name") in category]
        if not objects:
            continue
        folder = data_dir / relative.parent
        if not folder.is_dir():
            raise DataError(f"{xml}: its image folder {folder} is not found")
        index = _folder_index(folder, listed)
        name = next((n for n in (f"{relative.name}.JPEG", f"{relative.name}.jpeg") if n in index), None)
        if name is None:
            raise DataError(f"{xml}: its image {folder / relative.name}.JPEG is not found")
        size = tree.find("size")
        image_id = ORIGINAL_STILL_ID + len(images)
        images.append(
            {
                "id": image_id,
                "file_name": f"{relative.parent.as_posix()}/{name}",
                "width": int(float(size.findtext("width", "0"))) if size is not None else 0,
                "height": int(float(size.findtext("height", "0"))) if size is not None else 0,
                "frame_id": index[name],
            }
        )
        for obj in objects:
            x0, y0, x1, y1 = read_bndbox(obj, xml)
            boxes.append(
                {
                    "id": len(boxes) + 1,
                    "image_id": image_id,
                    "category_id": category[obj.findtext("name")],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    if wanted is not None and seen < len(wanted):
        raise DataError(
            f"{image_list}: lists {len(wanted)} images but only {seen} have an XML under {annotations_dir}"
        )
    categories = [{"id": i + 1, "name": n, "synset": s} for i, (s, n) in enumerate(VID_CLASSES.items())]
    return {"images": images, "annotations": boxes, "categories": categories, "dropped": seen - len(images)}


def merge_vid_det(
    vid: dict[str, Any], det: dict[str, Any], *, source: str = "the VID JSON"
) -> dict[str, Any]:
    """One training JSON: VID frames under ``VID/``, DET stills under ``DET/`` (the storage root is
    ``ILSVRC2015/Data``), annotation ids renumbered, the VID JSON's categories."""
    if [c["id"] for c in vid["categories"]] != [c["id"] for c in det["categories"]]:
        raise DataError(f"{source}: its categories are not the 30 VID classes of the DET part")
    if any(int(image["id"]) >= ORIGINAL_STILL_ID for image in vid["images"]):
        raise DataError(f"{source}: has image ids >= {ORIGINAL_STILL_ID}, the range of the DET stills")
    images = [{**im, "file_name": f"VID/{im['file_name']}"} for im in vid["images"]]
    images += [{**im, "file_name": f"DET/{im['file_name']}"} for im in det["images"]]
    annotations = [
        {**ann, "id": i + 1} for i, ann in enumerate([*vid.get("annotations", []), *det["annotations"]])
    ]
    return {"images": images, "annotations": annotations, "categories": vid["categories"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the unpacked ILSVRC2015 folder (with Data/DET and Annotations/DET)")
    parser.add_argument(
        "vid_json", help="the VID training JSON (python -m deltadist.detection.vid_json ... train)"
    )
    parser.add_argument("out", help="the merged JSON to write (its storage root is ILSVRC2015/Data)")
    parser.add_argument("--image_list", help="keep only these DET images (e.g. DET_train_30classes.txt)")
    args = parser.parse_args(argv)
    try:
        vid = json.loads(Path(args.vid_json).read_text())
    except FileNotFoundError:
        raise DataError(f"{args.vid_json}: VID JSON not found") from None
    det = build_det_json(args.root, image_list=args.image_list)
    merged = merge_vid_det(vid, det, source=args.vid_json)
    atomic_write_text(args.out, json.dumps(merged))
    frames = len(vid["images"])
    print(
        f"{args.out}: {frames} VID frames and {len(det['images'])} DET stills "
        f"({det['dropped']} DET images without a VID class left out), {len(merged['annotations'])} boxes"
    )


if __name__ == "__main__":
    main()
