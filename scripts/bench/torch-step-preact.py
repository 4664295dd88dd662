"""PyTorch side of `npm run bench:train`'s PreAct-ResNet18 rows: training steps of the full-width
PreAct-ResNet18 (scripts/pytorch/models.py, BackdoorBench's form) on random 32x32x3 images, training-mode
BatchNorm, Adam lr 1e-4, softmax cross-entropy, the same batch size and thread count as our side.
Prints one JSON line: {"secondsPerStep": best of STEPS timed steps after one warm-up, "threads": ..., "torch": version}.
Run with Debian's /usr/bin/python3 (python3-torch); it is only a yardstick, never a dependency.
usage: torch-step-preact.py BATCH STEPS THREADS
"""
import json, os, sys, time
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pytorch"))
from models import PreActResNet18  # noqa: E402

batch, steps, threads = (int(a) for a in sys.argv[1:4])
torch.set_num_threads(threads)
torch.manual_seed(0)
net = PreActResNet18(64, 10)
net.train()
opt = torch.optim.Adam(net.parameters(), lr=1e-4)
x = torch.rand(batch, 3, 32, 32)
y = torch.randint(0, 10, (batch,))
loss_fn = torch.nn.CrossEntropyLoss()


def step():
    opt.zero_grad()
    loss_fn(net(x), y).backward()
    opt.step()


step()
best = float("inf")
for _ in range(steps):
    t = time.perf_counter()
    step()
    best = min(best, time.perf_counter() - t)
print(json.dumps({"secondsPerStep": best, "threads": threads, "torch": torch.__version__}))
