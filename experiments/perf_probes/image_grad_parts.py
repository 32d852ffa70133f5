"""Probe: cost of the image-gradient pieces (weights, scatter) vs the full autodiff image gradient of warp (usage: python image_grad_parts.py 256x60x60x1)."""
import time, statistics, numpy as np, jax, jax.numpy as jnp, sys
sys.path.insert(0,'experiments')
import stn_jax, bench_sampler as b
from stn_jax import _bilinear
from jax import lax
N,H,W,C = [int(s) for s in sys.argv[1].split("x")]
rng=np.random.default_rng(0)
img=jnp.asarray(rng.random((N,H,W,C),dtype=np.float32)); th=jnp.asarray(b.random_theta(N,rng)); ct=jnp.asarray(rng.random((N,H,W,C),dtype=np.float32))
def upd_one(g, c):
    starts, ok, fx, fy = _bilinear._layout(g, (H,W,C), "zeros", False, jnp.float32)
    w = jnp.stack([(1-fy)*(1-fx), (1-fy)*fx, fy*(1-fx), fy*fx], -1) * ok[...,None]
    u = (w[..., None] * c[..., None, :]).reshape(H, W, 2, 2*C)
    return starts * jnp.array([1, C], jnp.int32), u
dn=lax.ScatterDimensionNumbers(update_window_dims=(2,3),inserted_window_dims=(),scatter_dims_to_operand_dims=(0,1))
def sc_one(st,u):
    return lax.scatter_add(jnp.zeros((H+2,(W+2)*C),jnp.float32),st,u,dn,mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)
f_upd=jax.jit(lambda th,ct: jax.vmap(upd_one)(stn_jax.affine_grid(th,(H,W)),ct))
st,u=f_upd(th,ct)
f_sc=jax.jit(jax.vmap(sc_one))
stR=jnp.asarray(np.random.default_rng(0).permutation(np.asarray(st).reshape(-1,2)).reshape(st.shape))
f_all=jax.jit(lambda th,ct: jax.vmap(sc_one)(*f_upd(th,ct)))
loss=lambda im,t: jnp.vdot(stn_jax.warp(im,t),ct)
g_img=jax.jit(jax.grad(loss,0))
c={"upd":lambda: f_upd(th,ct),"scatter":lambda: f_sc(st,u),"scatter_shuffled":lambda: f_sc(stR,u),"manual_all":lambda: f_all(th,ct),"g_img":lambda: g_img(img,th),"fwd":lambda: jax.jit(stn_jax.warp)(img,th)}
ts={k:[] for k in c}
for f in c.values(): jax.block_until_ready(f())
for _ in range(10):
    for k,f in c.items():
        t0=time.perf_counter(); jax.block_until_ready(f()); ts[k].append((time.perf_counter()-t0)*1e3)
for k,v in ts.items(): print(k, "%.2f ms"%statistics.median(v))
