"""Probe: broadcast-multiply-reduce (autodiff of the elementwise affine grid) vs one einsum/dot, (256,60,60,2) -> (256,2,3)."""
import time, statistics, numpy as np, jax, jax.numpy as jnp
rng=np.random.default_rng(0)
a=jnp.asarray(rng.random((256,60,60,2),dtype=np.float32)); b=jnp.asarray(rng.random((60,60),dtype=np.float32))
c={"red3":jax.jit(lambda a,b: (jnp.sum(a*b[None,:,:,None],(1,2)), jnp.sum(a*b.T[None,:,:,None],(1,2)), jnp.sum(a,(1,2)))),
   "einsum":jax.jit(lambda a,b: jnp.einsum("nhwc,khw->nck", a, jnp.stack([b,b.T,jnp.ones_like(b)]))),
   "copy":jax.jit(lambda a,b: a*2)}
ts={k:[] for k in c}
for f in c.values(): jax.block_until_ready(f(a,b))
for _ in range(20):
    for k,f in c.items():
        t0=time.perf_counter(); jax.block_until_ready(f(a,b)); ts[k].append((time.perf_counter()-t0)*1e3)
for k,v in ts.items(): print(k, "%.2f ms"%statistics.median(v))
