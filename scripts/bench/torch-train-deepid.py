"""PyTorch side of `npm run bench:train`: one training epoch of the DeepID network (CSAW-HackML's layout,
Keras-equivalent: valid 4/3/3/2 convs, 2x2 max-pools, two 160-unit heads added, 1283 classes) on random
55x47x3 images, Adam lr 1e-3, softmax cross-entropy, the same batch size and thread count as our side.
Prints one JSON line: {"imagesPerSecond": ..., "seconds": ..., "threads": ..., "torch": version}.
Run with Debian's /usr/bin/python3 (python3-torch); it is only a yardstick, never a dependency.
usage: torch-train-deepid.py IMAGES BATCH THREADS
"""
import json, sys, time
import torch
import torch.nn as nn

images, batch, threads = (int(a) for a in sys.argv[1:4])
torch.set_num_threads(threads)
torch.manual_seed(0)


class DeepId(nn.Module):
    def __init__(self, classes=1283):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 20, 4), nn.Conv2d(20, 40, 3)
        self.c3, self.c4 = nn.Conv2d(40, 60, 3), nn.Conv2d(60, 80, 2)
        self.fc1, self.fc2 = nn.Linear(60 * 5 * 4, 160), nn.Linear(80 * 4 * 3, 160)
        self.out = nn.Linear(160, classes)

    def forward(self, x):
        p = nn.functional.max_pool2d
        x = p(torch.relu(self.c1(x)), 2)
        x = p(torch.relu(self.c2(x)), 2)
        p3 = p(torch.relu(self.c3(x)), 2)
        c4 = torch.relu(self.c4(p3))
        return self.out(torch.relu(self.fc1(p3.flatten(1)) + self.fc2(c4.flatten(1))))


model = DeepId()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
g = torch.Generator().manual_seed(5)
x = torch.rand(images, 3, 55, 47, generator=g)
y = torch.randint(0, 1283, (images,), generator=g)
loss_fn = nn.CrossEntropyLoss()


def step(xb, yb):
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(xb), yb)
    loss.backward()
    opt.step()
    return loss


step(x[:batch], y[:batch])  # warm-up (allocator, kernels)
t0 = time.perf_counter()
perm = torch.randperm(images, generator=g)
for s in range(0, images, batch):
    idx = perm[s:s + batch]
    step(x[idx], y[idx])
sec = time.perf_counter() - t0
print(json.dumps({"imagesPerSecond": images / sec, "seconds": sec, "threads": threads, "torch": torch.__version__}))
