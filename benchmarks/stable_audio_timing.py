"""Per-clip CPU time of the full-size stable-audio-metrics models (random weights; weights do not change the cost)."""
import time, numpy as np, torch
from harness.score.embed.audio import Clip
from harness.score.embed.openl3 import _OpenL3Base, build_openl3
from harness.score.embed.passt import _PasstBase, build_passt
torch.set_num_threads(1)
clip = Clip(np.random.default_rng(0).normal(0, 0.1, int(16000 * 10.24)).astype(np.float32), 16000)
class O(_OpenL3Base):
    name = "timing-openl3"
    def __init__(self): self._set_options("env", 2); self._random(0, build_openl3, "cpu")
class P(_PasstBase):
    name = "timing-passt"
    def __init__(self): self._random(0, build_passt, "cpu")
for e in (O(), P()):
    t = time.perf_counter(); x = e.audio_of(clip); t1 = time.perf_counter()
    out = e.embed_audio([x]); t2 = time.perf_counter()
    print(f"{e.name}: {out[0].shape[0]} windows, input {t1 - t:.2f} s, embed {t2 - t1:.1f} s per 10.24 s clip (1 thread)")
