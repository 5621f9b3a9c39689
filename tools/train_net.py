#!/usr/bin/env python
"""Train or evaluate a ustumor detector.

    tools/train_net.py --config-file configs/busi/faster_rcnn_R_50_FPN_4500it.yaml
    tools/train_net.py --config-file ... --resume            # continue after a timeout
    tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_best.pth
    tools/train_net.py --config-file ... --num-gpus 2 MODEL.DEVICE cpu     # 2 processes, DDP over gloo
"""
import datetime

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import ustumor  # noqa: F401  registers datasets and models
from ustumor.engine import UltrasoundTrainer, setup_config
from ustumor.engine.defaults import merged_config
from ustumor.engine.launch import DEFAULT_TIMEOUT, launch
from ustumor.engine.trainer import check_expected_results
from ustumor.engine.weights import check_initial_weights


def main(args):
    cfg = setup_config(args)
    check_expected_results(cfg)
    if args.eval_only:
        model = UltrasoundTrainer.build_model(cfg)
        checkpointer = DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        check_initial_weights(checkpointer, cfg, args.resume)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = UltrasoundTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)  # TEST.EXPECTED_RESULTS, as DefaultTrainer.train does after training
        return results
    trainer = UltrasoundTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def argument_parser():
    parser = default_argument_parser()
    parser.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT.total_seconds() / 60, metavar="MINUTES",
                        help="with several processes: a collective that waits longer fails the job "
                             "(default: %(default)g)")
    return parser


if __name__ == "__main__":
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,), timeout=datetime.timedelta(minutes=args.dist_timeout),
           device=merged_config(args.config_file, args.opts).MODEL.DEVICE)
