import subprocess
import sys
import textwrap

import pytest

from cvcore.distributed import init_distributed, parse_shard, shard_items


def test_shards_are_disjoint_and_cover_everything():
    items = list(range(23))
    shards = [shard_items(items, f"{i}/4") for i in range(4)]
    assert sorted(x for s in shards for x in s) == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shard_items(items, None) == items
    for bad in ["4/4", "x/2", "1", "-1/3"]:
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_single_process_info(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed("cpu")
    assert not info.enabled and info.rank == 0 and info.device.type == "cpu"


SCRIPT = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from cvcore.distributed import init_distributed, wrap_ddp, distributed_sampler, cleanup_distributed
    from cvcore.engine import Trainer
    info = init_distributed("cpu")
    torch.manual_seed(0)
    x = torch.randn(64, 3); y = x @ torch.tensor([1.0, -2.0, 0.5])
    ds = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, sampler=distributed_sampler(ds, info, seed=0))
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__(); self.lin = torch.nn.Linear(3, 1)
        def forward(self, batch):
            xb, yb = batch
            return {"mse": ((self.lin(xb).squeeze(1) - yb) ** 2).mean()}
    model = wrap_ddp(M(), info)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = Path(sys.argv[1])
    Trainer(model, opt, loader, device=info.device, out_dir=out, max_steps=6, progress=False,
            checkpoint_every=3).train()
    w = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.save(w, out / f"w{info.rank}.pt")
    cleanup_distributed()
""")


@pytest.mark.slow
def test_two_process_ddp_training_keeps_ranks_in_sync(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        "29517", str(script), str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    import torch

    w0, w1 = torch.load(tmp_path / "out" / "w0.pt"), torch.load(tmp_path / "out" / "w1.pt")
    assert torch.equal(w0, w1)
    assert (tmp_path / "out" / "last.pt").is_file()


def test_epoch_groups_split_each_epoch_between_ranks():
    from cvcore.distributed import epoch_groups

    one = epoch_groups(14, 2, epoch=3, seed=1)
    assert one == epoch_groups(14, 2, epoch=3, seed=1) and one != epoch_groups(14, 2, epoch=4, seed=1)
    assert len(one) == 7 and sorted(i for g in one for i in g) == list(range(14))
    ranks = [epoch_groups(14, 2, epoch=3, seed=1, rank_world=(r, 3)) for r in range(3)]
    assert [len(g) for g in ranks] == [2, 2, 2]  # the same number of batches on every rank
    flat = [i for groups in ranks for g in groups for i in g]
    assert len(flat) == len(set(flat)) == 12 and set(flat) <= set(range(14))  # disjoint, remainder dropped
    assert ranks[1][0] == one[1] and ranks[2][1] == one[5]  # rank r takes groups r, r + W, ...
    assert epoch_groups(3, 2, 0, rank_world=(2, 4)) == epoch_groups(3, 2, 0, rank_world=(0, 4))  # fewer than ranks
