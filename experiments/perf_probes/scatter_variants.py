"""Probe: XLA:CPU scatter-add variants for the bilinear image gradient (usage: python scatter_variants.py 256x60x60x1)."""
import time, statistics, numpy as np, jax, jax.numpy as jnp, sys
from jax import lax
N,H,W,C = [int(s) for s in sys.argv[1].split("x")]
rng=np.random.default_rng(0)
rows=jnp.asarray(rng.integers(0,H+1,(N,H,W)),jnp.int32); cols=jnp.asarray(rng.integers(0,W+1,(N,H,W)),jnp.int32)
upd=jnp.asarray(rng.standard_normal((N,H,W,2,2,C)),jnp.float32)
starts=jnp.stack([rows,cols],-1)
PIB=lax.GatherScatterMode.PROMISE_IN_BOUNDS
dn=lax.ScatterDimensionNumbers(update_window_dims=(2,3,4),inserted_window_dims=(),scatter_dims_to_operand_dims=(0,1))
def win_one(st,u):
    return lax.scatter_add(jnp.zeros((H+2,W+2,C),jnp.float32),st,u,dn,mode=PIB)
f_win=jax.jit(jax.vmap(win_one))
def glob2d(st,u):
    b=jnp.arange(N,dtype=jnp.int32)[:,None,None]*(H+2)
    idx=jnp.stack([b+st[...,0], st[...,1]*C],-1)
    dn2=lax.ScatterDimensionNumbers(update_window_dims=(3,4),inserted_window_dims=(),scatter_dims_to_operand_dims=(0,1))
    z=jnp.zeros((N*(H+2),(W+2)*C),jnp.float32)
    return lax.scatter_add(z,idx,u.reshape(N,H,W,2,2*C),dn2,mode=PIB)
f_g2=jax.jit(glob2d)
def seg(st,u):
    b=jnp.arange(N,dtype=jnp.int32)[:,None,None]*((H+2)*(W+2))
    idx=b+st[...,0]*(W+2)+st[...,1]
    idx4=jnp.stack([idx,idx+1,idx+W+2,idx+W+3],-1).reshape(-1)
    return jax.ops.segment_sum(u.reshape(-1,C),idx4,N*(H+2)*(W+2))
f_seg=jax.jit(seg)
def seg1(st,u):
    # per-example vmapped segment_sum with window rows: (H+2, (W+2)*C) operand, row scatter windows of 2C
    dn3=lax.ScatterDimensionNumbers(update_window_dims=(2,3),inserted_window_dims=(),scatter_dims_to_operand_dims=(0,1))
    def one(s,uu):
        idx=jnp.stack([s[...,0], s[...,1]*C],-1)
        return lax.scatter_add(jnp.zeros((H+2,(W+2)*C),jnp.float32),idx,uu.reshape(H,W,2,2*C),dn3,mode=PIB)
    return jax.vmap(one)(st,u)
f_s1=jax.jit(seg1)
cands={"win_vmap":lambda: f_win(starts,upd),"glob2d":lambda: f_g2(starts,upd),"seg":lambda:f_seg(starts,upd),"vmap2d":lambda:f_s1(starts,upd)}
ref=np.asarray(f_win(starts,upd)).reshape(N,-1)
for k in ["glob2d","seg","vmap2d"]:
    print(k, np.abs(np.asarray(cands[k]()).reshape(N,-1)-ref).max())
ts={k:[] for k in cands}
for _ in range(10):
    for k,fn in cands.items():
        t0=time.perf_counter(); jax.block_until_ready(fn()); ts[k].append((time.perf_counter()-t0)*1e3)
for k,v in ts.items(): print(k, "%.2f ms"%statistics.median(v))
