"""InputShapeLogHook: each training iteration's log carries the shape the backbone saw at that iteration."""
import uuid

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from torch.utils.data import Dataset

from mavit_mm.analysis.logs import scalars_files, training_steps
from mavit_mm.engine.input_shapes import add_input_shape_log
from helpers import ToyClassifier

SIZES = [(32, 32), (32, 64), (32, 32), (64, 32), (32, 64), (64, 64)]  # one per batch of two


class SizedImages(Dataset):

    def __len__(self):
        return 2 * len(SIZES)

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(3, *SIZES[i // 2], generator=g), labels=torch.tensor(i % 3))


def shape_runner(work_dir, max_iters: int, **kwargs) -> Runner:
    """A Runner training :class:`ToyClassifier` on :class:`SizedImages` in order, two images a batch."""
    return Runner(
        model=ToyClassifier(),
        work_dir=str(work_dir),
        experiment_name=f'shapes-{uuid.uuid4().hex}',
        train_dataloader=dict(
            dataset=SizedImages(), batch_size=2, sampler=dict(type='DefaultSampler', shuffle=False), num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        **kwargs)


def test_each_logged_iteration_carries_its_own_input_shape(tmp_path):
    # a window of 4 and a mean over it would blur the shapes together; the hook's entries log each one's own
    cfg = Config(dict(log_processor=dict(window_size=4, custom_cfg=[dict(data_src='loss', method_name='mean')])))
    add_input_shape_log(cfg)
    assert cfg.custom_hooks == [dict(type='InputShapeLogHook', module='backbone')]
    assert [c['data_src'] for c in cfg.log_processor.custom_cfg] == ['loss', 'input_h', 'input_w']
    runner = shape_runner(
        tmp_path,
        len(SIZES),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=None),
        custom_hooks=cfg.custom_hooks,
        log_processor=cfg.log_processor)
    runner.train()
    steps = training_steps(scalars_files(str(tmp_path))[-1])
    assert [(s['input_h'], s['input_w']) for s in steps] == SIZES
    # the forward pre-hook is gone with the run
    assert not runner.model.backbone._forward_pre_hooks


def test_a_missing_module_is_named_with_the_model_s_children(tmp_path):
    runner = shape_runner(tmp_path, 1, custom_hooks=[dict(type='InputShapeLogHook', module='neck')])
    with pytest.raises(
            ValueError,
            match=r"no submodule 'neck'; set module= to one of \['data_preprocessor', 'backbone', 'head'\]"):
        runner.train()
