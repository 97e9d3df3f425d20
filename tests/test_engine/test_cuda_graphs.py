"""CUDA-graph replay (mavit_mm.engine.cuda_graphs) of a MAViT backbone against its eager runs: eval and
training steps, gradient accumulation, DropPath, the hook, a no-op on CPU, and no state left behind."""
import copy
import gc

import pytest
import torch

from mavit_mm import MAViT
from mavit_mm.engine.cuda_graphs import cuda_graphs_mode, disable_cuda_graphs, enable_cuda_graphs, graphed_forward
from helpers import forward_backward, grad_err, randomize_, rel_err

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason='CUDA graphs need a CUDA GPU')


@pytest.mark.parametrize('mode', ['eval', 'all'])
def test_cuda_graphs_are_a_no_op_on_cpu(mode):
    model = enable_cuda_graphs(randomize_(MAViT(arch='t', drop_path_rate=0.0)), mode)
    assert cuda_graphs_mode(model) == mode
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outs = model.eval()(x)
        ref = copy.deepcopy(model).set_fast_path('off')(x)
    assert all(torch.equal(a, b) for a, b in zip(outs, ref))
    ref = copy.deepcopy(model).set_fast_path('off').train()
    for _ in range(2):  # twice: on CUDA a shape is captured when seen again
        outs, ref_outs = model.train()(x), ref(x)
        assert all(torch.equal(a, b) for a, b in zip(outs, ref_outs)) and outs[0].requires_grad


def test_graph_gradient_buffers_must_not_become_grad():
    """Why the training graphs hand out copies of their gradients (not torch.cuda.make_graphed_callables,
    whose backward returns its static buffers): autograd keeps a returned gradient tensor as ``.grad``
    itself, so the next replay, writing the buffer, rewrites the accumulated gradient."""
    static_grad = torch.zeros(3)

    class ReturnsStaticBuffer(torch.autograd.Function):

        @staticmethod
        def forward(ctx, x, weight):
            return x * weight.detach()

        @staticmethod
        def backward(ctx, grad):
            static_grad.copy_(grad)  # what a graph replay does
            return None, static_grad.detach()

    weight = torch.nn.Parameter(torch.ones(3))
    ReturnsStaticBuffer.apply(torch.ones(3), weight).mul(1.0).sum().backward()  # gradient 1
    assert weight.grad.data_ptr() == static_grad.data_ptr()  # kept, not copied
    ReturnsStaticBuffer.apply(torch.ones(3), weight).mul(5.0).sum().backward()  # accumulates 5
    assert weight.grad.tolist() == [10.0] * 3  # not 6: the first gradient was overwritten, then doubled


def test_graph_key_changes_with_every_way_a_weight_can_move():
    """A graph reads weights and buffers at fixed addresses, so its cache key must change whenever one
    moves: ``.data`` replaced (what ``model.to`` does to a parameter), a buffer replaced in the dict (what
    ``model.to`` does to a buffer), a parameter or submodule assigned anew; in training also a
    ``requires_grad`` or ``train()`` / ``eval()`` of any submodule. It does not change on in-place updates.
    The keys come from the graphed forward's cached index, as before a replay."""
    model = enable_cuda_graphs(MAViT(arch='t', out_norms=False), 'all')
    index = graphed_forward(model).index
    x = torch.randn(1, 3, 32, 32)
    block = model.layers[1].blocks[0]
    key, train_key = index.key(x), index.key(x, training=True)
    assert graphed_forward(copy.deepcopy(model)).index.key(x) != key
    expected = sorted(t.data_ptr() for t in [*model.parameters(), *model.buffers()])
    assert sorted(key[-1]) == expected  # every tensor the forward may read, and nothing else

    with torch.no_grad():
        block.gamma_1.add_(1.0)  # an optimizer step: same memory
    assert index.key(x) == key and index.key(x, training=True) == train_key

    changes = [
        lambda: setattr(block.gamma_1, 'data', block.gamma_1.data.clone()),
        lambda: block.attn.qkvo._parameters.__setitem__('bias', torch.nn.Parameter(block.attn.qkvo.bias.clone())),
        lambda: model.patch_embed.proj[1]._buffers.__setitem__('running_mean', torch.zeros(32)),
        lambda: setattr(block, 'pos', copy.deepcopy(block.pos)),
    ]
    for change in changes:
        before = index.key(x)
        change()
        assert index.key(x) != before
    for change in [lambda: block.norm1.eval(), lambda: block.gamma_2.requires_grad_(False)]:
        before_eval, before = index.key(x), index.key(x, training=True)
        change()
        assert index.key(x, training=True) != before and index.key(x) == before_eval


def test_graph_index_sees_sync_bn_swapped_in_after_it_was_built():
    """Training graphs refuse SyncBN (collectives are not captured); the check reads the module index, which
    must notice mmengine / torch swapping BN layers for SyncBN after the index was built."""
    model = enable_cuda_graphs(MAViT(arch='t', out_norms=False), 'train')
    index = graphed_forward(model).index

    def has_sync_bn() -> bool:
        return any(isinstance(m, torch.nn.SyncBatchNorm) for m in index.live_modules())

    assert not has_sync_bn()
    torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the BN children in place
    assert has_sync_bn()


def registration_hooks() -> int:
    from torch.nn.modules import module as module_api
    return sum(
        len(getattr(module_api, f'_global_{kind}_registration_hooks')) for kind in ('parameter', 'buffer', 'module'))


def test_no_process_wide_state_outlives_the_graphed_modules():
    """The registration hooks the index needs exist only while a module is graphed: removed when the last
    graphed module is switched off or freed, and the graphed forward holds its module weakly."""
    before = registration_hooks()
    a = enable_cuda_graphs(
        MAViT(arch=dict(embed_dims=[16], depths=[1], num_heads=[1]), out_indices=(0, ), attn_types='mala'), 'all')
    b = enable_cuda_graphs(copy.deepcopy(a), 'eval')
    assert registration_hooks() == before + 3
    disable_cuda_graphs(a)
    assert registration_hooks() == before + 3 and cuda_graphs_mode(a) is None
    forward = graphed_forward(b)
    del b
    gc.collect()
    assert forward.module is None  # nothing kept the module alive
    del forward
    gc.collect()
    assert registration_hooks() == before


@needs_cuda
def test_cuda_graphs_replay_fresh_results_per_input_and_shape():
    """Eval forwards replayed from CUDA graphs equal eager forwards, for new inputs of a captured
    shape (not stale outputs), a second shape, and under bf16 autocast; training stays eager."""
    eager = randomize_(MAViT(arch='t')).cuda().eval()
    graphed = copy.deepcopy(eager)
    enable_cuda_graphs(graphed, 'eval')
    with torch.no_grad():
        for shape in [(1, 3, 128, 256), (1, 3, 128, 256), (2, 3, 96, 160)]:
            x = torch.randn(*shape, device='cuda')
            for a, b in zip(graphed(x), eager(x)):
                assert rel_err(a, b) < 1e-5
        with torch.autocast('cuda', dtype=torch.bfloat16):
            x = torch.randn(1, 3, 128, 256, device='cuda')
            for a, b in zip(graphed(x), eager(x)):
                assert rel_err(a.float(), b.float()) < 1e-2
    assert len(graphed_forward(graphed).eval_graphs.cache) == 3  # two shapes in fp32, one under autocast
    graphed.train()
    outs = graphed(torch.randn(2, 3, 64, 64, device='cuda', requires_grad=True))
    assert outs[0].requires_grad and len(graphed_forward(graphed).eval_graphs.cache) == 3


def _zero_grads(*models, set_to_none: bool) -> None:
    for m in models:
        m.zero_grad(set_to_none=set_to_none)


@needs_cuda
@pytest.mark.parametrize('with_cp', [False, ['ffn', 'stem']], ids=['keep', 'ffn+stem'])
@pytest.mark.parametrize('dtype', [None, torch.bfloat16], ids=['fp32', 'bf16'])
def test_cuda_graphs_train_steps_match_eager(dtype, with_cp):
    """cuda_graphs='train' against the same model run eagerly, step by step: the first sighting of a shape
    eager, the second captured and replayed, then replays; new inputs each step; gradients accumulated over
    two steps and zeroed both ways; a second shape; outputs, input and parameter gradients, BN statistics."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    eager = randomize_(MAViT(arch='t', drop_path_rate=0.0, with_cp=with_cp)).cuda().train()
    graphed = copy.deepcopy(eager)
    enable_cuda_graphs(graphed, 'train')
    tol = 1e-5 if dtype is None else 2e-2
    shapes = [(2, 3, 96, 128)] * 4 + [(1, 3, 64, 96)] * 3
    for step, shape in enumerate(shapes):
        if step != 3:  # step 3 accumulates onto step 2's gradients
            _zero_grads(eager, graphed, set_to_none=step % 2 == 0)
        x = torch.randn(*shape, device='cuda')
        outs_g, gx_g, grads_g = forward_backward(graphed, x, dtype)
        outs_e, gx_e, grads_e = forward_backward(eager, x, dtype)
        assert max(rel_err(a, b) for a, b in zip(outs_g, outs_e)) < tol, step
        assert rel_err(gx_g, gx_e) < tol, step
        assert grad_err(grads_g, grads_e) < tol, step
        for (name, b_e), b_g in zip(eager.named_buffers(), graphed.buffers()):
            assert rel_err(b_g.float(), b_e.float()) < 1e-5, (step, name)
    state = graphed_forward(graphed).train_graphs
    # each shape ran eagerly once, then from its graphs: steps 1-3 and 5-6
    assert len(state.entries) == 2 and state.replays == 5


@needs_cuda
def test_cuda_graphs_train_with_a_frozen_first_stage():
    """frozen_stages=1 (mmdet's ResNets freeze their first stage too) on an input without gradient: the
    first output requires no grad, so the graphed backward must leave it out; gradients as eager."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    eager = randomize_(MAViT(arch='t', drop_path_rate=0.0, frozen_stages=1)).cuda().train()
    graphed = copy.deepcopy(eager)
    enable_cuda_graphs(graphed, 'train')
    for step in range(4):
        _zero_grads(eager, graphed, set_to_none=True)
        x = torch.randn(2, 3, 96, 128, device='cuda')
        results = []
        for model in (graphed, eager):
            outs = model(x)
            assert not outs[0].requires_grad and all(o.requires_grad for o in outs[1:])
            sum(o.float().square().mean() for o in outs).backward()
            results.append((outs, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
        (outs_g, grads_g), (outs_e, grads_e) = results
        assert max(rel_err(a, b) for a, b in zip(outs_g, outs_e)) < 1e-5, step
        assert grads_g.keys() == grads_e.keys() and not any(n.startswith('layers.0.') for n in grads_e)
        assert grad_err(grads_g, grads_e) < 1e-5, step
    assert graphed_forward(graphed).train_graphs.replays == 3


@needs_cuda
def test_cuda_graphs_train_keeps_at_most_max_graphs_shapes():
    """Batches of changing shapes, as COCO's padded ones: each shape is captured on its second sight until
    ``max_graphs`` shapes have graphs, the rest run eagerly; every step's gradients equal the eager ones."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    eager = randomize_(MAViT(arch='t', drop_path_rate=0.0)).cuda().train()
    graphed = copy.deepcopy(eager)
    enable_cuda_graphs(graphed, 'train', max_graphs=2)
    shapes = [(96, 128), (128, 96), (96, 128), (128, 96), (64, 160), (64, 160), (96, 128), (64, 160)]
    for step, (h, w) in enumerate(shapes):
        _zero_grads(eager, graphed, set_to_none=True)
        x = torch.randn(2, 3, h, w, device='cuda')
        grads = []
        for model in (graphed, eager):
            sum(o.float().square().mean() for o in model(x)).backward()
            grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
        assert grad_err(*grads) < 1e-5, step
    train_graphs = graphed_forward(graphed).train_graphs
    # graphs for the first two shapes seen twice; (64, 160) stays eager
    assert len(train_graphs.entries) == 2 and train_graphs.replays == 3


@needs_cuda
def test_cuda_graphs_train_capture_after_0_replays_every_step():
    """``capture_after=0``: a shape's first step is already captured and replayed (no eager step), with the
    eager run's outputs and gradients; 5 steps over 2 shapes are 5 replays of 2 captures."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    eager = randomize_(MAViT(arch='t', drop_path_rate=0.0)).cuda().train()
    graphed = copy.deepcopy(eager)
    enable_cuda_graphs(graphed, 'train', capture_after=0)
    train_graphs = graphed_forward(graphed).train_graphs
    for step, (h, w) in enumerate([(96, 128), (96, 128), (64, 160), (96, 128), (64, 160)]):
        _zero_grads(eager, graphed, set_to_none=True)
        x = torch.randn(2, 3, h, w, device='cuda')
        outs_g, gx_g, grads_g = forward_backward(graphed, x, None)
        outs_e, gx_e, grads_e = forward_backward(eager, x, None)
        assert train_graphs.replays == step + 1
        assert max(rel_err(a, b) for a, b in zip(outs_g, outs_e)) < 1e-5, step
        assert grad_err(grads_g, grads_e) < 1e-5, step
    assert len(train_graphs.entries) == 2


@needs_cuda
def test_cuda_graphs_train_captures_nothing_without_memory_to_spare(monkeypatch):
    """Below the free-memory share no shape is captured, not even one seen three times: the steps run eagerly."""
    from mavit_mm.engine import cuda_graphs
    monkeypatch.setattr(cuda_graphs, 'MIN_FREE_SHARE', 1.01)  # never that much free
    model = randomize_(MAViT(arch='t', drop_path_rate=0.0)).cuda().train()
    enable_cuda_graphs(model, 'train')
    x = torch.randn(2, 3, 96, 128, device='cuda')
    for _ in range(3):
        model.zero_grad(set_to_none=True)
        sum(o.float().square().mean() for o in model(x)).backward()
    train_graphs = graphed_forward(model).train_graphs
    assert train_graphs.memory_full and not train_graphs.entries and train_graphs.replays == 0


@needs_cuda
def test_cuda_graphs_train_second_forward_before_backward_runs_eagerly():
    """Two forwards before one backward (two views through one backbone): the graphs hold one set of
    saved activations, so the second forward runs eagerly and both gradients stay right."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    eager = randomize_(MAViT(arch='t', drop_path_rate=0.0)).cuda().train()
    graphed = copy.deepcopy(eager)
    enable_cuda_graphs(graphed, 'train')
    x1, x2 = torch.randn(2, 2, 3, 64, 96, device='cuda')
    for _ in range(2):  # capture
        sum(o.mean() for o in graphed(x1)).backward()
        sum(o.mean() for o in eager(x1)).backward()
    _zero_grads(eager, graphed, set_to_none=True)
    with pytest.warns(RuntimeWarning, match='second forward before the backward'):
        loss_g = sum((a * b).mean() for a, b in zip(graphed(x1), graphed(x2)))
    loss_e = sum((a * b).mean() for a, b in zip(eager(x1), eager(x2)))
    loss_g.backward()
    loss_e.backward()
    assert rel_err(loss_g, loss_e) < 1e-5
    assert grad_err({
        n: p.grad
        for n, p in graphed.named_parameters()
    }, {
        n: p.grad
        for n, p in eager.named_parameters()
    }) < 1e-5


@needs_cuda
def test_cuda_graphs_train_replays_draw_new_drop_path_masks():
    model = randomize_(MAViT(arch='t', drop_path_rate=0.5)).cuda().train()
    enable_cuda_graphs(model, 'train')
    x = torch.randn(2, 3, 64, 96, device='cuda')
    outs = []
    for _ in range(4):  # eager, capture + replay, replay, replay
        out = model(x)
        sum(o.mean() for o in out).backward()
        outs.append(out[-1].detach())
    assert all(torch.isfinite(o).all() for o in outs)
    assert not torch.equal(outs[2], outs[3]) and not torch.equal(outs[1], outs[2])


@needs_cuda
def test_cuda_graphs_train_draws_the_eager_runs_drop_path_masks():
    """With the same seed, a graphed run draws the DropPath masks the eager run draws, the step of the capture
    included: the capture's warm-up runs give their draws back (at rate 0.5 another mask moves the outputs
    far beyond rounding)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    base = randomize_(MAViT(arch='t', drop_path_rate=0.5)).cuda().train()
    xs = torch.randn(5, 2, 3, 64, 96, device='cuda')
    runs = []
    for graphs in (False, True):
        model = copy.deepcopy(base)
        if graphs:
            enable_cuda_graphs(model, 'train')
        torch.cuda.manual_seed(0)
        outs = []
        for x in xs:  # eager, capture + replay, replays
            out = model(x)
            sum(o.square().mean() for o in out).backward()
            outs.append(out[-1].detach())
        runs.append(outs)
    assert graphed_forward(model).train_graphs.replays == 4
    for step, (eager, graphed) in enumerate(zip(*runs)):
        assert rel_err(graphed, eager) < 1e-5, step


def test_enable_checks_and_undo():
    model = MAViT(
        arch=dict(embed_dims=[32, 64], depths=[1, 1], num_heads=[1, 2]), out_indices=(0, 1), attn_types='mala')
    with pytest.raises(ValueError, match=r"mode must be one of \('eval', 'train', 'all'\)"):
        enable_cuda_graphs(model, 'always')
    with pytest.raises(ValueError, match=r"cannot capture with_cp=True"):
        enable_cuda_graphs(MAViT(arch='t', with_cp=True), 'train')
    enable_cuda_graphs(MAViT(arch='t', with_cp=True), 'eval')  # inference is fine
    for bad in (0, -1, 2.5, True, '8'):
        with pytest.raises(ValueError, match='max_graphs must be a positive int'):
            enable_cuda_graphs(model, 'train', max_graphs=bad)
    for bad in (-1, 0.5, True, '1'):
        with pytest.raises(ValueError, match='capture_after must be an int >= 0'):
            enable_cuda_graphs(model, 'train', capture_after=bad)
    assert graphed_forward(enable_cuda_graphs(model, 'train')).train_graphs.capture_after == 1
    enable_cuda_graphs(model, 'all', max_graphs=3, capture_after=0)
    forward = graphed_forward(model)
    assert forward.eval_graphs.max_graphs == forward.train_graphs.max_graphs == 3
    state = model.state_dict()
    copied = copy.deepcopy(model)
    assert graphed_forward(copied).module is copied  # a copy graphs itself, not the original
    assert graphed_forward(copied).train_graphs.max_graphs == 3
    assert graphed_forward(copied).train_graphs.capture_after == 0
    disable_cuda_graphs(model)
    assert cuda_graphs_mode(model) is None and model.state_dict().keys() == state.keys()


def test_graphs_are_an_engine_switch_not_a_backbone_argument():
    with pytest.raises(TypeError, match="unexpected keyword argument 'cuda_graphs'"):
        MAViT(arch='t', cuda_graphs=True)


def test_hook_graphs_the_named_submodule_of_a_real_runner(tmp_path):
    """CUDAGraphHook in mmengine's Runner: the backbone's forward is the graphed one while training runs
    (on CPU it runs the plain forward, so the 6 iterations train as without it) and the plain one after
    it; a wrong module path and a wrong mode are refused with messages."""
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    from helpers import make_runner

    class RecordMode(Hook):
        modes = []

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.modes.append(cuda_graphs_mode(runner.model.backbone))

    class RecordLimit(Hook):
        limits = []

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            train_graphs = graphed_forward(runner.model.backbone).train_graphs
            self.limits.append((train_graphs.max_graphs, train_graphs.capture_after))

    runner = make_runner(
        tmp_path / 'ok',
        custom_hooks=[
            dict(type='CUDAGraphHook', module='backbone', mode='train', max_graphs=5, capture_after=0),
            RecordMode(),
            RecordLimit()
        ])
    runner.train()
    assert RecordMode.modes == ['train'] * 6 and runner.iter == 6
    assert RecordLimit.limits == [(5, 0)] * 6
    assert cuda_graphs_mode(runner.model.backbone) is None
    bad = make_runner(tmp_path / 'bad', custom_hooks=[dict(type='CUDAGraphHook', module='neck')])
    with pytest.raises(ValueError, match="has no submodule 'neck'"):
        bad.train()
    with pytest.raises(ValueError, match='mode must be one of'):
        HOOKS.build(dict(type='CUDAGraphHook', mode='infer'))
    with pytest.raises(ValueError, match='max_graphs must be a positive int'):
        HOOKS.build(dict(type='CUDAGraphHook', mode='train', max_graphs=0))
    with pytest.raises(ValueError, match='capture_after must be an int >= 0'):
        HOOKS.build(dict(type='CUDAGraphHook', mode='train', capture_after=-1))
