"""Properties of interp.blend over random b{R} trees, dtypes and schedules (hypothesis)."""
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from interp import blend as B
from nets import paths

RES = [4, 8, 16, 32, 64]
DTYPES = [np.float32, np.float16, jnp.bfloat16]
FAST = settings(deadline=None, max_examples=25)      # eager: compiled loops are reused across examples
JIT = settings(deadline=None, max_examples=10)       # a fresh tree structure compiles a fresh outer jit


def _nest(flat: dict) -> dict:
    out: dict = {}
    for path, x in flat.items():
        d = out
        for k in path[:-1]:
            d = d.setdefault(k, {})
        d[path[-1]] = x
    return out


@st.composite
def trees(draw, n: int = 2):
    """n trees of one random structure: params/net/b{R}/{layer}/{weight [..,C], bias [C], gain [], affine/kernel},
    optional buffers/net/b{R}/{layer}/noise maps and global leaves params/glob/g{i}."""
    res = draw(st.lists(st.sampled_from(RES), min_size=1, max_size=4, unique=True))
    layers = draw(st.lists(st.sampled_from(["conv0", "conv1", "torgb", "mix"]), min_size=1, max_size=3, unique=True))
    n_glob = draw(st.integers(0, 2))
    buffers = draw(st.booleans())
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 31 - 1)))
    shapes = {}
    for r in res:
        for layer in layers:
            c = int(rng.integers(1, 5))
            lead = tuple(int(s) for s in rng.integers(1, 4, size=rng.integers(0, 3)))
            base = ("params", "net", f"b{r}", layer)
            shapes.update({base + ("weight",): lead + (c,), base + ("bias",): (c,), base + ("gain",): (),
                           base + ("affine", "kernel"): (2, int(rng.integers(1, 4)))})
            if buffers:
                shapes[("buffers", "net", f"b{r}", layer, "noise")] = (r // 4, r // 4)
    for i in range(n_glob):
        shapes[("params", "glob", f"g{i}")] = (int(rng.integers(1, 5)),)
    return [_nest({p: np.asarray(rng.standard_normal(s) * 3, dtype) for p, s in shapes.items()}) for _ in range(n)]


def leaves(tree) -> dict:
    return {paths.path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def res_of(key: str):
    return paths.resolution_of(paths.parse_prefix(key))


def same_layout(out, ref) -> None:
    assert jax.tree.structure(out) == jax.tree.structure(ref)
    for (k, x), y in zip(leaves(out).items(), leaves(ref).values()):
        assert x.shape == y.shape and x.dtype == y.dtype, k


def assert_bitwise(x, y, what="") -> None:
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape, (what, x.dtype, y.dtype, x.shape, y.shape)
    np.testing.assert_array_equal(x.reshape(-1).view(np.uint8), y.reshape(-1).view(np.uint8), err_msg=what)


def assert_close_ulps(out, want, scale, dtype, ulps=2, what="") -> None:
    """|out - want| <= ulps * eps(dtype) * scale, compared in float64."""
    eps = float(jnp.finfo(dtype).eps)
    diff = np.abs(np.asarray(out, np.float64) - np.asarray(want, np.float64))
    assert np.all(diff <= ulps * eps * np.asarray(scale, np.float64) + 1e-30), (what, diff.max())


alpha_st = st.floats(0, 1, width=32)


@JIT
@given(trees(), st.sampled_from(RES))
def test_endpoints_are_exact_eager_and_under_jit(ab, r):
    a, b = ab
    f = jax.jit(lambda a, b, al: B.blend(a, b, al))
    for out, want in [(B.blend(a, b, 0.0), a), (B.blend(a, b, 1.0), b),
                      (f(a, b, jnp.float32(0.0)), a), (f(a, b, jnp.float32(1.0)), b)]:
        same_layout(out, want)
        for k, x in leaves(out).items():
            assert_bitwise(x, leaves(want)[k], k)


@FAST
@given(trees(), st.data())
def test_blend_is_symmetric_under_swapping_models(ab, data):
    a, b = ab
    rs = B.resolutions(a)
    sched = data.draw(st.fixed_dictionaries({r: alpha_st for r in rs}))
    assume(0.5 not in sched.values())               # block buffers are picked; a tie has no symmetric choice
    ab_ = leaves(B.blend(a, b, sched))
    ba_ = leaves(B.blend(b, a, {r: 1 - x for r, x in sched.items()}))
    for k in ab_:
        assert_bitwise(ab_[k], ba_[k], k)


@FAST
@given(trees(n=1), st.sampled_from(RES))
def test_swap_with_itself_is_identity(a, r):
    (a,) = a
    assume(r in B.resolutions(a))
    out = B.swap(a, a, r)
    same_layout(out, a)
    assert all(x is y for x, y in zip(jax.tree.leaves(out), jax.tree.leaves(a)))


@FAST
@given(trees(), st.data())
def test_hard_swap_takes_low_below_r_and_high_from_r(ab, data):
    a, b = ab
    r = data.draw(st.sampled_from(B.resolutions(a)))
    out, la, lb = leaves(B.swap(a, b, r)), leaves(a), leaves(b)
    same_layout(B.swap(a, b, r), a)
    for k, x in out.items():
        rk = res_of(k) or min(B.resolutions(a))                           # global leaves follow the lowest block
        assert x is (lb[k] if rk >= r else la[k]), k


@FAST
@given(trees(), st.data())
def test_structure_shapes_dtypes_preserved(ab, data):
    """Traced, not run (every example's fresh tree structure would compile): the eager calls' layout is the traced
    one, as test_results_identical_under_jit checks leaf by leaf, dtypes included."""
    a, b = ab
    rs = B.resolutions(a)
    sched = data.draw(st.one_of(alpha_st, st.fixed_dictionaries({r: alpha_st for r in rs})))
    same_layout(jax.eval_shape(lambda a, b: B.blend(a, b, sched), a, b), a)
    same_layout(jax.eval_shape(lambda a, b: B.smooth_swap(a, b, rs[0], 0.7), a, b), a)
    same_layout(jax.eval_shape(lambda a, b: B.blend_n([a, b, a], (0.2, 0.3, 0.5)), a, b), a)


@FAST
@given(trees(), st.sampled_from(RES), st.floats(0.05, 4.0))
def test_logistic_blend_is_monotone_in_resolution(ab, r_swap, width):
    a, _ = ab
    assume(r_swap in B.resolutions(a))
    zeros = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), a)
    out = leaves(B.smooth_swap(zeros, jax.tree.map(np.ones_like, zeros), r_swap, width))
    share, picked = {}, {}
    for k, x in out.items():
        if res_of(k) is not None and x.size:
            d = picked if k.startswith("buffers") else share
            d.setdefault(res_of(k), set()).add(float(np.asarray(x).flat[0]))
    rs = sorted(share)
    assert all(len(share[r]) == 1 for r in rs)                             # one alpha per block
    for lo, hi in zip(rs, rs[1:]):
        assert share[lo].pop() <= share[hi].copy().pop(), share
    for r, v in picked.items():                                            # noise maps: from B iff alpha > 1/2
        assert v == {1.0 if B.logistic_schedule(r_swap, width)(r) > 0.5 else 0.0}, (r, v)
    sched = B.logistic_schedule(r_swap, width)
    assert sched(r_swap // 2) < 0.5 < sched(r_swap)


@JIT
@given(trees(n=3), st.integers(0, 2), st.lists(st.floats(0.01, 1.0), min_size=3, max_size=3))
def test_n_way_one_hot_and_convex(ts, hot, raw):
    one_hot = [float(i == hot) for i in range(3)]
    assert all(x is y for x, y in zip(jax.tree.leaves(B.blend_n(ts, one_hot)), jax.tree.leaves(ts[hot])))
    jitted = jax.jit(lambda ts, w: B.blend_n(ts, w))(ts, jnp.asarray(one_hot, jnp.float32))
    for x, y in zip(jax.tree.leaves(jitted), jax.tree.leaves(ts[hot])):
        assert_bitwise(x, y)
    w = np.asarray(raw) / np.sum(raw)                                   # weights summing to 1
    out, ls = leaves(B.blend_n(ts, list(w))), [leaves(t) for t in ts]
    for k, x in out.items():
        xs = np.stack([np.asarray(l[k], np.float64) for l in ls])      # [3, ...]
        scale = np.abs(xs).max(axis=0)
        if k.startswith("buffers"):                                      # picked whole from the largest weight
            assert_bitwise(x, ls[int(np.argmax(w))][k], k)
            continue
        want = np.tensordot(w, xs, axes=1)
        assert_close_ulps(x, want, scale, ls[0][k].dtype, ulps=3, what=k)
        lo, hi = xs.min(axis=0), xs.max(axis=0)
        tol = 3 * float(jnp.finfo(ls[0][k].dtype).eps) * scale
        assert np.all(np.asarray(x, np.float64) >= lo - tol) and np.all(np.asarray(x, np.float64) <= hi + tol), k


@JIT
@given(trees(n=3), st.data())
def test_results_identical_under_jit(abc, data):
    a, b, c = abc
    rs = B.resolutions(a)
    sched = data.draw(st.fixed_dictionaries({r: alpha_st for r in rs}))
    al = data.draw(alpha_st)
    r = data.draw(st.sampled_from(rs))
    cases = [lambda a, b, c, al, w: B.blend(a, b, sched),
             lambda a, b, c, al, w: B.smooth_swap(a, b, r, 0.8),
             lambda a, b, c, al, w: B.swap(a, b, r),
             lambda a, b, c, al, w: B.blend(a, b, al),                       # a traced alpha
             lambda a, b, c, al, w: B.blend_n([a, b, c], w)]                 # traced weights
    args = (a, b, c, jnp.float32(al), jnp.asarray([al, 1 - al, al / 2], jnp.float32))
    # the five under one jit: one compile per example (a fresh tree structure compiles afresh)
    jitted = jax.jit(lambda *args: [fn(*args) for fn in cases])(*args)
    for fn, out in zip(cases, jitted):
        eager = fn(*args)
        same_layout(out, eager)
        for (k, x), y in zip(leaves(eager).items(), jax.tree.leaves(out)):
            assert_bitwise(x, y, k)


@JIT
@given(trees(), st.data())
def test_channel_swap_all_true_is_layer_swap_and_masks_channels(ab, data):
    a, b = ab
    la, lb = leaves(a), leaves(b)
    layers = sorted({"/".join(k.split("/")[:4]) for k in la if k.startswith("params/net/")})
    chosen = data.draw(st.lists(st.sampled_from(layers), min_size=1, max_size=len(layers), unique=True))
    width = {layer: la[f"{layer}/bias"].shape[0] for layer in chosen}
    full = leaves(B.channel_swap(a, b, {layer: np.ones(width[layer], bool) for layer in chosen}))
    for k, x in full.items():
        assert x is (lb[k] if any(k.startswith(layer + "/") for layer in chosen) else la[k]), k
    masks = {layer: np.asarray(data.draw(st.lists(st.booleans(), min_size=width[layer], max_size=width[layer])))
             for layer in chosen}
    part = leaves(B.channel_swap(a, b, masks))
    jitted = jax.jit(lambda a, b, m: B.channel_swap(a, b, m))(a, b, {k: jnp.asarray(v) for k, v in masks.items()})
    for (k, x), y in zip(part.items(), jax.tree.leaves(jitted)):
        assert_bitwise(x, y, k)
        layer = next((q for q in chosen if k.startswith(q + "/")), None)
        if layer is None:
            assert x is la[k]
        elif k in (f"{layer}/weight", f"{layer}/bias"):
            m = masks[layer]
            np.testing.assert_array_equal(x[..., m], lb[k][..., m])
            np.testing.assert_array_equal(x[..., ~m], la[k][..., ~m])
        else:                                                             # gain, affine: whole, by all(mask)
            assert_bitwise(x, (lb if masks[layer].all() else la)[k], k)
