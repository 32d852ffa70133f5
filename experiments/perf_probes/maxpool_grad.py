"""Gradient cost of 2x2/stride-2 SAME max pooling on XLA:CPU: flax reduce_window vs reshape + max.

Checks both give identical values and (for inputs without ties) identical gradients, then times the
gradient of each. At ties jnp.max averages the gradient over the tied elements while reduce_window
gives it to the first one; both are valid subgradients.
"""
import time, numpy as np, jax, jax.numpy as jnp, flax.linen as nn
def pool_rw(x): return nn.max_pool(x, (2,2), strides=(2,2), padding="SAME")
def pool_rs(x):
    n,h,w,c = x.shape
    ph, pw = (-h) % 2, (-w) % 2
    if ph or pw:
        x = jnp.pad(x, ((0,0),(0,ph),(0,pw),(0,0)), constant_values=-jnp.inf)
    return x.reshape(n, (h+ph)//2, 2, (w+pw)//2, 2, c).max(axis=(2,4))
x = jnp.asarray(np.random.randn(256,42,42,20).astype(np.float32))
x2 = jnp.asarray(np.random.randn(256,21,21,20).astype(np.float32))
for xx in (x, x2):
    ct = jnp.asarray(np.random.randn(*pool_rw(xx).shape).astype(np.float32))
    assert np.array_equal(np.asarray(pool_rw(xx)), np.asarray(pool_rs(xx)))
    g1 = jax.jit(jax.grad(lambda a: jnp.vdot(pool_rw(a), ct))); g2 = jax.jit(jax.grad(lambda a: jnp.vdot(pool_rs(a), ct)))
    print('grad equal:', np.array_equal(np.asarray(g1(xx)), np.asarray(g2(xx))))
    for f in (g1,g2): jax.block_until_ready(f(xx))
    ts={0:[],1:[]}
    for _ in range(10):
        for i,f in enumerate((g1,g2)):
            t=time.perf_counter(); jax.block_until_ready(f(xx)); ts[i].append(time.perf_counter()-t)
    print(xx.shape, 'reduce_window grad %.1f ms, reshape-max grad %.1f ms' % (np.median(ts[0])*1e3, np.median(ts[1])*1e3))
