"""Names `vulture` reports as unused that are used from outside the code it reads (`vulture mavit_mm tools
.ci/vulture_allowlist.py`, run by .ci/run and the pre-commit hooks). Each line names who uses it."""
# yapf: disable
# flake8: noqa
_ = object()

# config fields and attributes read by mmengine's Runner, mmdet / mmseg or ptflops, not by our code
_.gt_sem_seg          # mmseg's SegDataSample field, read by the decode heads' losses
_.__flops__           # ptflops' per-module counter
_.__class__           # switched in place: conv_buckets.use_conv_size_buckets makes an nn.Conv2d a SizeBucketConv2d
_.model_wrapper_cfg   # Runner config
_.sync_bn             # Runner config
_.custom_hooks        # Runner config
_.custom_imports      # Config.fromfile / the Runner's import of the config's modules
_.enable              # Runner config (auto_scale_lr.enable)
_.val_cfg             # Runner config
_.val_dataloader      # Runner config
_.val_evaluator       # Runner config
_._is_init            # mmengine BaseModule's initialised flag

# methods and attributes mmengine calls on registered classes
priority              # the hook's priority, read by Runner.register_hook
_.before_run          # Hook API
_.after_run           # Hook API
_.after_train_iter    # Hook API
_._get_value          # ParamScheduler API

# fake (meta) implementations of the MALA custom ops, registered by decorator for torch.compile
_                     # mavit_mm/ops/mala/triton.py: register_fake

# registered in mmengine's FILE BACKENDS by decorator; mmengine's checkpoint writes call put / put_text
AtomicLocalBackend
_.put
_.put_text

# public queries the tests use to pick their device
interpreting          # mavit_mm.ops.mala.interpreting: Triton's CPU interpreter on
