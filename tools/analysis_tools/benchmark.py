"""Speed and memory of MAViT models, backbones and training steps: one entry point, shared flags.

    python tools/analysis_tools/benchmark.py model configs/upernet/upernet_mavit-t_8xb2-160k_ade20k-512x512.py
    python tools/analysis_tools/benchmark.py backbone --arch t s --settings seg train --precision bf16
    python tools/analysis_tools/benchmark.py train-iter configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py \
        mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py --precision fp16
    python tools/analysis_tools/benchmark.py memory --arch t --shape 800 1344 --with-cp none ffn ffn,stem
    python tools/analysis_tools/benchmark.py onnx --arch t --shape 512 2048 --precision bf16
    python tools/analysis_tools/benchmark.py runner --amp      # tools/train.py on the toy data: time vs data_time
    python tools/analysis_tools/benchmark.py real-run          # tools/train.py + test.py on COCO-sized data
    python tools/analysis_tools/benchmark.py shapes --plain-convs   # what a new input size costs (CUDA)

Every subcommand but ``runner``, ``real-run`` and ``shapes`` takes --precision fp32|bf16|fp16, --batch-size,
--shape H W, --warmup, --repeats, --device and --out (json, written atomically); ``runner`` and ``real-run``
run tools/train.py (and tools/test.py) and take --warmup and --out. All print the device and versions first
and report medians after warm-up (``benchmark.py SUBCOMMAND -h`` for the rest).
"""
import argparse
import json

from mavit_mm.analysis.bench import backbone, memory, model, onnxrt, real_run, runner, shapes, train_iter
from mavit_mm.utils.fileio import write_text_atomic

SUBCOMMANDS = {
    'model': model,
    'backbone': backbone,
    'train-iter': train_iter,
    'memory': memory,
    'onnx': onnxrt,
    'runner': runner,
    'real-run': real_run,
    'shapes': shapes
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest='command', required=True, metavar='{' + ','.join(SUBCOMMANDS) + '}')
    parsers = {}
    for name, module in SUBCOMMANDS.items():
        parsers[name] = sub.add_parser(
            name,
            help=module.__doc__.split('\n')[0].split(': ', 1)[-1],
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(parsers[name])
    args = parser.parse_args()
    result = SUBCOMMANDS[args.command].run(args, parsers[args.command])
    if args.out:
        write_text_atomic(json.dumps(result, indent=2, default=str) + '\n', args.out)
        print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
