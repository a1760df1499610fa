"""Lesson 06's data parallelism, proven on CPU ranks: it equals one process on the same batch.

Each test spawns a small gloo group with :func:`minillm.train.distributed.launch` (a few seconds each)
and compares what the ranks computed with one process doing the same work.
"""

from __future__ import annotations

import pytest
import torch

from minillm.train import dist_lab as L
from minillm.train import launch


@pytest.fixture(scope="module")
def one_thread():
    """The toy models are tiny: more threads only cost (and the machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_launch_refuses_a_function_spawned_processes_cannot_import():
    with pytest.raises(ValueError, match="top-level function"):
        launch(lambda rank, world: rank, 2)
    with pytest.raises(ValueError, match="world_size"):
        launch(L.toy_batch, 0)


def test_launch_reports_a_failing_rank_with_its_traceback():
    with pytest.raises(RuntimeError, match="rank 0 failed"):
        launch(L.rows_of_rank, 1)  # rows_of_rank(0, 1) fails on an int


@pytest.mark.slow
def test_collectives_and_the_ring_all_reduce_on_three_ranks():
    ranks = launch(L.collectives_section, 3, args=([], 1, (2, 4097)))
    for rank, out in enumerate(ranks):
        mine, got = out["broadcast"]
        torch.testing.assert_close(got, ranks[0]["broadcast"][0])
        assert rank == 0 or not torch.equal(mine, got)
        torch.testing.assert_close(out["all_reduce"][1], sum(r["all_reduce"][0] for r in ranks))
        torch.testing.assert_close(
            out["all_gather"][1], torch.stack([r["all_gather"][0] for r in ranks])
        )
        # sizes below, at and above the world size, divisible by it or not
        assert set(out["ring_vs_gloo"]) == {1, 2, 3, 1000, 4097, 65_537}
        for numel, diff in out["ring_vs_gloo"].items():
            assert diff <= 1e-5, f"ring all-reduce of {numel} differs from gloo's by {diff}"


@pytest.fixture(scope="module")
def equivalence(one_thread):
    steps = 20
    return launch(L.equivalence_section, 2, args=(steps, True)), L.reference(steps)


@pytest.mark.slow  # one shared launch of 2 ranks (~10 s on an idle 2-core CPU)
def test_ranks_start_different_and_the_broadcast_makes_them_equal(equivalence):
    ranks, _ = equivalence
    assert ranks[0]["before_broadcast"] != ranks[1]["before_broadcast"]
    assert ranks[0]["after_broadcast"] == ranks[1]["after_broadcast"]
    assert ranks[0]["all_reduces_per_step"]["buckets"] < ranks[0]["all_reduces_per_step"]["hooks"]


@pytest.mark.slow  # one shared launch of 2 ranks (~10 s on an idle 2-core CPU)
def test_data_parallel_from_scratch_equals_one_process(equivalence):
    ranks, ref = equivalence
    for out in ranks:
        assert L.max_difference(out["grads"], ref["grads"]) <= 1e-6
        assert L.max_difference(out["sgd"], ref["sgd"]) <= 1e-5
        for key in ("adamw", "bucket_adamw", "ddp_adamw", "no_sync_adamw"):
            assert L.max_difference(out[key], ref["adamw"]) <= 1e-4, key
        assert L.max_difference(out["frozen_adamw"], ref["frozen_adamw"]) <= 1e-4
    # both ranks hold the same weights, and the frozen embedding never moved
    assert L.max_difference(ranks[0]["adamw"], ranks[1]["adamw"]) == 0
    frozen = ranks[0]["frozen_adamw"]["transformer.wpe.weight"]
    torch.testing.assert_close(
        frozen, L.toy_model(0).transformer.wpe.weight.detach(), rtol=0, atol=0
    )


@pytest.mark.slow  # one shared launch of 2 ranks (~10 s on an idle 2-core CPU)
def test_from_scratch_equals_distributed_data_parallel_tied_and_frozen(equivalence):
    ranks, _ = equivalence
    for out in ranks:
        assert "lm_head.weight" not in out["adamw"]  # tied: one parameter, averaged once
        assert L.max_difference(out["adamw"], out["ddp_adamw"]) <= 1e-6
        assert L.max_difference(out["bucket_adamw"], out["ddp_adamw"]) <= 1e-6
        assert L.max_difference(out["frozen_adamw"], out["frozen_ddp_adamw"]) <= 1e-6


@pytest.mark.slow  # one shared launch of 2 ranks (~10 s on an idle 2-core CPU)
def test_fsdp2_shards_half_the_state_and_equals_one_process(equivalence):
    ranks, ref = equivalence
    for out in ranks:
        fsdp = out["fsdp"]
        assert fsdp["param_bytes"] <= 0.55 * fsdp["full_param_bytes"]
        assert fsdp["optimizer_bytes"] <= 0.55 * fsdp["full_optimizer_bytes"]
        assert L.max_difference(fsdp["weights"], ref["adamw"]) <= 1e-4
    assert L.max_difference(ranks[0]["fsdp"]["weights"], ranks[1]["fsdp"]["weights"]) == 0


@pytest.mark.slow  # one launch of 2 ranks (a few seconds on an idle 2-core CPU)
def test_zero1_sharded_adamw_holds_half_the_state_and_equals_one_process(one_thread):
    ranks = launch(L.zero1_section, 2, args=(20,))
    reference = L.reference(20)["adamw"]
    for out in ranks:
        assert 0 < out["state_bytes"] <= 0.55 * out["full_state_bytes"], out["state_bytes"]
        assert L.max_difference(out["weights"], reference) <= 1e-4
    assert L.max_difference(ranks[0]["weights"], ranks[1]["weights"]) == 0
    assert L.max_difference(reference, L.weights(L.toy_model(0))) > 1e-2  # training moved them
