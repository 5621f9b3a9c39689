#!/usr/bin/env python
"""Write a synthetic breast-ultrasound phantom in the layout of the BUSI release.

Example::

    python tools/make_phantom.py --out datasets/phantom --num-images 300 --seed 0
    python tools/make_phantom.py --out datasets/phantom_ws --num-images 300 --seed 0 --workspace

The result (``DIR/Dataset_BUSI_with_GT/{benign,malignant,normal}/...`` plus
``DIR/phantom_manifest.json``) can be used wherever the real BUSI folder is expected.
"""
import argparse
import os
import sys

from ustumor.synthetic import BUSI_ROOT_NAME, write_phantom_dataset


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num-images", type=int, required=True,
                        help="total number of images, near-duplicates included")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workspace", action="store_true",
                        help="embed every scan in a 600x800 scanner screenshot")
    parser.add_argument("--duplicate-fraction", type=float, default=0.1,
                        help="fraction of images that are near-duplicates (calipers) of another")
    parser.add_argument("--image-size", type=int, nargs=2, default=(256, 320), metavar=("H", "W"),
                        help="nominal scan size; each scan's size varies around it")
    parser.add_argument("--overwrite", action="store_true",
                        help=f"delete and rewrite an existing non-empty {BUSI_ROOT_NAME} folder")
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    if args.num_images < 0:
        print("--num-images must be >= 0", file=sys.stderr)
        return 2
    dataset_dir = os.path.join(args.out, BUSI_ROOT_NAME)
    # Checked here as well as in write_phantom_dataset, for a clear message.
    if os.path.isdir(dataset_dir) and os.listdir(dataset_dir) and not args.overwrite:
        print(f"{dataset_dir} exists and is not empty; pass --overwrite to replace it",
              file=sys.stderr)
        return 1
    summary = write_phantom_dataset(
        args.out,
        num_images=args.num_images,
        seed=args.seed,
        image_size=tuple(args.image_size),
        workspace=args.workspace,
        duplicate_fraction=args.duplicate_fraction,
        overwrite=args.overwrite,
    )
    counts = ", ".join(f"{name}: {count}" for name, count in summary["counts"].items())
    print(f"Wrote {summary['num_images']} images to {summary['dataset_dir']} ({counts}; "
          f"{summary['num_near_duplicate_pairs']} near-duplicate pairs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
