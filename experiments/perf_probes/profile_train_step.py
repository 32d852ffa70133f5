"""Per-fusion profile of one ST-CNN (RTS, batch 256) gradient step on XLA:CPU (jax.profiler + perfetto JSON).

Prints the 20 most expensive thunks per iteration. Used for BENCHMARKS.md (training throughput).
"""
import os, glob, gzip, json, collections, sys
import jax, jax.numpy as jnp, numpy as np, optax
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
from stn_jax.models import create_model
m = create_model("st-cnn", dataset="rts")
x = jnp.asarray(np.random.rand(256,42,42,1).astype(np.float32)); y = jnp.asarray(np.random.randint(0,10,256))
params = m.init(jax.random.PRNGKey(0), x[:1], train=False)["params"]
def loss(p):
    logits = m.apply({"params": p}, x, train=True, rngs={"dropout": jax.random.PRNGKey(0)})
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
f = jax.jit(jax.grad(loss))
for _ in range(3): jax.block_until_ready(f(params))
d='/tmp/p/trace_train'; os.system(f'rm -rf {d}')
with jax.profiler.trace(d, create_perfetto_trace=True):
    for _ in range(5): jax.block_until_ready(f(params))
p=glob.glob(d+'/**/*.trace.json.gz', recursive=True)[0]
ev=json.load(gzip.open(p)); evs=ev['traceEvents'] if isinstance(ev,dict) else ev
agg=collections.defaultdict(float)
for e in evs:
    if e.get('ph')=='X': agg[e['name']]+=e.get('dur',0)/1e3
for k,v in sorted(agg.items(), key=lambda kv:-kv[1])[:22]: print(f"{v/5:8.2f} ms/iter  {k[:90]}")
